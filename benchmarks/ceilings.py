"""The machine's own ceilings, measured in the same run as the numbers quoted against them.

- copy: a large device-to-device copy; bandwidth counts bytes read + written.
- read: a large sum reduction; bandwidth counts the bytes read (what attention decode needs).
- matmul: a large square matmul in the run's dtype; 2 n^3 FLOPs.
"""
import torch

from .timing import median_seconds


def measure_ceilings(device, dtype, quick=False):
    """dict with copy_gbps, read_gbps, matmul_tflops, and the sizes used."""
    cuda = str(device).startswith("cuda")
    numel = (1 << 28 if cuda else 1 << 24) // (4 if quick else 1)  # 1 GiB fp32 on GPU
    n = (8192 if cuda else 1024) // (4 if quick else 1)
    src = torch.empty(numel, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    copy_s = median_seconds(lambda: dst.copy_(src), device)
    read_s = median_seconds(lambda: src.sum(), device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    mm_s = median_seconds(lambda: a @ b, device, reps=5)
    nbytes = src.numel() * src.element_size()
    return {
        "copy_gbps": 2 * nbytes / copy_s / 1e9,
        "read_gbps": nbytes / read_s / 1e9,
        "matmul_tflops": 2 * n**3 / mm_s / 1e12,
        "copy_bytes": nbytes,
        "matmul_n": n,
        "matmul_dtype": str(dtype).replace("torch.", ""),
    }
