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
# # 03 · HyperBand on NNI, random search at equal budget, the tuned model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/03_hyperband_hpo.ipynb)
#
# Runs seglib's HyperBand (NNI is the engine: manager, trial processes, web UI) over the
# original's search space with the profile's R and η; a promoted configuration resumes from its
# checkpoint of the previous rung. Then NNI's random search gets the same number of epochs, and
# the best configuration is retrained exactly like the baseline. Writes `hpo/`, `random/` and
# `tuned/`.
#
# **The NNI web UI has no authentication: never expose it to the internet.** In Colab it is shown
# through Colab's own authenticated proxy; on a server use `ssh -L 8080:localhost:8080`.

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
RANDOM_SEARCH = True  # also run random search at HyperBand's budget (for the report)
MOUNT_DRIVE = False  # Colab: mount Google Drive at /content/drive

# %%
from seglib import colab, pipeline, report

colab.setup(mount=MOUNT_DRIVE)
run = pipeline.open_run(OUT_DIR)
print(run.label)
report.schedule_table(run.profile.max_budget, run.profile.eta)

# %% [markdown]
# ## HyperBand

# %%
hyperband = pipeline.run_search(run, "hyperband")
print(report.experiment_summary(hyperband))

# %% [markdown]
# ## Random search at equal budget

# %%
if RANDOM_SEARCH:
    random_search = pipeline.run_search(run, "random", max_epochs=report.compute_summary(hyperband["trials"])["epochs"])
    print(report.experiment_summary(random_search))

# %% [markdown]
# ## Retrain the best configuration like the baseline

# %%
best = pipeline.best_params(hyperband)
tuned = pipeline.train_and_record(run, pipeline.load_arrays(run), best, "tuned")
print(best)
report.metrics_table(tuned)
