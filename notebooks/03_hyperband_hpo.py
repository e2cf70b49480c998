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
# # 03 · HyperBand (or ASHA, BOHB), random search at equal epochs, the tuned model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/03_hyperband_hpo.ipynb)
#
# Runs the run's main search over the original's search space with the profile's R and η: its
# `tuner` setting, seglib's HyperBand by default, or ASHA or BOHB (`docs/hpo.md`); a promoted
# configuration resumes from its checkpoint of the previous rung. The engine is the run's
# `engine` setting: NNI (trial processes, web UI) or `local` (in this kernel). Then random
# search gets exactly the epochs the main search spent, and the best configuration is retrained
# like the baseline and segments the held-out tiles' whole images. Writes `hpo/` (HyperBand;
# `asha/` or `bohb/` for those), `random/` and `tuned/`; run again after an interruption (a
# Colab disconnect included), it continues where it stopped.
#
# **The NNI web UI has no authentication: never expose it to the internet.** In Colab it is shown
# through Colab's own authenticated proxy; on a server use `ssh -L 8080:localhost:8080`.

# %% tags=["parameters"]
PROFILE = "quick"  # the run's profile: "quick" (CPU, minutes) or "full" (the original's settings, for a GPU)
OUT_DIR = None  # the run folder; None: MyDrive/seglib/runs/<PROFILE> in Colab, runs/<PROFILE> elsewhere
RANDOM_SEARCH = True  # also run random search at the main search's epochs (for the report)
REMOTE_HOSTS = []  # e.g. ["alice@gpu1", "alice@gpu2:2222"]: run trials on these machines over SSH (docs/hpo.md)
REMOTE_PYTHON_PATH = None  # with REMOTE_HOSTS: bin folder of the Python with seglib and nni on every machine
SSH_KEY = None  # with REMOTE_HOSTS: SSH private key (None: ~/.ssh/id_rsa)
MANAGER_IP = None  # with REMOTE_HOSTS: this machine's address as the trial machines reach it (None: NNI's guess)
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
display.schedule_table(run.settings)

# %% [markdown]
# ## The main search (the run's `tuner`: HyperBand unless the run chose ASHA or BOHB)

# %%
remote = dict(remote_hosts=REMOTE_HOSTS, python_path=REMOTE_PYTHON_PATH, ssh_key=SSH_KEY, manager_ip=MANAGER_IP)
main_search = pipeline.run_search(run, **remote)
print(display.experiment_summary(main_search))

# %% [markdown]
# ## Random search at equal epochs

# %%
if RANDOM_SEARCH:
    random_search = pipeline.run_search(run, "random", **remote)
    print(display.experiment_summary(random_search))

# %% [markdown]
# ## Retrain the best configuration like the baseline

# %%
tuned = pipeline.train_tuned(run)
print(tuned.params)
display.metrics_table(tuned)

# %% [markdown]
# ## Whole held-out images
#
# The tuned model segments every image of the held-out tiles at its full size (`seglib
# predict`): non-overlapping windows, blended windows, and blended windows averaged over the 8
# flips and rotations (eight times the blended time; the setting `whole_image_tta` turns it
# off); IoU per class for each, for the report.

# %%
whole = pipeline.segment_held_out(run)
display.whole_images(whole)
