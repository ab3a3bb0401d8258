"""Runs one scheduled step: flat input tensors -> model forward -> logits of the sampling rows.

The step's new tokens are packed flat (sequence b owns rows cu_seqlens_q[b]:cu_seqlens_q[b+1])
with their positions, the cache slot each token's k/v goes to, each sequence's context
length (cached + new) and its block table. Only sequences whose last known token is in the
step sample (the scheduler decides), so only their last rows go through the LM head.
Under speculative decoding a sequence's new tokens end with its draft tokens
(`batch.spec_token_ids`), and a sampling sequence with d drafts has its last d + 1 rows
through the head: the logits that verify each draft, and the one after the last.

The inputs are built with numpy from the block manager's persistent block-table array and
sent to the device as one int32 array (through a pinned staging buffer on CUDA): one
host-to-device copy per step. A placeholder token of async scheduling
(engine/async_executor.py) is read on the device from the previous step's sampled tokens.
On CUDA (unless enforce_eager) decode steps replay CUDA graphs (engine.cuda_graphs) that
also hold the LM head and the greedy argmax.
"""
import warnings
from itertools import chain

import numpy as np
import torch

from engine.attention import AttentionMetadata
from engine.distributed.driver import decode_graphs
from engine.kv_cache import BlockManager, allocate_kv_cache
from engine.profiling import ranged
from engine.scheduler import ScheduledBatch
from engine.step_inputs import StepInputs, forward_logits


