# `make bench` runs the headline job, `make test` the test suite; both set up .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# CPU machines take the local CPU wheel of torch (seconds); a GPU machine keeps or pulls a CUDA build.
TORCH_SPEC := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
PYTEST_ARGS ?=
# Without a GPU the kernel check runs its tiny shapes in Triton's interpreter.
GPU_CHECK_ARGS := $(shell command -v nvidia-smi >/dev/null 2>&1 || echo --quick)

.PHONY: setup test bench bench-quick bench-speculative microbench kernels-check scale-check gpu gpu-rehearsal clean

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

# The GPU machine's Python stack, in a venv of its own: its image's python3 (3.12) and pins, and
# only the packages it holds (no fastapi, uvicorn, openai). numpy < 2.4 is for the rehearsal
# alone: triton 3.6's interpreter cannot run a loop over a runtime bound with a newer numpy
# (the device compiles the kernels instead). pip pulls torch's CUDA build; it runs on CPU.
# The first Python 3.12 that runs: python3.12 on PATH, else pyenv's; or GPU_STACK_PYTHON=/path/to/it
GPU_STACK_PYTHON ?= $(shell for p in python3.12 $(HOME)/.pyenv/versions/3.12*/bin/python3.12; do \
	$$p -c 'import sys; print(sys.executable)' 2>/dev/null && break; done)
GPU_STACK_VENV := .venv-gpu-stack
GPU_STACK := torch==2.11.0 triton==3.6.0 transformers==5.17.0 "numpy<2.4" numba safetensors tokenizers \
	tqdm matplotlib httpx prometheus-client pytest pytest-benchmark

$(GPU_STACK_VENV)/.installed: Makefile
	@test -n "$(GPU_STACK_PYTHON)" || { echo "gpu-rehearsal needs Python 3.12: set GPU_STACK_PYTHON=/path/to/python3.12"; exit 1; }
	$(GPU_STACK_PYTHON) -m venv $(GPU_STACK_VENV)
	$(GPU_STACK_VENV)/bin/python -m pip install -q $(GPU_STACK)
	touch $@

# `make gpu`'s stages on this CPU under that stack, at CPU sizes: what would fail on the device
# fails here first (results under $(OUT), default out/gpu-rehearsal/, which git ignores)
gpu-rehearsal: $(GPU_STACK_VENV)/.installed
	REHEARSAL=1 PYTHON=$(GPU_STACK_VENV)/bin/python OUT=$(or $(OUT),out/gpu-rehearsal) \
		bash benchmarks/gpu_session.sh

clean:
	rm -rf $(VENV) $(GPU_STACK_VENV) .pytest_cache .benchmarks
