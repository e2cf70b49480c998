"""The steps notebooks 01-04 take, each reading what the previous one left in the run folder.

Nothing passes through hidden state: a notebook opened on its own (a fresh Colab runtime,
papermill) finds everything in the folder (``seglib.artifacts``). Every step is safe to run
again: a finished step is reused, an interrupted one continues from its checkpoints, and a
folder holding another run's settings is refused rather than overwritten.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
from pathlib import Path

import seglib
from seglib.artifacts import (
    ArtifactMissing,
    Experiment,
    ModelRecord,
    Run,
    RunPaths,
    atomic_write,
    read_experiment,
    read_json,
    read_model_record,
    read_run,
    write_json,
    write_run,
)
from seglib.data import Arrays, load_split, make_split, prepare, save_split, split_class_shares
from seglib.palette import CLASS_NAMES
from seglib.settings import profile
from seglib.system import hardware, keras_backend

EMBEDDED_LABEL = "embedded default dataset"


class RunMismatch(ValueError):
    """The run folder holds a run with other settings."""


def start_run(
    out_dir,
    profile_name: str = "quick",
    data: str | None = None,
    overrides: dict | None = None,
    command: str | None = None,
) -> Run:
    """Resolve the profile with ``overrides``, stamp the run and write ``run.json`` (01_data).

    A folder that already holds this run (same profile, data and overrides) is opened as it
    is, so later notebooks reuse what they finished; one holding another run is refused.
    """
    overrides = dict(overrides or {})
    if data is not None:
        overrides["data"] = str(data)
    settings = profile(profile_name, **overrides)
    paths = RunPaths.of(out_dir)
    if paths.run_file.is_file():
        existing = read_run(paths.root)
        if existing.settings != settings:
            differing = {
                k: (v, getattr(settings, k))
                for k, v in existing.settings.to_dict().items()
                if getattr(settings, k) != v
            }
            details = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differing.items())
            raise RunMismatch(
                f"{paths.root} holds a run with other settings ({details}); "
                "choose a new run folder, or delete that one to start again"
            )
        return existing
    overrides.pop("data", None)
    stamp = {
        "data_label": data_label(settings.data),
        "backend": keras_backend(),
        "hardware": hardware(),
        "python": platform.python_version(),
        "seglib": seglib.__version__,
        "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **({"command": command} if command else {}),
    }
    run = Run(paths, profile_name, overrides, settings, stamp)
    write_run(run)
    return run


def open_run(out_dir) -> Run:
    """The run that 01_data started in ``out_dir``."""
    return read_run(out_dir)


def data_label(data) -> str:
    """How the report names the data: the dataset folder's name, or the embedded default."""
    if data is None:
        return EMBEDDED_LABEL
    path = Path(data)
    return f"{path.name} ({path.parent.name})" if path.parent.name else path.name


# ---------------------------------------------------------------------------------------------
# 01: data


def patches(run: Run):
    """The run's patches (from seglib's cache after the first call)."""
    return prepare(run.settings.data, patch_size=run.settings.patch_size)


def prepare_data(run: Run) -> dict:
    """Patches and their split (``data/split.npz``, made once) and ``data/summary.json``.

    Indices are into the full prepared patches, so later notebooks rebuild the same arrays
    from the cache without copying patches into the run folder.
    """
    import numpy as np

    all_patches = patches(run)
    if not run.paths.split_file.is_file():
        save_split(run.paths.split_file, make_split(all_patches, run.settings))
    index = load_split(run.paths.split_file)
    chosen = np.unique(np.concatenate(list(index.values())))  # the seed split's test is its val
    shares = split_class_shares(all_patches, index)
    tiles = all_patches.tile_of_patch
    summary = {
        "split": run.settings.split,
        "patch_size": run.settings.patch_size,
        "patches": len(chosen),
        "patches_prepared": len(all_patches),
        "pairs": len(all_patches.files),
        "counts": {name: len(i) for name, i in index.items()},
        "tiles": {name: sorted(set(tiles[i])) for name, i in index.items()},
        "class_shares": {name: dict(zip(CLASS_NAMES, map(float, value))) for name, value in shares.items()},
        "off_palette": all_patches.off_palette_lines(),
        "prepare_seconds": float(all_patches.seconds),
    }
    write_json(run.paths.data_summary, summary)
    return summary


def load_arrays(run: Run) -> Arrays:
    """The split that 01_data wrote, as model inputs."""
    return Arrays.of(patches(run), load_split(run.paths.split_file))


# ---------------------------------------------------------------------------------------------
# 02 and 03: models


def train_baseline(run: Run) -> ModelRecord:
    """The pre-HPO U-Net: the profile's hyperparameters for its epochs, in ``baseline/``."""
    return train_and_record(run, "baseline", run.settings.hyperparameters())


def train_tuned(run: Run) -> ModelRecord:
    """The main search's best configuration (the run's ``tuner``) retrained exactly like the baseline, in ``tuned/``."""
    folder = run.paths.search(run.settings.tuner)
    best = read_experiment(folder).best
    if not best.params:
        raise ArtifactMissing(f"{folder} has no successful trial to retrain: see its trials.csv")
    return train_and_record(run, "tuned", best.params)


