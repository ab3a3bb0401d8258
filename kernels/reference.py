"""Plain-torch references for every kernel: the specification, and the CPU backend.

Each function has the signature of its Triton twin in `kernels` and validates its
arguments the same way. Math runs in fp32 and the result is cast back to the input dtype,
which is what the Triton kernels do too, so the two agree to fp32 rounding.
"""

import torch
import torch.nn.functional as F

from . import _checks


def cast(t, dtype):
    """t.to(dtype), or t itself when it has that dtype already: the no-op `.to` still costs a
    dispatch (~1 us on CPU), and the CPU backend casts back several times per layer."""
    return t if t.dtype == dtype else t.to(dtype)


@_checks.checked(_checks.check_store_kv)
def store_kv(k, v, k_cache, v_cache, slot_mapping):
    """Write k/v rows [N, Hkv, D] into cache slot `slot_mapping[i]`; slot -1 is skipped.

    A slot is `block * block_size + offset` in a cache [num_blocks, block_size, Hkv, D].
    """
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    block_size = k_cache.shape[1]
    blocks, offsets = slots // block_size, slots % block_size
    k_cache[blocks, offsets] = k[keep]
    v_cache[blocks, offsets] = v[keep]


def _attend(q, k, v, scale, mask):
    """Softmax attention in fp32, batched over padded sequences.

    q [B, Lq, Hq, D], k/v [B, Lk, Hkv, D]; query head h reads kv head h // (Hq / Hkv).
    mask [B, Lq, Lk] says which keys each query may see. Padding rows must be finite (a
    NaN would survive the zero weight), which `_pad` and `_paged_rows` see to. A query
    that may see no key gets 0.
    """
    k, v = (x.float().transpose(1, 2) for x in (k, v))
    out = F.scaled_dot_product_attention(
        q.float().transpose(1, 2), k, v, attn_mask=mask[:, None], scale=scale,
        enable_gqa=q.shape[2] != k.shape[1],
    ).transpose(1, 2)
    return torch.where(mask.any(-1)[:, :, None, None], out, 0.0)


