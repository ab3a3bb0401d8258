"""Drafting with a smaller causal LM: k autoregressive steps over its own paged KV cache.

The draft model keeps, per request, a `DraftSequence`: the request's tokens as it has seen
them (plus the drafts of the last step) and their keys/values in its own cache (its own
BlockManager and ModelRunner, no prefix caching). A step's first draft forward catches up
on the tokens the draft cache lacks (the whole context the first time, else the last
accepted tokens and the target's own token) and proposes slot 0; each further forward is
one decode step proposing the next slot. Before drafting, the sequence keeps the longest
prefix it shares with the request's tokens: the keys/values of rejected drafts are simply
recomputed over.

The draft cache has as many blocks as the target's (the target's budget is sized for
both). When it cannot hold a request's drafts, the sequences of requests that do not draft
this step are evicted first; failing that, the request drafts nothing this step.
"""
from engine.kv_cache import BlockManager, bytes_per_block
from engine.runner import ModelRunner
from engine.scheduler import ScheduledBatch
from engine.speculative.proposal import ProposalBuilder, pick


class DraftSequence:
    """One request in the draft model's cache: what the block manager, the batch and the
    runner read of a Request (tokens, progress, blocks, row)."""

    def __init__(self):
        self.all_token_ids: list[int] = []
        self.num_computed_tokens = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []
        self.num_sealed_blocks = 0
        self.row: int | None = None
        self.num_checked = 0  # leading tokens known to equal the request's

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    def token_ids(self, start: int, end: int) -> list[int]:
        return self.all_token_ids[start:end]

    def sync(self, tokens: list[int]) -> None:
        """Keep the longest common prefix with the request's `tokens`, then take the rest;
        the last token is always recomputed (its logits propose the first draft)."""
        mine, i = self.all_token_ids, self.num_checked
        end = min(len(mine), len(tokens))
        while i < end and mine[i] == tokens[i]:
            i += 1
        del mine[i:]
        mine.extend(tokens[i:])
        self.num_computed_tokens = min(self.num_computed_tokens, i, len(tokens) - 1)
        self.num_checked = len(tokens)


class CausalDrafter:
    def __init__(self, loaded, config, num_blocks: int, target_vocab_size: int):
        model = loaded.model
        dtype = next(model.parameters()).dtype
        self.max_len = loaded.max_positions
        self.vocab_size = target_vocab_size
        self.block_manager = BlockManager(num_blocks, config.block_size, enable_prefix_caching=False)
        self.runner = ModelRunner(model, config, self.block_manager, dtype, self.max_len)
        self.sequences: dict[str, DraftSequence] = {}
        self.last_cost = (0, 0)

    @staticmethod
    def bytes_per_block(loaded, config) -> int:
        """Cache bytes per block of the draft model (to size the target's cache beside it)."""
        model = loaded.model
        dtype = next(model.parameters()).dtype
        return bytes_per_block(model.num_layers, config.block_size, model.num_kv_heads, model.head_dim, dtype)

    def cost_plan(self, requests):
        """k -> (forwards, tokens computed) of drafting k tokens for each of the requests (a
        catch-up of about two tokens a request in steady state)."""
        return lambda k: (k, len(requests) * (k + 1))

    def propose(self, requests, num_drafts):
        builder = ProposalBuilder(len(requests))
        drafting = {requests[i].request_id for i, k in enumerate(num_drafts) if k > 0}
        active = []  # (request index, its sequence, drafts)
        for i, (req, k) in enumerate(zip(requests, num_drafts)):
            k = min(k, self.max_len - req.num_tokens + 1)  # the draft model's positions
            if k <= 0:
                continue
            seq = self.sequences.setdefault(req.request_id, DraftSequence())
            seq.sync(req.all_token_ids)
            if self._reserve(seq, req.num_tokens + k - 1, drafting):
                active.append((i, seq, k))
            else:
                self.release(req)
        forwards = tokens = 0
        for j in range(max((k for _, _, k in active), default=0)):
            members = [(i, seq) for i, seq, k in active if k > j]
            batch = ScheduledBatch()
            for _, seq in members:
                batch.add(seq, seq.num_tokens - seq.num_computed_tokens)
            logits, _ = self.runner.run(batch)
            for seq, n in zip((seq for _, seq in members), batch.num_new_tokens):
                seq.num_computed_tokens += n
            indices = [i for i, _ in members]
            reqs = [requests[i] for i in indices]
            chosen, q, sampled = pick(logits[:, : self.vocab_size], reqs, [r.num_generated + j for r in reqs])
            for (_, seq), token in zip(members, chosen):
                seq.all_token_ids.append(token)
            builder.add(indices, [j] * len(indices), chosen, q, sampled)
            forwards, tokens = forwards + 1, tokens + sum(batch.num_new_tokens)
        self.last_cost = (forwards, tokens)
        return builder.build()

    def _reserve(self, seq: DraftSequence, num_tokens: int, drafting: set[str]) -> bool:
        """Room for num_tokens tokens of `seq`, evicting sequences that do not draft this step."""
        bm = self.block_manager
        while not (bm.can_append(seq, num_tokens) if seq.block_table else bm.can_allocate([], num_tokens)):
            idle = next((rid for rid in self.sequences if rid not in drafting), None)
            if idle is None:
                return False
            self._evict(idle)
        if seq.block_table:
            bm.append_slots(seq, num_tokens)
        else:
            bm.allocate(seq, [], num_tokens)
        return True

    def _evict(self, request_id: str) -> None:
        seq = self.sequences.pop(request_id, None)
        if seq is not None:
            self.block_manager.free(seq)

    def release(self, req) -> None:
        """Forget a request (finished, aborted, or without room): its draft blocks are freed."""
        self._evict(req.request_id)

    def release_all(self) -> None:
        for request_id in list(self.sequences):
            self._evict(request_id)
