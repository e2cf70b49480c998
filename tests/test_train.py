"""train(): resume equivalence, checkpoints, the NaN guard, hooks, seeds and a learnable baseline."""

from __future__ import annotations

import json
import logging
import math
import os

import keras
import numpy as np
import pytest

from seglib.metrics import evaluate
from seglib.settings import Settings
from seglib.train import TrainOptions, TrainResult, epoch_order, latest_checkpoint, load_model, train

QUIET = TrainOptions(verbose=0)


def small(**changes) -> Settings:
    """A tiny U-Net's settings (batch 8, 4 filters, depth 2), with ``changes``."""
    return Settings(batch_size=8, base_filters=4, depth=2).replace(**changes)


def random_arrays(n=24, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    return x, y


def learnable_arrays(n=48, size=32, seed=0):
    """Class = which of six colours a pixel has (plus noise); class 1 is the majority (~45%)."""
    rng = np.random.default_rng(seed)
    colours = rng.random((6, 3), dtype=np.float32)
    shares = np.array([0.1, 0.45, 0.15, 0.1, 0.1, 0.1])
    y = rng.choice(6, size=(n, size // 4, size // 4), p=shares).repeat(4, 1).repeat(4, 2).astype(np.uint8)
    x = colours[y] + rng.normal(0, 0.05, size=(n, size, size, 3)).astype(np.float32)
    return x.astype(np.float32), y


def same_history(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for key in a:
        if not key.endswith("_seconds"):  # timings
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_train_returns_history_and_result_fields():
    x, y = random_arrays()
    seen = []
    result = train(
        x[:16],
        y[:16],
        x[16:],
        y[16:],
        settings=small(),
        epochs=2,
        on_epoch_end=lambda e, logs: seen.append((e, logs)),
        options=QUIET,
    )
    assert isinstance(result, TrainResult) and not result.diverged
    assert (result.epochs_trained, result.initial_epoch) == (2, 0)
    assert len(result.history["loss"]) == len(result.history["val_loss"]) == 2
    assert {"accuracy", "jaccard", "precision", "recall", "mean_iou", "val_mean_iou"} <= set(result.history)
    assert result.best_val_loss == min(result.history["val_loss"])
    assert [e for e, _ in seen] == [0, 1]
    assert seen[1][1]["val_loss"] == result.history["val_loss"][1]
    assert all(isinstance(v, float) for v in seen[0][1].values())
    assert result.seconds > 0


def test_same_seed_same_run_and_order_depends_on_seed_and_epoch():
    x, y = random_arrays()
    a = train(x, y, settings=small(seed=3), epochs=1, options=QUIET)
    b = train(x, y, settings=small(seed=3), epochs=1, options=QUIET)
    same_history(a.history, b.history)
    assert np.array_equal(epoch_order(10, 3, 1), epoch_order(10, 3, 1))
    assert not np.array_equal(epoch_order(100, 3, 1), epoch_order(100, 3, 2))


def test_resume_k_then_n_equals_zero_to_n(tmp_path):
    """HyperBand's warm start: 0->2 then 2->4 from the checkpoint gives what 0->4 gives."""
    x, y = random_arrays()
    args = (x[:16], y[:16], x[16:], y[16:])
    straight = train(*args, settings=small(), epochs=4, options=QUIET)
    first = train(*args, settings=small(), epochs=2, checkpoint_dir=tmp_path, options=QUIET)
    hooks = []
    resumed = train(
        *args,
        settings=small(),
        epochs=4,
        checkpoint_dir=tmp_path,
        on_epoch_end=lambda epoch, logs: hooks.append(epoch),
        options=QUIET,
    )
    assert (first.epochs_trained, resumed.initial_epoch, resumed.epochs_trained) == (2, 2, 4)
    assert straight.metadata["loop"] == ("jax" if keras.backend.backend() == "jax" else "fit")  # "auto"
    assert hooks == [2, 3]
    same_history(resumed.history, straight.history)
    np.testing.assert_allclose(resumed.model.predict(x, verbose=0), straight.model.predict(x, verbose=0), atol=1e-5)
    assert latest_checkpoint(tmp_path, 3) == 3 and latest_checkpoint(tmp_path, 99) == 4
    # Asking for fewer epochs than checkpointed returns that epoch's model without training.
    again = train(*args, settings=small(), epochs=3, checkpoint_dir=tmp_path, options=QUIET)
    assert (again.initial_epoch, again.epochs_trained, len(again.history["loss"])) == (3, 3, 3)
    state = json.loads((tmp_path / "epoch_0004.json").read_text())
    assert state["epoch"] == 4 and len(state["history"]["loss"]) == 4
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_incomplete_checkpoint_is_ignored_and_other_config_is_refused(tmp_path):
    x, y = random_arrays(n=16)
    train(x, y, settings=small(), epochs=1, checkpoint_dir=tmp_path, options=QUIET)
    (tmp_path / "epoch_0002.npz").write_bytes(b"half-written")  # no state file: not a checkpoint
    assert latest_checkpoint(tmp_path, 5) == 1
    with pytest.raises(ValueError, match=r"epoch_0001\.json.*learning_rate: saved 0\.007, now 0\.001"):
        train(x, y, settings=small(learning_rate=0.001), epochs=2, checkpoint_dir=tmp_path, options=QUIET)


def test_a_checkpoint_restores_weights_and_optimizer_state_into_a_new_model(tmp_path):
    from seglib.model import build_unet
    from seglib.train import compile_model, restore_checkpoint

    x, y = random_arrays(n=16)
    result = train(x, y, settings=small(), epochs=1, checkpoint_dir=tmp_path, options=QUIET)
    fresh = compile_model(build_unet(input_shape=x.shape[1:], base_filters=4, depth=2), 0.007)
    restore_checkpoint(fresh, tmp_path / "epoch_0001.npz")
    assert int(keras.ops.convert_to_numpy(fresh.optimizer.iterations)) == 2  # 16 patches / batch 8
    for restored, trained in zip(fresh.optimizer.variables, result.model.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored), keras.ops.convert_to_numpy(trained))
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), result.model.predict(x, verbose=0))
    other = compile_model(build_unet(input_shape=x.shape[1:], base_filters=4, depth=3), 0.007)
    with pytest.raises(ValueError):  # another architecture's weights do not fit
        restore_checkpoint(other, tmp_path / "epoch_0001.npz")


def test_a_damaged_checkpoint_is_set_aside_and_training_resumes_from_the_one_before(tmp_path, caplog):
    """A truncated latest checkpoint costs its epoch, not the result: 0->1, then 1->3, equals 0->3."""
    x, y = random_arrays(n=16)
    args = (x, y, x[:8], y[:8])
    straight = train(*args, settings=small(), epochs=3, options=QUIET)
    train(*args, settings=small(), epochs=2, checkpoint_dir=tmp_path, options=QUIET)
    damaged = tmp_path / "epoch_0002.npz"
    half = damaged.stat().st_size // 2
    os.truncate(damaged, half)
    with caplog.at_level(logging.WARNING, logger="seglib.train.checkpoints"):
        resumed = train(*args, settings=small(), epochs=3, checkpoint_dir=tmp_path, options=QUIET)
    assert (resumed.initial_epoch, resumed.epochs_trained) == (1, 3)
    assert f"cannot read checkpoint {damaged}: truncated zip" in caplog.text, caplog.text
    assert "sets it aside as epoch_0002.npz.damaged: training resumes from epoch 1" in caplog.text, caplog.text
    assert (tmp_path / "epoch_0002.npz.damaged").stat().st_size == half  # kept for a look, never read again
    same_history(resumed.history, straight.history)
    assert latest_checkpoint(tmp_path, 3) == 3  # written anew


def test_when_no_checkpoint_can_be_read_training_starts_again(tmp_path, caplog):
    x, y = random_arrays(n=16)
    train(x, y, settings=small(), epochs=2, checkpoint_dir=tmp_path, options=QUIET)
    (tmp_path / "epoch_0002.json").write_text('{"epoch": 2, "con')
    (tmp_path / "epoch_0001.npz").write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="seglib.train.checkpoints"):
        result = train(x, y, settings=small(), epochs=2, checkpoint_dir=tmp_path, options=QUIET)
    assert (result.initial_epoch, result.epochs_trained, len(result.history["loss"])) == (0, 2, 2)
    assert sorted(p.name for p in tmp_path.glob("*.damaged")) == ["epoch_0001.npz.damaged", "epoch_0002.json.damaged"]
    assert f"cannot read checkpoint state {tmp_path / 'epoch_0002.json'}: not valid JSON" in caplog.text
    assert f"cannot read checkpoint {tmp_path / 'epoch_0001.npz'}: empty file" in caplog.text
    assert caplog.text.count("training starts again from epoch 0") == 2


