"""Checkpoints of a training: ``epoch_NNNN.npz`` (weights + optimizer state) and ``epoch_NNNN.json``.

The arrays are the model's weights and its optimizer's variables, restored into a model of the
same configuration (the JSON holds the configuration and the history so far, and a checkpoint
of another configuration is refused). Arrays rather than a ``.keras`` archive, because a
checkpoint is written after every epoch: a ``.keras`` file of the quick profile's U-Net takes
0.08 s to write on a 2-core CPU, the arrays 0.012 s (``benchmarks/bench_checkpoints.py``); a
training's finished model is saved as ``model.keras`` once.

The JSON is written after the arrays, so a checkpoint counts only when both exist; training
resumes from the latest complete one at or below the epochs asked for.

A checkpoint that cannot be read (a truncated or damaged file: a disk, a sync or a copy gone
wrong; seglib's own writes are atomic) is set aside as ``epoch_NNNN.npz.damaged``, with a
warning naming it, and training resumes from the previous readable one or starts again: a
damaged file costs epochs, never the training's result.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import keras
import numpy as np

from seglib.artifacts import ArtifactError, atomic_write, read_json, set_aside, write_json
from seglib.data import check_model_file, zip_problem

log = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{4,})\.npz$")
BEST_PATTERN = re.compile(r"^best_epoch_(\d{4,})\.npz$")
SET_ASIDE = "seglib sets it aside"  # the end of a damaged checkpoint's warning: "... as NAME.damaged"


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """A saved seglib ``.keras`` model: seglib's model, loss and metric classes registered first.

    A file Keras cannot read is refused first with a DataError naming it and what is wrong
    (Keras itself says "File not found" for a truncated one).
    """
    import seglib.losses
    import seglib.metrics
    import seglib.model  # noqa: F401

    return keras.models.load_model(str(check_model_file(path)), compile=compile)


def checkpoint_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.npz"


def state_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.json"


def latest_checkpoint(checkpoint_dir: str | os.PathLike, max_epoch: int) -> int:
    """The highest epoch <= ``max_epoch`` with a complete, readable checkpoint, else 0.

    Complete: both files exist. Readable: the arrays are a whole zip archive and the state
    is JSON. The complete ones above it that are not readable are set aside
    (``NAME.damaged``) with a warning naming each.
    """
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return 0
    epochs = []
    for path in checkpoint_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match and int(match.group(1)) <= max_epoch and state_path(checkpoint_dir, int(match.group(1))).is_file():
            epochs.append(int(match.group(1)))
    damaged, found = [], 0
    for epoch in sorted(epochs, reverse=True):
        problem = _unreadable(checkpoint_dir, epoch)
        if problem is None:
            found = epoch
            break
        damaged.append(problem)
    for path, problem in damaged:
        log.warning(
            "%s as %s: training %s",
            problem,
            set_aside(path).name,
            f"resumes from epoch {found}" if found else "starts again from epoch 0",
        )
    return found


def _unreadable(checkpoint_dir: Path, epoch: int) -> tuple[Path, str] | None:
    """(file, what is wrong with it) for a checkpoint that cannot be read, else None."""
    arrays = checkpoint_path(checkpoint_dir, epoch)
    problem = zip_problem(arrays)
    if problem is not None:
        return arrays, f"cannot read checkpoint {arrays}: {problem}; {SET_ASIDE}"
    state = state_path(checkpoint_dir, epoch)
    try:
        read_json(state)
    except ArtifactError:
        return state, f"cannot read checkpoint state {state}: not valid JSON; {SET_ASIDE}"
    return None


def save_checkpoint(checkpoint_dir: Path, epoch: int, model: keras.Model, state: dict) -> Path:
    """Weights and optimizer variables as ``epoch_NNNN.npz``, then ``state`` as ``epoch_NNNN.json``.

    The JSON is written last: a checkpoint counts only when both files exist.
    """
    arrays = {f"weight_{k:04d}": w for k, w in enumerate(model.get_weights())}
    for k, variable in enumerate(model.optimizer.variables):
        arrays[f"optimizer_{k:04d}"] = keras.ops.convert_to_numpy(variable)
    path = atomic_write(checkpoint_path(checkpoint_dir, epoch), lambda tmp: np.savez(tmp, **arrays))
    write_json(state_path(checkpoint_dir, epoch), state)
    return path


def _saved(path: Path, kind: str) -> list[np.ndarray]:
    """The ``kind`` ("weight" or "optimizer") arrays of a checkpoint, in their saved order."""
    with np.load(path) as saved:
        return [saved[name] for name in sorted(saved.files) if name.startswith(kind + "_")]


def restore_checkpoint(model: keras.Model, path: Path) -> None:
    """A checkpoint's weights and optimizer state, into a compiled ``model`` of its configuration."""
    model.set_weights(_saved(path, "weight"))
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    saved, variables = _saved(path, "optimizer"), model.optimizer.variables
    if len(saved) != len(variables):
        raise ValueError(
            f"{path}: holds {len(saved)} optimizer variables, the model's optimizer has {len(variables)}; "
            "a checkpoint resumes only the configuration that wrote it"
        )
    for variable, value in zip(variables, saved):
        variable.assign(value)


