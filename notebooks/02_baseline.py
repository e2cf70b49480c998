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
# which the report compares with the tuned model.

# %%
# Colab only: install seglib, keeping Colab's numpy 2 (outside Colab this does nothing).
import shlex, subprocess, sys

if "google.colab" in sys.modules:
    for command in [
        'pip install -q "seglib[colab] @ git+https://github.com/YOUR-GITHUB-USER/seglib.git@main"',
        'pip install -q --no-deps patchify==0.2.3',
    ]:
        subprocess.run([sys.executable, "-m", *shlex.split(command)], check=True)

# %% tags=["parameters"]
OUT_DIR = "runs/quick"  # the run folder that 01_data wrote
MOUNT_DRIVE = False  # Colab: mount Google Drive at /content/drive

# %%
from seglib import colab, pipeline
from seglib.report import display

colab.setup(mount=MOUNT_DRIVE)
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
