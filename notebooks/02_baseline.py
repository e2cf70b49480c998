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
# # 02 · Baseline: the pre-HPO U-Net
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/02_baseline.ipynb)
#
# Trains the U-Net with the profile's initial hyperparameters (the original's: batch size 16,
# learning rate 0.007, ReLU) on the split from `01_data`, then evaluates it on the training,
# validation and held-out test patches. Writes `baseline/` (model, metrics, sample predictions),
# which the report compares with the tuned model. Interrupted, it continues from its last
# epoch when run again.

# %% tags=["parameters"]
PROFILE = "quick"  # the run's profile: "quick" (CPU, minutes) or "full" (the original's settings, for a GPU)
OUT_DIR = None  # the run folder; None: MyDrive/seglib/runs/<PROFILE> in Colab, runs/<PROFILE> elsewhere
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

# %%
from seglib import colab, pipeline
from seglib.report import display

OUT_DIR, _ = colab.setup(OUT_DIR, PROFILE)
run = pipeline.open_run(OUT_DIR)
print(run.label)
run.settings.hyperparameters()

# %% [markdown]
# ## Train and evaluate

# %%
baseline = pipeline.train_baseline(run)
display.metrics_table(baseline)

# %% [markdown]
# ## Loss against epochs

# %%
display.loss_curves(run, "baseline", baseline)
