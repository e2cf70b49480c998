"""Checkpoints of a training: ``epoch_NNNN.keras`` (model + optimizer) and ``epoch_NNNN.json``.

The JSON (the training's configuration and history so far) is written after the model, so a
checkpoint counts only when both exist; training resumes from the latest complete one at or
below the epochs asked for, and refuses one written by another configuration.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import keras

from seglib.artifacts import atomic_write, write_json

CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{4,})\.keras$")


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """A saved seglib ``.keras`` model: seglib's model, loss and metric classes registered first."""
    import seglib.losses
    import seglib.metrics
    import seglib.model  # noqa: F401

    return keras.models.load_model(str(path), compile=compile)


def checkpoint_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.keras"


def state_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.json"


def latest_checkpoint(checkpoint_dir: str | os.PathLike, max_epoch: int) -> int:
    """The highest epoch <= ``max_epoch`` with a complete checkpoint (model and state), else 0."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return 0
    best = 0
    for path in checkpoint_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            epoch = int(match.group(1))
            if best < epoch <= max_epoch and state_path(checkpoint_dir, epoch).is_file():
                best = epoch
    return best


def save_checkpoint(checkpoint_dir: Path, epoch: int, model: keras.Model, state: dict) -> Path:
    """Model with optimizer state as ``epoch_NNNN.keras`` and ``state`` as ``epoch_NNNN.json``.

    The JSON is written last: a checkpoint counts only when both files exist.
    """
    path = atomic_write(checkpoint_path(checkpoint_dir, epoch), model.save)
    write_json(state_path(checkpoint_dir, epoch), state)
    return path


def prune_checkpoints(checkpoint_dir: Path, keep_epoch: int) -> None:
    """Delete every checkpoint but ``keep_epoch``'s (a next rung resumes from that one only)."""
    for path in Path(checkpoint_dir).glob("epoch_*"):
        match = CHECKPOINT_PATTERN.match(path.with_suffix(".keras").name)
        if match and int(match.group(1)) != keep_epoch:
            path.unlink(missing_ok=True)


# Settings added to the checkpoint's config after its first release, with the value every
# older checkpoint was trained with: an experiment resumed across a seglib upgrade goes on.
_CONFIG_ADDED = {"dropout_rng": "keras"}


def check_same_config(state_file: Path, saved: dict, current: dict) -> None:
    saved = {**_CONFIG_ADDED, **saved}
    differing = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differing:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise ValueError(
            f"{state_file}: checkpoint was written by a different training configuration "
            f"({details}); use a new checkpoint_dir for a new configuration"
        )
