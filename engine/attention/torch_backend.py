"""Attention in plain torch: the engine's CPU path.

The math is that of `kernels.reference` (softmax attention in fp32 through torch's SDPA,
grouped-query heads), but the layout work is done once per step instead of once per layer:
the first layer derives a `_Plan` from the step's metadata and every later layer reuses it.

  queries   packed rows [T, Hq, D]. When every sequence of the step has the same number of
            new tokens they already are a [B, Lq] batch (a view); otherwise one index pads
            them to [B, Lq] (padding repeats a real row, so it stays finite) and one index
            takes the real rows back after attention.
  keys      "prefill"/"encoder": the step's own rows, padded like the queries. "decode"/
            "paged_prefill": gathered from the paged cache through one flat slot index
            [B * Lk] (slots past a sequence's context repeat its first slot).
  mask      None when no position needs hiding (equal lengths: SDPA's own causal mask for
            prefill, none for the encoder or decode), else a boolean [B, 1, Lq, Lk].
  groups    "prefill"/"encoder" steps whose sequences come in at most MAX_LENGTH_GROUPS runs
            of equal length (consecutive sequences: each run is a slice of the packed rows),
            at least MIN_RUN_SEQUENCES sequences per run on average: one SDPA call per run,
            without padding or mask. Measured on CPU against one padded, masked call, that is
            faster for a few runs of several sequences and slower for many runs, runs of one
            short sequence, or runs that must be gathered, so those keep the padded call.
Rows are moved through 2-D [rows, heads * head_dim] views: an embedding lookup gathers them
and index_put_ scatters them, both several times faster on CPU than indexing the 3-D
tensors. The engine never gives this backend the padding slot -1 (CUDA graphs run the
Triton backend).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kernels.reference import cast


MAX_LENGTH_GROUPS = 4  # more runs of equal length: one padded, masked call (fewer launches)
MIN_RUN_SEQUENCES = 4  # fewer sequences per run on average: one padded call too


@dataclass(frozen=True)
class _Group:
    """A run of consecutive sequences of one length in own-keys attention."""

    batch: int
    length: int
    rows: slice  # their packed rows


@dataclass
class _Plan:
    batch: int
    q_len: int
    q_pad: torch.Tensor | None  # long [B * q_len]: packed row of each padded query position
    q_unpad: torch.Tensor | None  # long [T]: padded position of each packed row
    k_len: int
    k_index: torch.Tensor | None  # long [B * k_len]: cache slot, or packed row of the step's own keys
    mask: torch.Tensor | None  # bool [B, 1, q_len, k_len]
    is_causal: bool
    store: torch.Tensor | None  # long [T]: cache slot of each new token
    rotation: tuple | None = None  # (cos table, cos, signed sin) of the step's positions: _rotation
    groups: list | None = None  # [_Group] instead of padding, when lengths differ (own keys only)


def _host(t: torch.Tensor) -> np.ndarray:
    """A metadata tensor as int64 numpy (a zero-copy view first on CPU): the plan's index math
    is a few dozen tiny array operations, much cheaper in numpy than as torch ops."""
    return t.cpu().numpy().astype(np.int64, copy=False)


def _padding(cu, lens, q_len):
    """(q_pad, q_unpad) indices between packed rows and a [B, q_len] batch."""
    seq = np.repeat(np.arange(len(lens)), lens)
    q_unpad = seq * q_len + np.arange(int(cu[-1])) - cu[:-1][seq]
    pos = np.arange(q_len)[None, :]
    q_pad = np.where(pos < lens[:, None], cu[:-1, None] + pos, cu[:-1, None]).ravel()
    return q_pad, q_unpad


def _length_groups(cu, lens):
    """[_Group] per run of consecutive sequences of one length, or None when the runs are
    too many or too short (module docstring)."""
    starts = np.flatnonzero(np.diff(lens, prepend=-1))  # the first sequence of each run
    if len(starts) > MAX_LENGTH_GROUPS or len(lens) < MIN_RUN_SEQUENCES * len(starts):
        return None
    ends = np.append(starts[1:], len(lens))
    return [_Group(int(end - start), int(lens[start]), slice(int(cu[start]), int(cu[end])))
            for start, end in zip(starts, ends) if lens[start] > 0]


def _paged_keys(meta, block_size):
    """(k_len, flat slot index [B * k_len], valid [B, k_len], context lengths) over the cache."""
    ctx = _host(meta.context_lens)
    k_len = int(ctx.max())
    pos = np.arange(k_len)[None, :]
    valid = pos < ctx[:, None]
    pos = np.where(valid, pos, 0)
    tables = _host(meta.block_tables)
    slots = np.take_along_axis(tables, pos // block_size, axis=1) * block_size + pos % block_size
    return k_len, slots.ravel(), valid, ctx


def make_plan(meta, block_size: int | None) -> _Plan:
    """The step's gather indices and mask, computed on the host once per step."""
    device = meta.cu_seqlens_q.device
    cu = _host(meta.cu_seqlens_q)
    lens = cu[1:] - cu[:-1]
    batch, q_len = len(lens), int(lens.max())
    equal = int(lens.min()) == q_len
    own_keys = meta.mode in ("prefill", "encoder")
    groups = _length_groups(cu, lens) if own_keys and not equal else None
    q_pad, q_unpad = (None, None) if equal or groups is not None else _padding(cu, lens, q_len)
    store = None if meta.slot_mapping is None else _host(meta.slot_mapping)
    q_pos = np.arange(q_len)
    k_len, k_index, mask, is_causal = q_len, q_pad, None, False
    if own_keys:
        causal = meta.mode == "prefill"
        if equal or groups is not None:
            is_causal = causal
        else:
            mask = (q_pos[None, :] < lens[:, None])[:, None, None, :]
            if causal:
                mask = mask & (q_pos[None, :] <= q_pos[:, None])
    else:
        k_len, k_index, valid, ctx = _paged_keys(meta, block_size)
        if meta.mode == "decode":  # the one query is the last position: it sees its whole context
            mask = None if valid.all() else valid[:, None, None, :]
        else:
            query_at = (ctx - lens)[:, None] + q_pos[None, :]
            mask = ((np.arange(k_len)[None, None, :] <= query_at[:, :, None]) & valid[:, None, :])[:, None]
    tensors = [None if a is None else torch.from_numpy(np.ascontiguousarray(a)).to(device)
               for a in (q_pad, q_unpad, k_index, mask, store)]
    q_pad, q_unpad, k_index, mask, store = tensors
    return _Plan(batch, q_len, q_pad, q_unpad, k_len, k_index, mask, is_causal, store, groups=groups)


