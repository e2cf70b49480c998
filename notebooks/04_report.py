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
# # 04 · The milestone report
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/04_report.ipynb)
#
# Writes `hyperparameter-optimization.md` and its figures from the run folder's artefacts only:
# HyperBand explained with this run's own schedule and trials, every section of the seed report,
# per-class IoU on held-out tiles, HyperBand against random search at equal epochs, the compute spent and a stamp
# of data, profile, backend and hardware.

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
OUT_DIR = "runs/quick"  # the run folder that notebooks 01-03 wrote
DOCS_DIR = None  # where the report goes; None: OUT_DIR/docs ("docs" rewrites the committed one)
MOUNT_DRIVE = False  # Colab: mount Google Drive at /content/drive

# %%
from seglib import colab, report
from seglib.report import display

colab.setup(mount=MOUNT_DRIVE)
path = report.write_report(OUT_DIR, DOCS_DIR)
print(f"report written to {path}")

# %%
display.show_report(path)
