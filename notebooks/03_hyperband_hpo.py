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
# # 03 · HyperBand, random search at equal epochs, the tuned model
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/YOUR-GITHUB-USER/seglib/blob/main/notebooks/03_hyperband_hpo.ipynb)
#
# Runs seglib's HyperBand over the original's search space with the profile's R and η; a
# promoted configuration resumes from its checkpoint of the previous rung. The engine is the
# run's `engine` setting: NNI (trial processes, web UI) or `local` (in this kernel). Then random
# search gets exactly the epochs HyperBand spent, and the best configuration is retrained like
# the baseline. Writes `hpo/`, `random/` and `tuned/`; run again after an interruption, it
# continues where it stopped.
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
RANDOM_SEARCH = True  # also run random search at HyperBand's epochs (for the report)
MOUNT_DRIVE = False  # Colab: mount Google Drive at /content/drive

# %%
from seglib import colab, pipeline
from seglib.report import display

colab.setup(mount=MOUNT_DRIVE)
run = pipeline.open_run(OUT_DIR)
print(run.label)
display.schedule_table(run.settings)

# %% [markdown]
# ## HyperBand

# %%
hyperband = pipeline.run_search(run, "hyperband")
print(display.experiment_summary(hyperband))

# %% [markdown]
# ## Random search at equal epochs

# %%
if RANDOM_SEARCH:
    random_search = pipeline.run_search(run, "random")
    print(display.experiment_summary(random_search))

# %% [markdown]
# ## Retrain the best configuration like the baseline

# %%
tuned = pipeline.train_tuned(run)
print(tuned.params)
display.metrics_table(tuned)