def _rotation(plan, rope):
    """cos and sin [T, 1, D] of each token's position over the whole head dim, the sign of
    rotate-half folded into sin; gathered by the first rotary layer of the step and reused by
    the others (they share the tables)."""
    if plan.rotation is None or plan.rotation[0] is not rope.cos:
        positions = rope.positions.long()
        cos, sin = rope.cos[positions], rope.sin[positions]
        plan.rotation = (rope.cos, torch.cat([cos, cos], -1)[:, None], torch.cat([-sin, sin], -1)[:, None])
    return plan.rotation[1:]


def _side_by_side(q, k, v):
    """[T, Hq + 2 Hkv, D]: the heads of q, k and v in a row. When they already lie so in one
    buffer (the split of a fused qkv projection, as every rotary model here makes them),
    that buffer's view: no copy of q/k/v per layer (at 1000 tokens the copy was ~3% of a
    mask-predict batch on CPU)."""
    (n, hq, d), hk, stride = q.shape, k.shape[1], q.stride()
    heads, size = hq + hk + v.shape[1], q.element_size()
    if (stride[2] == 1 and stride[1] == d and stride[0] >= heads * d and k.stride() == stride == v.stride()
            and k.data_ptr() == q.data_ptr() + hq * d * size and v.data_ptr() == k.data_ptr() + hk * d * size
            and q.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()):
        return q.as_strided((n, heads, d), stride)
    return torch.cat([q, k, v], dim=1)