def _paged_rows(k_cache, v_cache, block_tables, context_lens, length):
    """k, v [B, length, Hkv, D]: row j of sequence b is row j of its paged cache.

    Rows past a sequence's context repeat its first row instead of reading whatever the
    cache holds there (possibly never written, or NaN), so padding stays finite.
    """
    block_size = k_cache.shape[1]
    pos = torch.arange(length, device=k_cache.device)[None, :]
    pos = torch.where(pos < context_lens[:, None], pos, 0)
    slots = block_tables.long().gather(1, pos // block_size) * block_size + pos % block_size
    return tuple(cache.reshape(-1, *cache.shape[2:])[slots] for cache in (k_cache, v_cache))


def _packed_index(cu_seqlens):
    """Per packed row: its sequence and its offset there; plus each sequence's length."""
    lengths = (cu_seqlens[1:] - cu_seqlens[:-1]).long()
    seq = torch.repeat_interleave(torch.arange(len(lengths), device=cu_seqlens.device), lengths)
    offset = torch.arange(len(seq), device=cu_seqlens.device) - cu_seqlens[seq].long()
    return seq, offset, lengths


def _pad(x, seq, offset, batch, length):
    """Packed rows [T, H, D] -> padded [B, length, H, D] (zeros where a sequence is shorter)."""
    out = x.new_zeros(batch, length, *x.shape[1:])
    out[seq, offset] = x
    return out


@_checks.checked(_checks.check_decode_attention)
def decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    """One query token per sequence, q [B, Hq, D], over its first context_lens[b] cached rows."""
    length = int(context_lens.max()) if q.shape[0] else 0
    key_valid = torch.arange(length, device=q.device)[None, :] < context_lens[:, None]
    k, v = _paged_rows(k_cache, v_cache, block_tables, context_lens, length)
    return _attend(q[:, None], k, v, scale, key_valid[:, None, :])[:, 0].to(q.dtype)


@_checks.checked(_checks.check_prefill_attention)
def prefill_attention(q, k, v, cu_seqlens, scale, causal):
    """Packed variable-length attention: sequence i owns rows cu_seqlens[i]:cu_seqlens[i+1].

    q [T, Hq, D], k/v [T, Hkv, D]; no attention across sequences; causal=False is the
    bidirectional encoder case.
    """
    seq, offset, lengths = _packed_index(cu_seqlens)
    if q.shape[0] == 0:
        return q.clone()
    batch, length = len(lengths), int(lengths.max())
    pos = torch.arange(length, device=q.device)
    key_valid = pos[None, :] < lengths[:, None]
    mask = key_valid[:, None, :].expand(batch, length, length)
    if causal:
        mask = mask & (pos[None, :] <= pos[:, None])
    pad = lambda x: _pad(x, seq, offset, batch, length)  # noqa: E731
    out = _attend(pad(q), pad(k), pad(v), scale, mask)
    return out[seq, offset].to(q.dtype)


@_checks.checked(_checks.check_paged_prefill_attention)
def paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
    """Causal attention of new query tokens over a paged cache that already holds their keys.

    Sequence b's queries q[cu_seqlens_q[b]:cu_seqlens_q[b+1]] are its last n_b tokens; its
    cache holds context_lens[b] rows (cached prefix + the new tokens, stored by `store_kv`),
    so query i sits at position context_lens[b] - n_b + i and sees the keys up to it.
    This serves chunked prefill and prefix-cache hits; n_b = 1 is a decode step.
    """
    seq, offset, lengths = _packed_index(cu_seqlens_q)
    if q.shape[0] == 0:
        return q.clone()
    batch, num_queries = len(lengths), int(lengths.max())
    num_keys = int(context_lens.max())
    key_pos = torch.arange(num_keys, device=q.device)
    key_valid = key_pos[None, :] < context_lens[:, None]
    q_pos = (context_lens - lengths)[:, None] + torch.arange(num_queries, device=q.device)[None, :]
    mask = (key_pos[None, None, :] <= q_pos[:, :, None]) & key_valid[:, None, :]
    k, v = _paged_rows(k_cache, v_cache, block_tables, context_lens, num_keys)
    out = _attend(_pad(q, seq, offset, batch, num_queries), k, v, scale, mask)
    return out[seq, offset].to(q.dtype)


def _add_residual(x, residual):
    # The sum is rounded to the input dtype, as HF models add residuals in the model dtype.
    return x if residual is None else x + residual


@_checks.checked(_checks.check_rms_norm)
def rms_norm(x, weight, eps, residual=None):
    """y = x / sqrt(mean(x^2) + eps) * weight; with a residual, h = x + residual, returns (y, h)."""
    h = _add_residual(x, residual)
    hf = cast(h, torch.float32)
    # mean(hf^2) + eps as sum / D + eps: bit for bit what .pow(2).mean() + eps gives (torch's
    # mean is a sum and a division), with the division, eps and rsqrt in place on the one
    # [M, 1] column instead of three new tensors and mean's own wrapper dispatch
    scale = (hf * hf).sum(-1, keepdim=True).div_(h.shape[-1]).add_(eps).rsqrt_()
    y = cast((hf * scale).mul_(cast(weight, torch.float32)), x.dtype)  # in place: one [M, D] tensor fewer
    return y if residual is None else (y, h)


def linear_after(normed, weight, bias):
    """F.linear applied to the output of an rms_norm call: y, or (y, h) keeping h."""
    if isinstance(normed, tuple):
        return F.linear(normed[0], weight, bias), normed[1]
    return F.linear(normed, weight, bias)


@_checks.checked(_checks.check_rms_norm_linear)
def rms_norm_linear(x, norm_weight, eps, weight, bias=None, residual=None):
    """The pre-norm projection unfused: y = F.linear(rms_norm(h), weight, bias), h = x (+ residual).

    x [M, K], norm_weight [K], weight [N, K], bias [N] or None; the norm's output is rounded
    to x's dtype before the matmul. Returns y [M, N], or (y, h) with a residual.
    """
    return linear_after(rms_norm.unchecked(x, norm_weight, eps, residual), weight, bias)


@_checks.checked(_checks.check_layer_norm)
def layer_norm(x, weight, bias, eps, residual=None):
    """y = (x - mean) / sqrt(var + eps) * weight + bias; with a residual, returns (y, h)."""
    h = _add_residual(x, residual)
    b = None if bias is None else bias.float()
    y = cast(F.layer_norm(h.float(), (h.shape[-1],), weight.float(), b, eps), x.dtype)
    return y if residual is None else (y, h)


@_checks.checked(_checks.check_rotary)
def rotary_embedding(q, k, positions, cos_cache, sin_cache):
    """Rotate q [T, Hq, D] and k [T, Hkv, D] by their positions (GPT-NeoX / Llama layout).

    The halves x1 = x[..., :D/2], x2 = x[..., D/2:] become (x1 cos - x2 sin, x2 cos + x1 sin)
    with cos/sin = cos_cache[pos], sin_cache[pos] of shape [D/2] (fp32; rope scaling such as
    llama3's is folded into the tables). Returns new tensors (q_rot, k_rot).
    """
    cos = cos_cache[positions.long()][:, None, :]
    sin = sin_cache[positions.long()][:, None, :]

    def rotate(x):
        x1, x2 = x.float().chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


@_checks.checked(_checks.check_rotary_store_kv)
def rotary_store_kv(q, k, v, positions, cos_cache, sin_cache, k_cache, v_cache, slot_mapping, bias=None):
    """The attention side of a Llama-family layer: (q_out, k_out, v_out), k_out / v_out stored.

    With h = x + bias rounded to x's dtype (bias [(Hq + 2 Hkv) D]: q, k, then v; None adds
    nothing): q_out, k_out = rotary(h_q), rotary(h_k) as `rotary_embedding` rotates them,
    v_out = h_v, and the k_out / v_out rows go to cache slots slot_mapping[i] (-1 skipped),
    as `store_kv` writes them. k_cache, v_cache and slot_mapping are all None when no cache is
    bound. The outputs are views of one [T, Hq + 2 Hkv, D] tensor.
    """
    heads = [q.shape[1], k.shape[1], v.shape[1]]
    x = torch.cat([q, k, v], dim=1)
    if bias is not None:
        x = (x.float() + bias.float().view(-1, x.shape[2])).to(q.dtype)
    half = x.shape[2] // 2
    angle_cos = cos_cache[positions.long()][:, None, :]
    angle_sin = sin_cache[positions.long()][:, None, :]
    rotated = x[:, : heads[0] + heads[1]].float()
    x1, x2 = rotated[..., :half], rotated[..., half:]
    x[:, : heads[0] + heads[1]] = torch.cat(
        [x1 * angle_cos - x2 * angle_sin, x2 * angle_cos + x1 * angle_sin], dim=-1).to(x.dtype)
    q_out, k_out, v_out = x.split(heads, dim=1)
    if k_cache is not None:
        keep = slot_mapping >= 0
        slots = slot_mapping[keep].long()
        blocks, offsets = slots // k_cache.shape[1], slots % k_cache.shape[1]
        k_cache[blocks, offsets] = k_out[keep]
        v_cache[blocks, offsets] = v_out[keep]
    return q_out, k_out, v_out


@_checks.checked(_checks.check_gated)
def silu_and_mul(x):
    """SwiGLU: x [..., 2I] = [gate | up] -> silu(gate) * up of shape [..., I]."""
    gate, up = x.float().chunk(2, dim=-1)
    return cast(F.silu(gate).mul_(up), x.dtype)


@_checks.checked(_checks.check_gelu)
def gelu(x, approximate="none"):
    """GELU with the exact erf form ("none", BERT) or the tanh approximation ("tanh", GPT-2)."""
    return cast(F.gelu(x.float(), approximate=approximate), x.dtype)


def _fmix32(h):
    # murmur3's 32-bit finalizer on int64 tensors holding uint32 values.
    mask = 0xFFFFFFFF
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & mask
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & mask
    return h ^ (h >> 16)


def uniform_noise(seeds, vocab_size):
    """Counter-based uniforms in (0, 1), [B, V] fp32: u[b, j] depends only on (seeds[b], j).

    h = fmix32(j * 0x9E3779B1 + seed_lo  XOR  seed_hi * 0x85EBCA77) (uint32 arithmetic), and
    u = (h >> 8 + 0.5) / 2^24. The Triton sampler computes the same bits, so a seeded draw is
    reproducible across backends and independent of the other rows in the batch.
    """
    mask = 0xFFFFFFFF
    seeds = seeds.to(torch.int64)
    lo, hi = (seeds & mask)[:, None], ((seeds >> 32) & mask)[:, None]
    j = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)[None, :]
    h = ((j * 0x9E3779B1 + lo) & mask) ^ ((hi * 0x85EBCA77) & mask)
    h = _fmix32(h)
    return ((h >> 8).float() + 0.5) / 16777216.0