class ModelRunner:
    def __init__(self, model, config, block_manager: BlockManager, dtype: torch.dtype, max_model_len: int):
        self.model = model
        self.device = torch.device(config.device)
        self.block_manager = block_manager
        self.block_size = config.block_size
        self.k_cache, self.v_cache = allocate_kv_cache(
            model, block_manager.num_blocks, config.block_size, dtype, self.device)
        # Two pinned staging buffers used in turn, each with the event of its last copy: under
        # async scheduling the host fills one for step n+1 while step n's copy may still read
        # the other.
        self._staging = [torch.empty(0, dtype=torch.int32) for _ in range(2)]
        self._copied: list[torch.cuda.Event | None] = [None, None]
        self._turn = 0
        # Graphs need kernels that never read back to the host: the Triton backend's.
        use_graphs = self.device.type == "cuda" and not config.enforce_eager and config.kernel_backend == "triton"
        max_blocks = -(-max_model_len // config.block_size)
        self.graphs = None
        if use_graphs:
            self.graphs = decode_graphs(model, self.device, min(config.cuda_graph_max_batch, config.max_num_seqs), max_blocks)
            try:
                self.graphs.capture_all()
            except RuntimeError as e:  # a kernel that synchronises with the host cannot be captured
                warnings.warn(f"CUDA graph capture failed ({e}); decode steps run eagerly")
                self.graphs = None

    def prepare(self, batch: ScheduledBatch, in_flight_tokens: torch.Tensor | None = None) -> StepInputs:
        """The step's inputs on the device, built with array operations.

        In a mixed step the decode sequences are packed first (meta.num_decodes), so the
        attention backend can serve them with the decode kernel; sample_rows stay in batch
        order either way. A placeholder token -(1 + j) (async scheduling) is read on the
        device from row j of `in_flight_tokens`, the previous step's sampled tokens.
        """
        reqs, bs, spec = batch.requests, self.block_size, batch.spec_token_ids
        num_seqs = len(reqs)
        rows = np.fromiter((req.row for req in reqs), np.int64, num_seqs)
        starts = np.array(batch.starts, dtype=np.int64)
        counts = np.array(batch.num_new_tokens, dtype=np.int64)
        num_spec = None if spec is None else np.fromiter(map(len, spec), np.int64, num_seqs)
        if num_spec is not None:
            counts += num_spec
        num_decodes = 0
        if batch.is_decode:
            mode = "decode"
            # the token at each start: the last one when decoding, an earlier one when a
            # chunked prefill's chunk is a single token
            ids = np.fromiter((req.all_token_ids[s] for req, s in zip(reqs, batch.starts)), np.int64, num_seqs)
            positions, token_rows = starts, rows
            cu = np.arange(num_seqs + 1, dtype=np.int64)
            last_rows = cu[1:] - 1
        else:
            mode = "paged_prefill" if starts.any() else "prefill"
            order = np.arange(num_seqs)
            if mode == "paged_prefill":
                decodes = (counts == 1) & (starts > 0)
                num_decodes = int(decodes.sum())
                order = np.argsort(~decodes, kind="stable")
            rows, starts, counts = rows[order], starts[order], counts[order]
            cu = np.zeros(num_seqs + 1, dtype=np.int64)
            np.cumsum(counts, out=cu[1:])
            pieces = (reqs[i].all_token_ids[s : s + n] for i, s, n in zip(order.tolist(), starts.tolist(), counts.tolist()))
            if spec is not None:  # the known tokens (the slice stops at them), then the drafts
                pieces = (known + spec[i] for i, known in zip(order.tolist(), pieces))
            ids = np.fromiter(chain.from_iterable(pieces), np.int64, int(cu[-1]))
            seq = np.repeat(np.arange(num_seqs), counts)
            positions = np.arange(int(cu[-1])) - cu[:-1][seq] + starts[seq]
            token_rows = rows[seq]
            last_rows = np.empty(num_seqs, dtype=np.int64)
            last_rows[order] = cu[1:] - 1  # back in batch order
        context_lens = starts + counts
        tables = self.block_manager.block_tables
        width = int(-(-context_lens.max() // bs))
        block_tables = tables[rows, :width]
        slots = tables[token_rows, positions // bs].astype(np.int64) * bs + positions % bs
        sample_rows = _sample_rows(last_rows, np.array(batch.samples, dtype=bool), num_spec)
        pending = np.flatnonzero(ids < 0)  # tokens the previous step is still sampling
        pending_rows = -1 - ids[pending]
        ids[pending] = 0
        ids, positions, slots, cu, context_lens, sample_rows, block_tables, pending, pending_rows = self._upload(
            ids, positions, slots, cu, context_lens, sample_rows, block_tables, pending, pending_rows)
        if pending.numel():
            ids[pending] = in_flight_tokens[pending_rows].to(ids.dtype)
        meta = AttentionMetadata(mode, cu, slots, context_lens, block_tables.view(num_seqs, width),
                                 num_decodes=num_decodes)
        return StepInputs(ids, positions, meta, sample_rows)

    def _upload(self, *arrays):
        """The arrays as int32 device tensors, sent in one copy."""
        sizes = [a.size for a in arrays]
        flat = np.concatenate([a.ravel() for a in arrays]).astype(np.int32)
        if self.device.type == "cpu":
            return torch.from_numpy(flat).split(sizes)
        turn, self._turn = self._turn, 1 - self._turn
        if self._copied[turn] is not None:
            self._copied[turn].synchronize()  # its previous copy has left the buffer
        staging = self._staging[turn]
        if staging.numel() < flat.size:  # pinned, so the copy does not block the host
            staging = self._staging[turn] = torch.empty(max(flat.size, 2 * staging.numel()), dtype=torch.int32,
                                                        pin_memory=True)
        staging[: flat.size].numpy()[:] = flat
        uploaded = staging[: flat.size].to(self.device, non_blocking=True)
        self._copied[turn] = torch.cuda.Event()
        self._copied[turn].record()
        return uploaded.split(sizes)

    @torch.inference_mode()
    def run(self, batch: ScheduledBatch, in_flight_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [N, V] in the model's dtype, their argmax [N]) of the N sample rows of the
        batch (one per sampling sequence, or drafts + 1 under speculation), in batch order."""
        with ranged("prepare_inputs"):
            inputs = self.prepare(batch, in_flight_tokens)
        with ranged("forward"):
            if self.graphs is not None and inputs.meta.mode == "decode" and len(batch) <= self.graphs.max_batch:
                return self.graphs.run(inputs)
            return forward_logits(self.model, inputs)



def _sample_rows(last_rows, samples, num_spec):
    """Packed rows whose logits are needed, in batch order: the last row of each sampling
    sequence, or its last num_spec + 1 rows under speculation."""
    if num_spec is None:
        return last_rows[samples]
    per_seq = np.where(samples, num_spec + 1, 0)
    first = np.repeat(last_rows + 1 - per_seq, per_seq)
    within = np.arange(int(per_seq.sum())) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)
    return first + within