def test_load_model_names_a_damaged_file_instead_of_file_not_found(tmp_path):
    from seglib.data import DataError

    x, y = random_arrays(n=16)
    path = tmp_path / "model.keras"
    train(x, y, settings=small(), epochs=1, options=QUIET).model.save(path)
    os.truncate(path, 1000)
    with pytest.raises(DataError, match=f"cannot read model {path}: truncated zip .*; retrain it or restore the file"):
        load_model(path)


def test_pruning_keeps_later_checkpoints_and_forgetting_takes_a_range(tmp_path):
    """A next rung resumes from the kept one; a later rung's (a pair trained again after it) stay."""
    from seglib.train import forget_checkpoints, prune_checkpoints

    for epoch in (1, 2, 3, 9):
        for suffix in (".npz", ".json"):
            (tmp_path / f"epoch_{epoch:04d}{suffix}").write_text("")
    (tmp_path / "epoch_0001.npz.damaged").write_text("")
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("epoch_*.npz*")) == [
        "epoch_0001.npz.damaged",
        "epoch_0002.npz",
        "epoch_0003.npz",
        "epoch_0009.npz",
    ]
    assert forget_checkpoints(tmp_path, 2, 3) == [3]
    assert sorted(p.name for p in tmp_path.glob("epoch_*")) == [
        "epoch_0001.npz.damaged",
        "epoch_0002.json",
        "epoch_0002.npz",
        "epoch_0009.json",
        "epoch_0009.npz",
    ]


