# Set-up, tests and the main job. Every target builds its own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/quick
PROFILE ?= quick

.PHONY: setup test run bench sync device-kit
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "nni==3.0" "patchify==0.2.3"
	touch $@

test: setup
	$(BIN)/python -m pytest

run: setup
	$(BIN)/seglib run --profile $(PROFILE) --out $(OUT)

bench: setup
	$(BIN)/python benchmarks/bench_data.py
	$(BIN)/python benchmarks/bench_train.py

sync: setup
	$(BIN)/jupytext --sync notebooks/*.py

# What the lent GPU machine lacks for the full profile offline (benchmarks/gpu_full_run.sh).
device-kit: setup
	$(BIN)/python benchmarks/device_kit.py --out .device-kit
