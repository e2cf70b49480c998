# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 · Data: patches and a held-out split
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/01_data.ipynb)
#
# Finds the image/mask pairs, maps mask colours to the six classes (any other colour becomes
# *Unlabeled*), cuts non-overlapping patches and splits them. With `split = "tiles"` whole tiles
# are held out as a test set that training and HPO never see. Writes `run.json` and `data/` into
# the run folder, which notebooks 02–04 read (in Colab each runs in a runtime of its own: the
# folder is on Google Drive).

# %% tags=["parameters"]
PROFILE = "quick"  # the run's profile: "quick" (CPU, minutes) or "full" (the original's settings, for a GPU)
OUT_DIR = None  # the run folder; None: MyDrive/seglib/runs/<PROFILE> in Colab, runs/<PROFILE> elsewhere
DATA = None  # None: the embedded default dataset; a dataset folder; "kaggle": download it (to Drive in Colab)
OVERRIDES = {}  # settings to change, e.g. {"epochs": 2, "precision": "bf16", "engine": "local"}
COMMAND = None  # set by `seglib run`: the command line the report names
# Colab: where the install cell gets seglib from: a git URL, or a wheel or checkout on Drive
SEGLIB_SOURCE = "git+https://github.com/YOUR-GITHUB-USER/seglib.git@main"

# %%
# Colab only: install seglib from SEGLIB_SOURCE, changing none of Colab's packages (no restart).
import importlib.util
import subprocess
import sys

if "google.colab" in sys.modules and importlib.util.find_spec("seglib") is None:
    if SEGLIB_SOURCE.startswith("/content/drive"):
        from google.colab import drive

        drive.mount("/content/drive")
    source = SEGLIB_SOURCE if "://" in SEGLIB_SOURCE else "file://" + SEGLIB_SOURCE
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    subprocess.run([*pip, f"seglib[colab] @ {source}"], check=True)
    subprocess.run([*pip, "--no-deps", "nni==3.0", "patchify==0.2.3"], check=True)

# %% [markdown]
# ## Set up: GPU, run folder, data
#
# The profile (`seglib/settings.py`) with `OVERRIDES` applied is recorded in `run.json`, with the
# data, Keras backend and hardware: the stamp every figure of this run carries. Run again on a
# folder that holds this run, it reuses what is there.

# %%
from seglib import colab, pipeline
from seglib.report import display

OUT_DIR, DATA = colab.setup(OUT_DIR, PROFILE, DATA)
run = pipeline.start_run(OUT_DIR, PROFILE, DATA, OVERRIDES, COMMAND)
print(run.label)
run.settings

# %% [markdown]
# ## Prepare the patches and split them
#
# Patches are cached on disk (keyed by the files' content); the split is written once to
# `data/split.npz` and read by the baseline, every HyperBand trial and the tuned model.

# %%
summary = pipeline.prepare_data(run)
print(pipeline.patches(run).summary())
{key: summary[key] for key in ("patches", "counts", "tiles")}

# %% [markdown]
# ## Class shares per split

# %%
display.class_shares(run, summary)
