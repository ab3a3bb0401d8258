"""What rank 0 sends the workers, and how they read it.

Every operation starts with a fixed header of HEADER_LEN int64s broadcast over the control
group (gloo, host memory: a worker learns what comes next without touching its device):

    [op, mode, num_tokens, num_seqs, table_width, parts, num_sample_rows, hidden_size]

FORWARD and GRAPH_STEP then broadcast the step as ONE flat int32 buffer over the device group
(nccl on CUDA, gloo on CPU), laid out as

    input_ids [T] | positions [T] | cu_seqlens_q [B+1] | slot_mapping [T]? | context_lens [B]?
    | block_tables [B * W]? | sample_rows [N]?

(`parts` says which optional pieces are present); LOGITS broadcasts the hidden states of the
rows that need logits, [N, hidden] in the model's dtype. CAPTURE carries the graph sizes in
the header; MEMORY and STOP carry nothing.
"""
import torch

from engine.attention import MODES, AttentionMetadata
from engine.step_inputs import StepInputs

FORWARD, LOGITS, GRAPH_STEP, CAPTURE, MEMORY, STOP = range(1, 7)
HEADER_LEN = 8
SLOTS, CONTEXT_LENS, BLOCK_TABLES = 1, 2, 4  # the `parts` bits


def header(op: int, *fields: int) -> torch.Tensor:
    values = [op, *fields] + [0] * (HEADER_LEN - 1 - len(fields))
    return torch.tensor(values, dtype=torch.int64)


def pack_step(op: int, input_ids, positions, meta: AttentionMetadata, sample_rows=None):
    """(header, flat int32 buffer on the inputs' device) of a step."""
    num_tokens, num_seqs = input_ids.shape[0], meta.cu_seqlens_q.shape[0] - 1
    pieces = [input_ids, positions, meta.cu_seqlens_q]
    parts, width = 0, 0
    for bit, tensor in ((SLOTS, meta.slot_mapping), (CONTEXT_LENS, meta.context_lens),
                        (BLOCK_TABLES, meta.block_tables)):
        if tensor is not None:
            parts |= bit
            pieces.append(tensor.reshape(-1))
    if meta.block_tables is not None:
        width = meta.block_tables.shape[1]
    num_sample = 0 if sample_rows is None else sample_rows.shape[0]
    if sample_rows is not None:
        pieces.append(sample_rows)
    flat = torch.cat([p.to(torch.int32) for p in pieces])
    return header(op, MODES.index(meta.mode), num_tokens, num_seqs, width, parts, num_sample), flat


def _sizes(fields) -> list[int]:
    """Sizes of the flat buffer's pieces, from the header fields after `op`."""
    _, num_tokens, num_seqs, width, parts, num_sample, _ = fields
    sizes = [num_tokens, num_tokens, num_seqs + 1]
    sizes += [n for bit, n in ((SLOTS, num_tokens), (CONTEXT_LENS, num_seqs), (BLOCK_TABLES, num_seqs * width))
              if parts & bit]
    return sizes + [num_sample]


def step_buffer_size(fields) -> int:
    return sum(_sizes(fields))


def unpack_step(fields, flat: torch.Tensor) -> StepInputs:
    """The step a header's fields (after `op`) and its flat buffer describe; sample_rows is
    empty for a plain forward."""
    mode, _, num_seqs, width, parts, _, _ = fields
    pieces = list(flat.split(_sizes(fields)))
    input_ids, positions, cu = pieces[:3]
    optional = iter(pieces[3:-1])
    slots = next(optional) if parts & SLOTS else None
    context_lens = next(optional) if parts & CONTEXT_LENS else None
    tables = next(optional).view(num_seqs, width) if parts & BLOCK_TABLES else None
    meta = AttentionMetadata(MODES[mode], cu, slots, context_lens, tables)
    return StepInputs(input_ids, positions, meta, pieces[-1])


def memory_report(model) -> torch.Tensor:
    """[weight bytes, KV cache bytes, KV blocks] of this rank's shard (int64)."""
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    layers = model.attention_layers() if hasattr(model, "attention_layers") else []
    caches = [c for layer in layers for c in (layer.k_cache, layer.v_cache) if c is not None]
    kv_bytes = sum(c.numel() * c.element_size() for c in caches)
    kv_blocks = caches[0].shape[0] if caches else 0
    return torch.tensor([weight_bytes, kv_bytes, kv_blocks], dtype=torch.int64)