def top_k_top_p_mask(logits, temperature, top_k, top_p):
    """Which tokens each row may draw, [B, V] bool, after top-k and then top-p (`sample`).

    With x = logits / T: top-k keeps x >= x_k, the k-th largest x (ties kept; k <= 0 or
    k >= V keeps all). Top-p weighs the kept tokens in integers, w = floor(exp(x - max x) * 2^32),
    and keeps x >= x_p, x_p the first value in descending order at which the running sum of w
    reaches top_p * sum(w) (in fp64): the smallest set of most probable tokens holding top_p
    of the mass, ties kept. The most probable token always stays; top_p >= 1 is off.
    """
    x = logits.float() / temperature.clamp_min(1e-6)[:, None]
    vocab = x.shape[1]
    sorted_x = x.sort(dim=-1, descending=True).values
    k = torch.where((top_k <= 0) | (top_k >= vocab), vocab, top_k).long()
    x_k = sorted_x.gather(1, (k - 1)[:, None])
    weights = (torch.exp(sorted_x - sorted_x[:, :1]) * 2.0**32).long()
    running = torch.where(sorted_x >= x_k, weights, 0).cumsum(dim=-1)
    target = top_p.double()[:, None] * running[:, -1:].double()
    first = (running.double() < target).sum(dim=-1, keepdim=True).clamp_max(vocab - 1)
    x_p = torch.where(top_p[:, None] < 1.0, sorted_x.gather(1, first), x_k)
    return x >= torch.maximum(x_k, x_p)