def test_diverging_run_stops_with_flag_and_no_exception(tmp_path, caplog):
    """Linear activations with a huge step overflow the logits to NaN in the first epoch.

    On nets this small, learning rate 0.1 (the original's diverged trials had 0.014-0.089)
    saturates the softmax at a loss near 1.53 instead of overflowing within a few epochs:
    a huge step makes the overflow certain in the first epoch.
    """
    x, y = random_arrays()
    seen = []
    result = train(
        x[:16],
        y[:16],
        x[16:],
        y[16:],
        settings=small(activation=None, learning_rate=100.0),
        epochs=3,
        checkpoint_dir=tmp_path,
        on_epoch_end=lambda epoch, logs: seen.append(epoch),
        options=QUIET,
    )
    assert result.diverged and result.epochs_trained == 0
    assert "diverged in epoch 1 of 3" in result.message and "diverged" in caplog.text
    assert math.isnan(result.history["loss"][-1])
    assert result.best_val_loss is None and seen == []
    assert latest_checkpoint(tmp_path, 3) == 0


def test_mixed_precision_trains_and_keeps_float32_outputs():
    x, y = random_arrays(n=8, size=16)
    result = train(x, y, settings=small(precision="bf16"), epochs=1, options=QUIET)
    assert result.model.get_layer("down0_conv1").compute_dtype == "bfloat16"
    assert result.model.output.dtype == "float32"
    assert math.isfinite(result.history["loss"][0])


def test_training_beats_the_majority_class_on_learnable_data():
    x, y = learnable_arrays()
    majority = np.bincount(y.ravel()).max() / y.size
    result = train(
        x[:40], y[:40], x[40:], y[40:], settings=small(base_filters=8, learning_rate=0.01), epochs=8, options=QUIET
    )
    scores = evaluate(result.model, x[40:], y[40:])
    assert scores["accuracy"] > majority + 0.2, (scores["accuracy"], majority)
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_validation_loss_is_taken_in_the_trials_batch_size():
    """Dice pools over a batch, so the batch size is part of the validation loss: every loop
    validates in the trial's own (a dataset-fed ``fit`` would default to batches of 32)."""
    x, y = learnable_arrays(n=60, size=16)
    settings = small(batch_size=3, learning_rate=0.01)
    result = train(x[:20], y[:20], x[20:], y[20:], settings=settings, epochs=2, options=QUIET)
    in_threes = evaluate(result.model, x[20:], y[20:], batch_size=3)["loss"]
    in_32s = evaluate(result.model, x[20:], y[20:], batch_size=32)["loss"]
    assert abs(in_32s - in_threes) > 1e-4, "this data cannot tell the batch sizes apart"
    assert result.history["val_loss"][-1] == pytest.approx(in_threes, rel=1e-6)


@pytest.mark.slow
def test_short_real_data_baseline_beats_the_majority_class(real_data_root):
    """Reduced CPU profile on the real tiles (64x64 patches, small net, held-out val tiles).

    Measured (TF, CPU): val accuracy 0.446 vs 0.346 for the majority class (Land), mean IoU
    0.218 vs 0.058, in about 130 s. With 256 patches and 6 epochs it did not beat it (0.347).
    """
    from seglib.data import prepare, split

    patches = prepare(real_data_root, 64)
    parts = split(patches, "tiles")
    rng = np.random.default_rng(0)
    train_index = np.sort(rng.choice(parts["train"], 1024, replace=False))
    val_index = np.sort(rng.choice(parts["val"], 256, replace=False))
    x_val, y_val = patches.scaled(val_index), np.asarray(patches.labels[val_index])
    result = train(
        patches.scaled(train_index),
        np.asarray(patches.labels[train_index]),
        x_val,
        y_val,
        settings=Settings(batch_size=16, learning_rate=0.003, base_filters=8, depth=3),
        epochs=8,
        options=QUIET,
    )
    scores = evaluate(result.model, x_val, y_val)
    shares = np.bincount(y_val.ravel(), minlength=6) / y_val.size
    majority_mean_iou = shares.max() / (shares > 0).sum()  # IoU of "all one class", averaged
    assert not result.diverged
    assert scores["accuracy"] > shares.max() + 0.05, (scores, shares)
    assert scores["mean_iou"] > 2 * majority_mean_iou, (scores, shares)


def test_checkpoint_from_before_a_setting_existed_still_resumes(tmp_path):
    """A checkpoint written before ``dropout_rng`` existed was trained with its default."""
    from seglib.train.checkpoints import check_same_config

    current = {"batch_size": 4, "dropout_rng": "keras"}
    check_same_config(tmp_path / "epoch_0002.json", {"batch_size": 4}, current)
    with pytest.raises(ValueError, match="dropout_rng: saved 'keras', now 'rbg'"):
        check_same_config(tmp_path / "epoch_0002.json", {"batch_size": 4}, {**current, "dropout_rng": "rbg"})