def prune_checkpoints(checkpoint_dir: Path, keep_epoch: int) -> None:
    """Delete the checkpoints below ``keep_epoch`` (a next rung resumes from that one only).

    Later ones stay: they are a later rung's, when a pair is trained again after it ran.
    """
    for path in Path(checkpoint_dir).glob("epoch_*"):
        match = CHECKPOINT_PATTERN.match(path.with_suffix(".npz").name)
        if match and int(match.group(1)) < keep_epoch:
            path.unlink(missing_ok=True)


def best_path(checkpoint_dir: Path, epoch: int) -> Path:
    return Path(checkpoint_dir) / f"best_epoch_{epoch:04d}.npz"


def save_best(checkpoint_dir: Path, epoch: int, weights: list[np.ndarray]) -> Path:
    """The weights of the best epoch so far (``keep_epoch="best"``), replacing the earlier best's.

    A later rung resumes from the last epoch's checkpoint but must still return the best
    epoch's weights, which may be an earlier rung's.
    """
    path = atomic_write(best_path(checkpoint_dir, epoch), lambda tmp: np.savez(tmp, *weights))
    forget_best(checkpoint_dir, keep=path)
    return path


def load_best(checkpoint_dir: Path, epoch: int) -> list[np.ndarray] | None:
    """The weights saved for ``epoch`` as the best one, from its best file or its checkpoint; else None."""
    path = best_path(checkpoint_dir, epoch)
    if path.is_file():
        with np.load(path) as saved:
            return [saved[f"arr_{k}"] for k in range(len(saved.files))]
    if checkpoint_path(checkpoint_dir, epoch).is_file():
        return _saved(checkpoint_path(checkpoint_dir, epoch), "weight")
    return None


def forget_best(checkpoint_dir: Path, keep: Path | None = None) -> None:
    """Delete the best-epoch weight files except ``keep``."""
    for path in Path(checkpoint_dir).glob("best_epoch_*"):
        if BEST_PATTERN.match(path.name) and path != keep:
            path.unlink(missing_ok=True)


def forget_checkpoints(checkpoint_dir: Path, after: int, up_to: int) -> list[int]:
    """Delete the checkpoints of epochs ``after`` < epoch <= ``up_to``; return those epochs.

    A trial calls this for epochs its own records do not hold (its folder was deleted, or it
    was stopped between a checkpoint and its record): it trains them again, writing them anew.
    """
    forgotten = set()
    for path in Path(checkpoint_dir).glob("epoch_*"):
        match = CHECKPOINT_PATTERN.match(path.with_suffix(".npz").name)
        if match and after < int(match.group(1)) <= up_to:
            path.unlink(missing_ok=True)
            forgotten.add(int(match.group(1)))
    return sorted(forgotten)


# Settings added to the checkpoint's config after its first release, with the value every
# older checkpoint was trained with: an experiment resumed across a seglib upgrade goes on.
_CONFIG_ADDED = {
    "dropout_rng": "keras",
    "augment": "none",
    "lr_schedule": "constant",
    "warmup_epochs": 0,
    "schedule_epochs": None,
}


def check_same_config(state_file: Path, saved: dict, current: dict) -> None:
    saved = {**_CONFIG_ADDED, **saved}
    differing = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differing:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise ValueError(
            f"{state_file}: checkpoint was written by a different training configuration "
            f"({details}); use a new checkpoint_dir for a new configuration"
        )