@_checks.checked(_checks.check_sample)
def sample(logits, temperature, top_k, top_p, seeds):
    """Draw one token per row, int64 [B], from logits [B, V].

    temperature [B] fp32 (<= 0: argmax of the logits), top_k [B] int (0 = off), top_p [B]
    fp32 (1.0 = off), seeds [B] int64. The draw is Gumbel-max over the allowed tokens,
    argmax(logits / T - log(-log(u))) with u = uniform_noise(seeds), an exact sample from
    softmax(logits / T) restricted to top_k_top_p_mask; ties go to the lowest index.
    """
    greedy = logits.float().argmax(dim=-1)
    allowed = top_k_top_p_mask(logits, temperature, top_k, top_p)
    gumbel = -torch.log(-torch.log(uniform_noise(seeds, logits.shape[1])))
    scores = logits.float() / temperature.clamp_min(1e-6)[:, None] + gumbel
    drawn = scores.masked_fill(~allowed, float("-inf")).argmax(dim=-1)
    return torch.where(temperature > 0, drawn, greedy)


@_checks.checked(_checks.check_logits)
def confidence_argmax(logits):
    """Per row of logits [B, V]: (argmax token int64 [B], its softmax probability fp32 [B]).

    The probability of the argmax is 1 / sum_j exp(x_j - max): no softmax is materialised.
    Ties go to the lowest index, as torch.argmax does (torch.max returns the first maximum).
    """
    x = logits.float()
    m, token = x.max(dim=-1, keepdim=True)  # value and index in one pass over the row
    prob = 1.0 / torch.exp(x - m).sum(dim=-1)
    return token[:, 0], prob
