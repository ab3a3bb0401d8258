"""One command that checks every kernel against its reference and times it against torch.

    python -m benchmarks.gpu_check [--quick] [--dtype bfloat16] [--out DIR]

On an H200 (the default sizes) it finishes in a few minutes; with --quick it runs tiny
shapes and also works on CPU, where the kernels run in Triton's interpreter. Every row is
put against the roofline of ceilings measured in the same run: attainable time =
max(bytes / HBM bandwidth, flops / matmul rate), and "roofline %" = attainable / measured.
"""
import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

import kernels  # noqa: F401  (selects Triton's interpreter on CPU before triton loads)

from .ceilings import measure_ceilings
from .machine import machine_name, results_folder
from .gpu_checks import decode_attention, elementwise, norm_linear, prefill_attention, sampling
from .timing import median_seconds

FAMILIES = {
    "decode_attention": decode_attention,
    "prefill_attention": prefill_attention,
    "elementwise": elementwise,
    "norm_linear": norm_linear,
    "sampling": sampling,
}


def add_roofline(row, ceilings):
    seconds = row["ms"] / 1e3
    hbm = max(ceilings["copy_gbps"], ceilings["read_gbps"]) * 1e9
    attainable = max(row["bytes"] / hbm, row["flops"] / (ceilings["matmul_tflops"] * 1e12))
    row["gbps"] = row["bytes"] / seconds / 1e9
    row["tflops"] = row["flops"] / seconds / 1e12
    row["roofline_pct"] = 100 * attainable / seconds
    row["speedup_vs_baseline"] = row["baseline_ms"] / row["ms"] if row["baseline_ms"] else None
    return row


def markdown_table(rows):
    head = "| kernel | shape | dtype | rel err | ok | ms | GB/s | TFLOP/s | roofline % | baseline | baseline ms | speedup |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        speedup = f"{r['speedup_vs_baseline']:.2f}x" if r["speedup_vs_baseline"] else "-"
        lines.append(
            f"| {r['kernel']} | {r['shape']} | {r['dtype']} | {r['max_rel_err']:.2e} | "
            f"{'yes' if r['ok'] else 'NO'} | {r['ms']:.4f} | {r['gbps']:.0f} | {r['tflops']:.1f} | "
            f"{r['roofline_pct']:.0f} | {r['baseline']} | {r['baseline_ms']:.4f} | {speedup} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny shapes (CI, CPU interpreter)")
    parser.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                        help="kernel dtype (default: bfloat16 on CUDA, float32 on CPU)")
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES),
                        help="which kernel families to check (default: all)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for kernels.json and kernels.md (default: benchmarks/results/<date>-<machine>)")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, args.dtype or ("bfloat16" if device == "cuda" else "float32"))
    cuda = device.startswith("cuda")
    out = results_folder(args.out, device)

    ceilings = measure_ceilings(device, dtype if cuda else torch.float32, quick=args.quick)
    print(f"ceilings: copy {ceilings['copy_gbps']:.0f} GB/s, read {ceilings['read_gbps']:.0f} GB/s, "
          f"matmul {ceilings['matmul_tflops']:.1f} TFLOP/s", flush=True)

    def timer(fn):
        return median_seconds(fn, device, warmup=1 if not cuda else 3, reps=3 if not cuda else 20,
                              max_seconds=None if cuda else 2.0)

    rows = []
    for name in args.families:
        for row in FAMILIES[name].check(device, dtype, args.quick, timer):
            rows.append(add_roofline(row, ceilings))
            print(f"  {row['kernel']:>24} {row['shape']:<36} err {row['max_rel_err']:.1e} "
                  f"{'ok' if row['ok'] else 'FAIL'}  {row['ms']:.4f} ms  {row['roofline_pct']:.0f}% roofline",
                  flush=True)
    report = {
        "date": str(datetime.date.today()),
        "machine": machine_name(device),
        "torch": torch.__version__,
        "triton": __import__("triton").__version__,
        "dtype": str(dtype).replace("torch.", ""),
        "quick": args.quick,
        "ceilings": ceilings,
        "rows": rows,
    }
    (out / "kernels.json").write_text(json.dumps(report, indent=2))
    (out / "kernels.md").write_text(
        f"# Kernel check, {report['date']}, {report['machine']}\n\n"
        f"torch {report['torch']}, triton {report['triton']}. Ceilings measured in this run: "
        f"copy {ceilings['copy_gbps']:.0f} GB/s, read {ceilings['read_gbps']:.0f} GB/s, "
        f"{ceilings['matmul_dtype']} matmul {ceilings['matmul_tflops']:.1f} TFLOP/s.\n\n"
        + markdown_table(rows) + "\n"
    )
    print(f"wrote {out / 'kernels.json'} and {out / 'kernels.md'}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
