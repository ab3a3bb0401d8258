#!/usr/bin/env bash
# One device call: kernel checks, the compile report, GPU-only tests, the headline report and
# the AR scale check. What comes back is at most 8 files, at most two folders deep:
#   $OUT/session.md    stage exit codes and times, GPU, versions, and every table
#   $OUT/session.json  the same as data, with the tail of each stage's log
#   $OUT/report/       report.md, results.json and the report's four plots
# Usage (on a GPU machine with torch, triton and transformers installed):
#   OUT=/some/dir bash benchmarks/gpu_session.sh
# Budget: each stage has a timeout (560 s in all, under the device's 10-minute call limit);
# about 5 minutes expected on an H200. Stage outputs go to a scratch folder first, so a
# failure in one stage still leaves the others' results; benchmarks/gpu_session.py gathers them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-$(date +%F)}
PY=${PYTHON:-python3}  # the device image has python3 (torch, triton, transformers, numba, pytest...)
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# stage NAME SECONDS COMMAND...: run with a timeout, log to $WORK/NAME.log, record exit code and time.
stage() {
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
    echo "$name $? $((SECONDS - start))" >> "$WORK/status.txt"
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$WORK/gpu.txt" 2>&1
$PY -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, transformers.__version__)" \
    > "$WORK/versions.txt" 2>&1
stage gpu_check 100 $PY -m benchmarks.gpu_check --out "$WORK"
# The compile report also fills triton's cache with the engine's configurations for the stages after it.
stage compile 90 $PY -m benchmarks.compile_report --arch 90 --jobs 12 --no-progress --out "$WORK"
# The compile test would repeat the compile stage: the GPU run leaves it out.
stage pytest 120 $PY -m pytest tests/kernels tests/test_causal_models.py tests/test_engine_ar.py -q \
    -p no:cacheprovider --ignore=tests/kernels/test_compile.py
stage report 100 $PY -m benchmarks --out "$OUT/report"
stage scale_check 150 $PY -m benchmarks.scale_check --reps 2 --out "$WORK"
$PY -m benchmarks.gpu_session --work "$WORK" --out "$OUT"
cat "$WORK/status.txt"
