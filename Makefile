# Set-up, tests and the main job. Every target builds its own virtual environment first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OUT ?= runs/quick
PROFILE ?= quick
# The dataset: the Kaggle dataset's "Semantic segmentation dataset" folder, or "kaggle" to
# download it (kagglehub: pip install -e ".[colab]"). `make run` without it uses the embedded one.
DATA ?=
# Tests in two processes (pytest-xdist), a test file's tests together in one (they share its
# fixtures: a reference search, the Colab venv, SSH machines). Most tests wait on processes
# (NNI's manager, kernels, trials) part of the time; PARALLEL= runs them one after another.
PARALLEL ?= -n 2 --dist loadfile

.PHONY: setup test test-all run bench sync device-kit
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m pip install -q --no-deps "nni==3.0" "patchify==0.2.3"
	touch $@

# The fast tier: every seglib module, one real NNI experiment, minutes.
test: setup
	$(BIN)/python -m pytest -m "not slow" $(PARALLEL)

# Everything: adds the Colab emulation, SSH machines, kills, the device kit and whole notebook
# runs (tests marked slow). What CI runs.
test-all: setup
	$(BIN)/python -m pytest $(PARALLEL)

run: setup
	$(BIN)/seglib run --profile $(PROFILE) --out $(OUT) $(if $(DATA),--data "$(DATA)")

bench: setup
	$(if $(DATA),,$(error make bench needs DATA=PATH (the dataset folder) or DATA=kaggle; see the README's Data))
	$(BIN)/python benchmarks/bench_data.py --data "$(DATA)"
	$(BIN)/python benchmarks/bench_train.py

sync: setup
	$(BIN)/jupytext --sync notebooks/*.py

# What a GPU machine without network access lacks for the full profile offline (benchmarks/gpu_full_run.sh).
device-kit: setup
	$(if $(DATA),,$(error make device-kit needs DATA=PATH (the dataset folder), DATA=kaggle, or DATA=none for a kit without it))
	$(BIN)/python benchmarks/device_kit.py --out .device-kit $(if $(filter none,$(DATA)),--no-data,--data "$(DATA)")
