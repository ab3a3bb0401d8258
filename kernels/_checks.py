"""Argument validation shared by every kernel and its reference twin.

Each check raises ValueError naming the offending argument, so a bad call fails at the
API boundary instead of deep inside torch or a Triton launch.
"""
import functools

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.int32, torch.int64)


def checked(check):
    """Decorate a public kernel function with its argument check.

    The public function validates, then runs; `fn.unchecked` is the bare function, which the
    engine's per-layer calls use once the engine has validated its buffers, so a step does
    not pay for the same checks in every layer.
    """

    def wrap(fn):
        @functools.wraps(fn)
        def public(*args, **kwargs):
            check(*args, **kwargs)
            return fn(*args, **kwargs)

        public.unchecked = fn
        return public

    return wrap


def check_tensor(name, t, ndim=None, dtypes=None, device=None):
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if dtypes is not None and t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise ValueError(f"{name} must have dtype in ({allowed}), got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} (like the other inputs), got {t.device}")


def check_dim(name, t, dim, expected, what):
    if t.shape[dim] != expected:
        raise ValueError(f"{name} dimension {dim} ({what}) must be {expected}, got {t.shape[dim]}")


def check_same_dtype(name, t, ref_name, ref):
    if t.dtype != ref.dtype:
        raise ValueError(f"{name} must have the dtype of {ref_name} ({ref.dtype}), got {t.dtype}")


def check_gqa(num_q_heads, num_kv_heads):
    if num_kv_heads < 1 or num_q_heads % num_kv_heads != 0:
        raise ValueError(
            f"q heads ({num_q_heads}) must be a multiple of the kv heads ({num_kv_heads})"
        )


def check_row_params(name, t, batch, device):
    check_tensor(name, t, ndim=1, device=device)
    if t.shape[0] != batch:
        raise ValueError(f"{name} must have one entry per row ({batch}), got {t.shape[0]}")


# Per-kernel argument contracts, shared by each Triton kernel and its reference twin.

def check_kv_pair(k_name, k, v_name, v, ndim, like_name, like):
    """k and v: float tensors of `ndim` dims and one shape, on `like`'s device, in its dtype."""
    for name, t in ((k_name, k), (v_name, v)):
        check_tensor(name, t, ndim=ndim, dtypes=FLOAT_DTYPES, device=like.device)
        check_same_dtype(name, t, like_name, like)
    if v.shape != k.shape:
        raise ValueError(f"{v_name} must have the shape of {k_name} {tuple(k.shape)}, got {tuple(v.shape)}")


def check_store_kv(k, v, k_cache, v_cache, slot_mapping):
    check_tensor("k", k, ndim=3, dtypes=FLOAT_DTYPES)
    check_kv_pair("k", k, "v", v, 3, "k", k)
    check_kv_pair("k_cache", k_cache, "v_cache", v_cache, 4, "k", k)
    check_tensor("slot_mapping", slot_mapping, ndim=1, dtypes=INDEX_DTYPES, device=k.device)
    if k_cache.shape[2:] != k.shape[1:]:
        raise ValueError(
            f"k_cache [num_blocks, block_size, heads, head_dim] must match k's heads and head_dim "
            f"{tuple(k.shape[1:])}, got {tuple(k_cache.shape)}"
        )
    check_dim("slot_mapping", slot_mapping, 0, k.shape[0], "tokens")


def check_paged_kv(q, k_cache, v_cache, block_tables, context_lens, batch):
    dev = q.device
    check_kv_pair("k_cache", k_cache, "v_cache", v_cache, 4, "q", q)
    check_dim("k_cache", k_cache, 3, q.shape[-1], "head_dim")
    check_gqa(q.shape[1], k_cache.shape[2])
    check_tensor("block_tables", block_tables, ndim=2, dtypes=(torch.int32,), device=dev)
    check_dim("block_tables", block_tables, 0, batch, "batch")
    check_tensor("context_lens", context_lens, ndim=1, dtypes=INDEX_DTYPES, device=dev)
    check_dim("context_lens", context_lens, 0, batch, "batch")


def check_decode_attention(q, k_cache, v_cache, block_tables, context_lens, scale):
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    check_paged_kv(q, k_cache, v_cache, block_tables, context_lens, q.shape[0])
    check_scale(scale)


def check_cu_seqlens(name, cu_seqlens, device):
    # Shape and dtype only: checking its values (0 ... total tokens) would cost a host sync
    # per launch on CUDA, in every layer.
    check_tensor(name, cu_seqlens, ndim=1, dtypes=(torch.int32,), device=device)
    if cu_seqlens.shape[0] < 2:
        raise ValueError(f"{name} must have batch+1 >= 2 entries, got {cu_seqlens.shape[0]}")


def check_prefill_attention(q, k, v, cu_seqlens, scale, causal):
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    dev = q.device
    check_kv_pair("k", k, "v", v, 3, "q", q)
    check_dim("k", k, 0, q.shape[0], "tokens")
    check_dim("k", k, 2, q.shape[2], "head_dim")
    check_gqa(q.shape[1], k.shape[1])
    check_cu_seqlens("cu_seqlens", cu_seqlens, dev)
    check_scale(scale)
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {type(causal).__name__}")