def _rotated(q, k, v, rope, plan):
    """q, k, v with the projection's bias added and q, k rotated by `rope` (as they are
    without one), bit for bit as `reference.rotary_store_kv` computes them:
    x1 cos - x2 sin is x1 cos + x2 (-sin) exactly. The cache store stays with the caller."""
    if rope is None:
        return q, k, v
    x = _side_by_side(q, k, v)
    if rope.bias is not None:
        x = cast(x.float() + rope.bias.float().view(-1, x.shape[2]), q.dtype)
    cos, signed_sin = _rotation(plan, rope)
    qk = x[:, : q.shape[1] + k.shape[1]].float()
    swapped = torch.roll(qk, x.shape[2] // 2, dims=-1)  # the halves exchanged: [x2, x1]
    rotated = (qk * cos).add_(swapped.mul_(signed_sin))  # in place on the two fresh tensors
    q_out, k_out = cast(rotated, q.dtype).split([q.shape[1], k.shape[1]], dim=1)
    return q_out, k_out, x[:, q.shape[1] + k.shape[1]:]


def _rows(x, index):
    """x[index] for x [N, H, D] and a long index, through the flat [N, H * D] view."""
    return F.embedding(index, x.reshape(x.shape[0], -1)).view(-1, *x.shape[1:])


def _store(cache, slots, x):
    """cache[slots] = x for a cache [num_blocks, block_size, H, D] and rows x [T, H, D]."""
    cache.view(-1, x.shape[1] * x.shape[2]).index_put_((slots,), x.reshape(x.shape[0], -1))


def _sdpa_heads(q, k, v, batch, q_len, k_len, mask, is_causal, scale):
    """Rows q [batch * q_len, Hq, D], k/v [batch * k_len, Hkv, D] -> [batch, Hq, q_len, D] in fp32."""
    num_q_heads, head_dim = q.shape[1:]
    num_kv_heads = k.shape[1]
    return F.scaled_dot_product_attention(
        q.reshape(batch, q_len, num_q_heads, head_dim).transpose(1, 2).float(),
        k.reshape(batch, k_len, num_kv_heads, head_dim).transpose(1, 2).float(),
        v.reshape(batch, k_len, num_kv_heads, head_dim).transpose(1, 2).float(),
        attn_mask=mask, is_causal=is_causal, scale=scale, enable_gqa=num_q_heads != num_kv_heads,
    )


def _sdpa(q, k, v, batch, q_len, k_len, mask, is_causal, scale):
    """Rows q [batch * q_len, Hq, D], k/v [batch * k_len, Hkv, D] -> [batch * q_len, Hq, D]
    in fp32."""
    out = _sdpa_heads(q, k, v, batch, q_len, k_len, mask, is_causal, scale)
    return out.transpose(1, 2).reshape(batch * q_len, *q.shape[1:])


def _attend(q, k, v, plan, scale):
    """q [T, Hq, D] packed; k/v [B * k_len, Hkv, D] rows in batch order -> [T, Hq, D]."""
    dtype = q.dtype
    if plan.q_pad is not None:
        q = _rows(q, plan.q_pad)
    out = _sdpa(q, k, v, plan.batch, plan.q_len, plan.k_len, plan.mask, plan.is_causal, scale)
    if plan.q_unpad is not None:
        out = _rows(out, plan.q_unpad)
    return cast(out, dtype)


def _attend_groups(q, k, v, plan, scale):
    """Own-keys attention of packed q [T, Hq, D], k/v [T, Hkv, D], one call per run of equal length."""
    out = q.new_empty(q.shape)
    for group in plan.groups:
        rows, shape = group.rows, (group.batch, group.length, *q.shape[1:])
        # SDPA's [B, H, L, D] output copied once, straight into the group's rows
        out[rows].view(shape).transpose(1, 2).copy_(
            _sdpa_heads(q[rows], k[rows], v[rows], group.batch, group.length, group.length, None, plan.is_causal,
                        scale))
    return out


class TorchAttention:
    name = "torch"

    @staticmethod
    def _plan(meta, cache):
        if meta.plan is None:
            meta.plan = make_plan(meta, None if cache is None else cache.shape[1])
        return meta.plan

    def paged(self, q, k, v, k_cache, v_cache, scale, meta, rope=None):
        """q [T, Hq, D], k/v [T, Hkv, D] of the step's tokens -> [T, Hq, D]; stores k/v first
        (rotated by `rope` when given)."""
        plan = self._plan(meta, k_cache)
        q, k, v = _rotated(q, k, v, rope, plan)
        if k_cache is not None and plan.store is not None:
            _store(k_cache, plan.store, k)
            _store(v_cache, plan.store, v)
        if meta.mode == "prefill":
            return self._own_keys(q, k, v, scale, plan)
        flat = (k_cache.shape[0] * k_cache.shape[1], *k_cache.shape[2:])
        keys = _rows(k_cache.view(flat), plan.k_index)
        values = _rows(v_cache.view(flat), plan.k_index)
        return _attend(q, keys, values, plan, scale)

    def encoder(self, q, k, v, scale, meta, rope=None):
        """Bidirectional attention within each packed sequence (q, k rotated by `rope` when given)."""
        plan = self._plan(meta, None)
        q, k, v = _rotated(q, k, v, rope, plan)
        return self._own_keys(q, k, v, scale, plan)

    @staticmethod
    def _own_keys(q, k, v, scale, plan):
        if plan.groups is not None:
            return _attend_groups(q, k, v, plan, scale)
        if plan.k_index is not None:
            k, v = _rows(k, plan.k_index), _rows(v, plan.k_index)
        return _attend(q, k, v, plan, scale)
