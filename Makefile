# `make bench` runs the headline job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU machines take the local CPU wheel of torch (seconds); a GPU machine keeps or pulls a CUDA build.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=
# Without a GPU the kernel check runs its tiny shapes in Triton's interpreter.
GPU_CHECK_ARGS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo --quick)

.PHONY: setup test bench bench-quick bench-speculative microbench kernels-check scale-check gpu clean

setup: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,bench]"
	touch $@

# pyflakes-level lint first (unused imports, undefined names), then the suite
test: setup
	$(PY) -m ruff check --quiet --select F engine kernels benchmarks tests
	$(PY) -m pytest tests -q $(PYTEST_ARGS)

bench: setup
	$(PY) -m benchmarks

bench-quick: setup
	$(PY) -m benchmarks --quick

# speculative decoding against plain AR by batch size (masked and causal drafts, k, passes)
bench-speculative: setup
	$(PY) -m benchmarks.speculative

# pytest-benchmark suites; JSON saved under .benchmarks/ to compare runs across commits
microbench: setup
	$(PY) -m pytest benchmarks/microbench --benchmark-only --benchmark-autosave -q

# registers, spills and shared memory of every kernel configuration for sm_90 and sm_80 (Triton's
# GPU compiler, no GPU needed), then every kernel against its reference, timed against torch and
# the measured roofline (tiny shapes in the interpreter without a GPU); tables and JSON in
# benchmarks/results/<date>-<machine>/
kernels-check: setup
	$(PY) -m benchmarks.compile_report --jobs 2
	$(PY) -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# AR at real model sizes (random GPT-2 124M and a 1.5B Llama) against HF generate() and the roofline
scale-check: setup
	$(PY) -m benchmarks.scale_check

# the whole GPU session (kernel checks, GPU tests, report) in one call, results under $(OUT)
gpu:
	OUT=$(OUT) bash benchmarks/gpu_session.sh

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
