#!/usr/bin/env bash
# One device call: kernel checks + GPU-only tests + the headline report, results under $OUT.
# Usage (on a GPU machine with torch, triton and transformers installed):
#   OUT=/some/dir bash benchmarks/gpu_session.sh
# Budget: at most 9 minutes (each stage has a timeout, under the device's 10-minute call
# limit); about 6 expected on an H200. Each stage's log goes to $OUT/*.log so a failure in
# one stage still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-$(date +%F)}
PY=${PYTHON:-python3}  # the device image has python3 (torch, triton, transformers, numba, pytest...)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1
$PY -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" > "$OUT/versions.txt" 2>&1
timeout 120 $PY -m benchmarks.gpu_check --out "$OUT" > "$OUT/gpu_check.log" 2>&1; echo "gpu_check rc=$?" >> "$OUT/status.txt"
timeout 120 $PY -m pytest tests/kernels tests/test_causal_models.py tests/test_engine_ar.py -q -p no:cacheprovider > "$OUT/pytest_gpu.log" 2>&1; echo "pytest rc=$?" >> "$OUT/status.txt"
timeout 120 $PY -m benchmarks --out "$OUT/report" > "$OUT/report.log" 2>&1; echo "report rc=$?" >> "$OUT/status.txt"
timeout 180 $PY -m benchmarks.scale_check --reps 2 --out "$OUT" > "$OUT/scale.log" 2>&1; echo "scale_check rc=$?" >> "$OUT/status.txt"
cat "$OUT/status.txt"
