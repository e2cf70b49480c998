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
# the run folder; notebooks 02–04 read them from there and from nothing else.

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
PROFILE = "quick"  # "quick" (CPU, minutes) or "full" (the original's settings, for a GPU)
OUT_DIR = "runs/quick"  # the run folder; in Colab put it on Drive to keep it
DATA = None  # None: the embedded default dataset; a dataset folder; "kaggle": download it
OVERRIDES = {}  # settings to change, e.g. {"epochs": 2, "precision": "bf16", "engine": "local"}
MOUNT_DRIVE = False  # Colab: mount Google Drive at /content/drive
COMMAND = None  # set by `seglib run`: the command line the report names

# %% [markdown]
# ## Set up: GPU, Drive, data, run folder
#
# The profile (`seglib/settings.py`) with `OVERRIDES` applied is recorded in `run.json`, with
# the data, Keras backend and hardware: the stamp every figure of this run carries.

# %%
from seglib import colab, pipeline
from seglib.report import display

DATA = colab.setup(DATA, mount=MOUNT_DRIVE)
run = pipeline.start_run(OUT_DIR, PROFILE, DATA, OVERRIDES, COMMAND)
print(run.label)
run.settings

# %% [markdown]
# ## Prepare the patches and split them
#
# Patches are cached on disk (keyed by the files' content), so notebooks 02 and 03 reload them
# at once from the split indices written to `data/split.npz`.

# %%
summary = pipeline.prepare_data(run)
print(pipeline.patches(run).summary())
{key: summary[key] for key in ("patches", "counts", "tiles")}

# %% [markdown]
# ## Class shares per split

# %%
display.class_shares(run, summary)
