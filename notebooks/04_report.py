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
# per-class IoU on held-out tiles, whole held-out images segmented, HyperBand against random
# search at equal epochs, the compute spent and a stamp of data, profile, backend and hardware.

# %% tags=["parameters"]
PROFILE = "quick"  # the run's profile: "quick" (CPU, minutes) or "full" (the original's settings, for a GPU)
OUT_DIR = None  # the run folder; None: MyDrive/seglib/runs/<PROFILE> in Colab, runs/<PROFILE> elsewhere
DOCS_DIR = None  # where the report goes; None: OUT_DIR/docs ("docs" rewrites the committed one)
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
from seglib import colab, report
from seglib.report import display

OUT_DIR, _ = colab.setup(OUT_DIR, PROFILE)
path = report.write_report(OUT_DIR, DOCS_DIR)
print(f"report written to {path}")

# %%
display.show_report(path)
