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
# REHEARSAL=1 runs the same stages on a CPU at CPU sizes (the kernel check's quick shapes in
# Triton's interpreter, the quick report, the scale check's toy model), so that what would
# fail on the device fails here first; `make gpu-rehearsal` runs it under the device's Python stack.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu-$(date +%F)}
PY=${PYTHON:-python3}  # the device image has python3 (torch, triton, transformers, numba, pytest...)
WORK=$(mktemp -d)
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

# stage NAME SECONDS COMMAND...: run with a timeout (x LIMIT_SCALE), log to $WORK/NAME.log,
# record exit code and time.
stage() {
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    timeout "$((limit * LIMIT_SCALE))" "$@" > "$WORK/$name.log" 2>&1
    echo "$name $? $((SECONDS - start))" >> "$WORK/status.txt"
}

if [ "${REHEARSAL:-0}" = 1 ]; then
    # a CPU of a few cores, perhaps with a cold Triton cache: the limits are the device's x 4
    QUICK=--quick SCALE_SHAPES="--models tiny --device cpu" LIMIT_SCALE=4
    echo "none: a rehearsal on CPU (REHEARSAL=1), CPU sizes; no figure here is a GPU's" > "$WORK/gpu.txt"
else
    QUICK="" SCALE_SHAPES="" LIMIT_SCALE=1
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader > "$WORK/gpu.txt" 2>&1
fi
$PY -c "import platform, torch, triton, transformers
print(torch.__version__, triton.__version__, transformers.__version__, 'python', platform.python_version())" \
    > "$WORK/versions.txt" 2>&1
stage gpu_check 100 $PY -m benchmarks.gpu_check $QUICK --out "$WORK"
# The compile report also fills triton's cache with the engine's configurations for the stages after it.
stage compile 90 $PY -m benchmarks.compile_report --arch 90 --jobs 12 --no-progress --out "$WORK"
# The compile test would repeat the compile stage: the GPU run leaves it out.
stage pytest 120 $PY -m pytest tests/kernels tests/test_causal_models.py tests/test_engine_ar.py -q \
    -p no:cacheprovider --ignore=tests/kernels/test_compile.py
stage report 100 $PY -m benchmarks $QUICK --out "$OUT/report"
stage scale_check 150 $PY -m benchmarks.scale_check --reps 2 $SCALE_SHAPES --out "$WORK"
$PY -m benchmarks.gpu_session --work "$WORK" --out "$OUT"
cat "$WORK/status.txt"