def train_and_record(run: Run, name: str, params: dict) -> ModelRecord:
    """Train with ``params`` for the run's epochs and record it in ``name/``; reuse a finished one.

    Training checkpoints every epoch (only the latest kept), so a notebook run again after a
    disconnect continues where it stopped.
    """
    from seglib.evaluate import record_model
    from seglib.train import forget_best, prune_checkpoints, train

    paths = run.paths
    if paths.metrics_file(name).is_file():
        record = read_model_record(paths.metrics_file(name), f"the {name} step")
        if record.params == params:
            recorded_model(paths, name)  # a later step reads it: say now if it cannot be
            print(f"{paths.model_dir(name)} already holds this model: reusing it (delete the folder to train again)")
            return record
    arrays = load_arrays(run)
    checkpoints = paths.checkpoints(name)
    result = train(
        arrays.x_train,
        arrays.y_train,
        arrays.x_val,
        arrays.y_val,
        settings=run.settings.replace(**params),
        checkpoint_dir=checkpoints,
        on_epoch_end=lambda epoch, logs: prune_checkpoints(checkpoints, epoch + 1),
    )
    record = record_model(paths, name, result, arrays, params)
    prune_checkpoints(checkpoints, result.epochs_trained + 1)  # all of them; a damaged one set aside stays
    forget_best(checkpoints)
    with contextlib.suppress(OSError):
        checkpoints.rmdir()
    return record


def recorded_model(paths: RunPaths, name: str) -> Path:
    """``name/model.keras`` if it is a whole model, else an error naming it and how to get it back."""
    from seglib.data import check_model_file

    path, folder = paths.model_file(name), paths.model_dir(name)
    retrain = f"retrain it (delete the folder {folder} and run again)"
    if not path.exists() and paths.metrics_file(name).is_file():
        raise ArtifactMissing(f"{path} not found although {paths.metrics_file(name)} is there: {retrain}")
    if not path.exists():
        raise ArtifactMissing(f"{path} not found (written by the {name} step: run it first)")
    return check_model_file(path, damaged_hint=f"{retrain} or restore the file")


def run_search(
    run: Run,
    tuner: str | None = None,
    remote_hosts=(),
    python_path: str | None = None,
    ssh_key: str | None = None,
    manager_ip: str | None = None,
) -> Experiment:
    """Run (or continue, or reuse) the run's main search or random search, with a live view.

    ``tuner`` None is the main search: the run's ``tuner`` setting (HyperBand, ASHA or BOHB).
    Random search gets exactly the epochs the main search spent, so it must come second. With
    ``remote_hosts`` (``user@host[:port]``) its trials run on those machines over SSH, each
    checked first (:mod:`seglib.hpo.remote`): the run folder must then be shared storage at the
    same absolute path on every machine, ``python_path`` the bin folder of their Python.
    """
    from seglib.hpo import remote
    from seglib.report.display import live_progress

    tuner = run.settings.tuner if tuner is None else tuner
    max_epochs = None
    if tuner == "random":
        max_epochs = read_experiment(run.paths.search(run.settings.tuner)).summary.epochs_trained
    search = remote.searcher(remote_hosts, python_path=python_path, ssh_key=ssh_key, manager_ip=manager_ip)
    return search(
        run.paths.search(tuner),
        run.settings,
        tuner,
        resume="auto",
        split_file=run.paths.split_file,
        max_epochs=max_epochs,
        show=live_progress(),
    )


# ---------------------------------------------------------------------------------------------
# 03: whole held-out images

WHOLE_IMAGE_FIGURES = 3  # images shown whole in the report (all of them are scored)
FIGURE_SIDE = 480  # pixels: the longest side of an image as the report shows it


def segment_held_out(run: Run, name: str = "tuned", modes: tuple[str, ...] | None = None) -> dict | None:
    """Segment the held-out tiles' whole images with the model ``name``; score each tiling mode.

    Whole images, not patches: every image of the test tiles, at its full size, through
    ``seglib.predict`` with non-overlapping windows, blended windows, and blended windows
    averaged over the 8 flips and rotations (unless the setting ``whole_image_tta`` is off); IoU
    per class and mean, pooled over the images. ``modes`` scores only those. Writes ``name/whole_images.json`` and
    a few images for the report's figure. Only a
    ``tiles`` split holds whole images out (the original's random split holds out none): for
    another split it says so and returns None.
    """
    import numpy as np

    from seglib import predict
    from seglib.data import find_pairs
    from seglib.train import load_model

    paths = run.paths
    if run.settings.split != "tiles":
        print(
            f"split {run.settings.split!r} holds no whole image out (every image gave training patches): "
            "whole-image scores need split='tiles'"
        )
        return None
    if paths.whole_images(name).is_file():
        return read_json(paths.whole_images(name))
    all_patches = patches(run)
    held_out = set(all_patches.tile_of_patch[load_split(paths.split_file)["test"]])
    pairs = [pair for pair in find_pairs(all_patches.root) if pair.tile in held_out]
    model = load_model(recorded_model(paths, name), compile=False)
    if modes is None:
        modes = tuple(m for m in predict.SCORE_MODES if run.settings.whole_image_tta or not m.endswith("+tta"))
    scores = predict.score_whole_images(model, pairs, modes)
    shown = pairs[:WHOLE_IMAGE_FIGURES]
    figure = {}
    for k, pair in enumerate(shown):
        for part, array in predict.figure_arrays(model, pair.image, pair.mask).items():
            figure[f"{part}_{k}"] = _thumbnail(array)
    record = {
        "modes": scores,
        "images": [str(pair.image) for pair in pairs],
        "tiles": sorted(held_out),
        "shown": [str(pair.image) for pair in shown],
    }
    atomic_write(paths.whole_images_samples(name), lambda tmp: np.savez_compressed(tmp, **figure))
    write_json(paths.whole_images(name), record)
    return record


def _thumbnail(array):
    """``array`` (RGB uint8) no larger than FIGURE_SIDE on its longest side (nearest: masks stay exact colours)."""
    import numpy as np
    from PIL import Image

    image = Image.fromarray(array)
    image.thumbnail((FIGURE_SIDE, FIGURE_SIDE), Image.NEAREST)
    return np.asarray(image)