def check_paged_prefill_attention(q, k_cache, v_cache, block_tables, cu_seqlens_q, context_lens, scale):
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    batch = block_tables.shape[0] if isinstance(block_tables, torch.Tensor) else -1
    check_paged_kv(q, k_cache, v_cache, block_tables, context_lens, batch)
    check_cu_seqlens("cu_seqlens_q", cu_seqlens_q, q.device)
    check_dim("cu_seqlens_q", cu_seqlens_q, 0, batch + 1, "batch + 1")
    check_scale(scale)


def check_scale(scale):
    if not isinstance(scale, (float, int)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")


def check_norm(x, weight, bias, eps, residual, weight_name="weight"):
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1:
        raise ValueError("x must have at least one dimension (the normalized one)")
    check_tensor(weight_name, weight, ndim=1, dtypes=FLOAT_DTYPES, device=x.device)
    check_dim(weight_name, weight, 0, x.shape[-1], "hidden size")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES, device=x.device)
        check_dim("bias", bias, 0, x.shape[-1], "hidden size")
    if not isinstance(eps, (float, int)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number, got {eps!r}")
    if residual is not None:
        check_tensor("residual", residual, dtypes=FLOAT_DTYPES, device=x.device)
        if residual.shape != x.shape:
            raise ValueError(
                f"residual must have the shape of x {tuple(x.shape)}, got {tuple(residual.shape)}"
            )
        check_same_dtype("residual", residual, "x", x)


def check_rms_norm(x, weight, eps, residual=None):
    check_norm(x, weight, None, eps, residual)


def check_layer_norm(x, weight, bias, eps, residual=None):
    check_norm(x, weight, bias, eps, residual)


def check_rms_norm_linear(x, norm_weight, eps, weight, bias=None, residual=None):
    check_tensor("x", x, ndim=2, dtypes=FLOAT_DTYPES)
    check_norm(x, norm_weight, None, eps, residual, weight_name="norm_weight")
    check_tensor("weight", weight, ndim=2, device=x.device)
    check_same_dtype("weight", weight, "x", x)
    check_dim("weight", weight, 1, x.shape[1], "input features, x's last")
    if weight.shape[0] < 1:
        raise ValueError("weight must have at least one row (output feature), got shape (0, ...)")
    if bias is not None:
        check_tensor("bias", bias, ndim=1, device=x.device)
        check_same_dtype("bias", bias, "x", x)
        check_dim("bias", bias, 0, weight.shape[0], "output features, weight's first")


def check_rotary(q, k, positions, cos_cache, sin_cache):
    check_tensor("q", q, ndim=3, dtypes=FLOAT_DTYPES)
    dev = q.device
    check_tensor("k", k, ndim=3, dtypes=FLOAT_DTYPES, device=dev)
    check_same_dtype("k", k, "q", q)
    check_dim("k", k, 0, q.shape[0], "tokens")
    check_dim("k", k, 2, q.shape[2], "head_dim")
    if q.shape[2] % 2:
        raise ValueError(f"q head_dim must be even for rotary embedding, got {q.shape[2]}")
    check_tensor("positions", positions, ndim=1, dtypes=INDEX_DTYPES, device=dev)
    check_dim("positions", positions, 0, q.shape[0], "tokens")
    for name, t in (("cos_cache", cos_cache), ("sin_cache", sin_cache)):
        check_tensor(name, t, ndim=2, dtypes=(torch.float32,), device=dev)
        check_dim(name, t, 1, q.shape[2] // 2, "head_dim / 2")
    if sin_cache.shape != cos_cache.shape:
        raise ValueError("sin_cache must have the shape of cos_cache")


def check_rotary_store_kv(q, k, v, positions, cos_cache, sin_cache, k_cache, v_cache, slot_mapping, bias=None):
    check_rotary(q, k, positions, cos_cache, sin_cache)
    check_kv_pair("k", k, "v", v, 3, "q", q)
    if bias is not None:
        check_tensor("bias", bias, ndim=1, dtypes=FLOAT_DTYPES, device=q.device)
        check_dim("bias", bias, 0, (q.shape[1] + 2 * k.shape[1]) * q.shape[2], "(Hq + 2 Hkv) * head_dim")
    bound = [t is not None for t in (k_cache, v_cache, slot_mapping)]
    if any(bound) and not all(bound):
        raise ValueError("k_cache, v_cache and slot_mapping must be given together (or all be None)")
    if all(bound):
        check_store_kv(k, v, k_cache, v_cache, slot_mapping)


def check_gated(x):
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if x.dim() < 1 or x.shape[-1] % 2:
        raise ValueError(f"x last dimension must be even (gate and up halves), got {tuple(x.shape)}")


def check_gelu(x, approximate="none"):
    check_tensor("x", x, dtypes=FLOAT_DTYPES)
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")


def check_logits(logits):
    check_tensor("logits", logits, ndim=2, dtypes=FLOAT_DTYPES)
    if logits.shape[1] < 1:
        raise ValueError("logits must have a non-empty vocabulary dimension")


def check_sample(logits, temperature, top_k, top_p, seeds):
    check_logits(logits)
    batch, dev = logits.shape[0], logits.device
    check_row_params("temperature", temperature, batch, dev)
    check_row_params("top_k", top_k, batch, dev)
    check_row_params("top_p", top_p, batch, dev)
    check_row_params("seeds", seeds, batch, dev)
    check_tensor("temperature", temperature, dtypes=(torch.float32,))
    check_tensor("top_k", top_k, dtypes=INDEX_DTYPES)
    check_tensor("top_p", top_p, dtypes=(torch.float32,))
    check_tensor("seeds", seeds, dtypes=(torch.int64,))
