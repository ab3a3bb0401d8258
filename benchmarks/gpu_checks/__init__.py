"""Per-kernel-family correctness-and-speed checks, aggregated by `benchmarks/gpu_check.py`.

Each module defines `check(device, dtype, quick, timer) -> list[dict]`: for a few shapes it
runs the Triton kernel and its `kernels.reference` twin, and times the kernel against the
strongest plain-torch baseline (SDPA, F.layer_norm, torch sampling...). `timer(fn)` returns
the median seconds of one call. Each row is a dict with keys:
  kernel, shape (str), dtype (str), max_rel_err, tol, ok (bool),
  ms, baseline (name), baseline_ms, bytes (moved by the kernel, for GB/s), flops (or 0).
`quick` selects tiny shapes so the whole check also runs on CPU in Triton's interpreter.
"""
import torch


def rel_err(out, ref):
    """max |out - ref| / max |ref|: one number that is meaningful across dtypes and scales."""
    out, ref = out.float(), ref.float()
    return ((out - ref).abs().max() / ref.abs().max().clamp_min(1e-6)).item()


def result_row(kernel, shape, dtype, err, tol, run, baseline_name, baseline, timer, nbytes, flops=0, ok=None):
    """One row of the contract above: `run` (the kernel) and `baseline` are timed with
    `timer`; `ok` is err <= tol unless the caller decides it (e.g. exact tokens too)."""
    return {
        "kernel": kernel, "shape": shape, "dtype": str(dtype).replace("torch.", ""),
        "max_rel_err": err, "tol": tol, "ok": bool(err <= tol if ok is None else ok),
        "ms": timer(run) * 1e3, "baseline": baseline_name, "baseline_ms": timer(baseline) * 1e3,
        "bytes": nbytes, "flops": flops,
    }


def tolerance(dtype):
    """Relative error bound for a kernel computed in fp32 and stored in `dtype`."""
    return {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 3e-2}[dtype]
