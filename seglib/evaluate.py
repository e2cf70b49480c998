"""A trained model's record in the run folder: its file, its scores on each split, samples.

What notebook 02 (the baseline) and notebook 03 (the tuned model) leave for the report:
``model.keras``, ``metrics.json`` (:class:`seglib.artifacts.ModelRecord`) and
``samples.npz`` (the same ten validation patches for every model of a run, with the model's
prediction). The precision-recall curve and the samples come from the validation set, as in
the seed report; IoU is also measured on the held-out test set.
"""

from __future__ import annotations

import numpy as np

from seglib.artifacts import ModelRecord, RunPaths, atomic_write, write_model_record
from seglib.data import Arrays, subsample, write_recipe
from seglib.metrics import evaluate, pr_curve
from seglib.train import TrainResult

N_SAMPLES = 10


def record_model(paths: RunPaths, name: str, result: TrainResult, arrays: Arrays, params: dict) -> ModelRecord:
    """Save ``result``'s model under ``name/`` with its evaluation on train, validation and test."""
    model = result.model
    atomic_write(paths.model_file(name), model.save)
    write_recipe(paths.model_file(name), result.metadata.get("recipe", {}))
    record = ModelRecord(
        params=dict(params),
        history={k: [float(v) for v in vs] for k, vs in result.history.items()},
        epochs_trained=result.epochs_trained,
        seconds=result.seconds,
        diverged=result.diverged,
        message=result.message,
        best_val_loss=result.best_val_loss,
        backend=result.metadata["backend"],
        loop=result.metadata["loop"],
    )
    for split in ("train", "val", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        setattr(record, split, evaluate(model, x, y) if len(x) else None)
    probs = probabilities(model, arrays.x_val)
    record.pr_curve = pr_curve(arrays.y_val, probs)
    write_model_record(paths.metrics_file(name), record)
    pick = subsample(len(arrays.x_val), N_SAMPLES)
    atomic_write(
        paths.samples_file(name),
        lambda tmp: np.savez_compressed(
            tmp,
            indices=pick,
            images=arrays.images_val[pick],
            labels=np.asarray(arrays.y_val)[pick].astype(np.uint8),
            predictions=probs[pick].argmax(-1).astype(np.uint8),
        ),
    )
    return record


def probabilities(model, x, batch_size: int = 16) -> np.ndarray:
    """Softmax outputs in batches, as float32 numpy."""
    parts = [
        np.asarray(model.predict_on_batch(x[i : i + batch_size]), dtype=np.float32)
        for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
