"""The training recipe: augmentation, the learning-rate schedule, the best epoch, patience.

Each keeps HyperBand's warm start exact (0->k then k->n gives 0->n) and refuses bad values
with their names.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from seglib.settings import SettingError, Settings
from seglib.train import TrainOptions, compile_model, learning_rate_at, restore_checkpoint, train
from seglib.train.augment import augment, draws

QUIET = TrainOptions(verbose=0)
RECIPE = {"augment": "d4+color", "lr_schedule": "cosine", "warmup_epochs": 1}


def small(**changes) -> Settings:
    """A tiny U-Net's settings (batch 8, 4 filters, depth 2), with ``changes``."""
    return Settings(batch_size=8, base_filters=4, depth=2).replace(**changes)


def arrays(n=24, size=32, seed=0):
    """Images whose class is a function of the pixel's colour: a symmetry keeps the pair aligned."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, size, size, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    return x, y


def symmetries(patch: np.ndarray) -> list[np.ndarray]:
    """The 8 images of a square patch under the dihedral group."""
    turns = [np.rot90(patch, k, axes=(0, 1)) for k in range(4)]
    return turns + [np.flip(t, axis=0) for t in turns]


# ---------------------------------------------------------------------------------------------
# Augmentation


def test_none_is_the_identity():
    x, y = arrays()
    assert augment(x, y, "none", 0, 3) == (x, y)


@pytest.mark.parametrize("seed, epoch", [(0, 0), (1, 0), (0, 5)])
def test_d4_moves_mask_with_image_by_one_of_the_eight_symmetries(seed, epoch):
    x, y = arrays()
    x_aug, y_aug = augment(x, y, "d4", seed, epoch)
    np.testing.assert_array_equal(y_aug, np.clip(x_aug[..., 0] * 6, 0, 5).astype(np.uint8))  # aligned
    used = set()
    for k in range(len(x)):
        matches = [j for j, image in enumerate(symmetries(x[k])) if np.array_equal(image, x_aug[k])]
        assert matches, f"patch {k} is not a symmetry of the original"
        assert any(np.array_equal(symmetries(y[k])[j], y_aug[k]) for j in matches)
        used.add(matches[0])
    assert len(used) >= 5  # 24 patches draw most of the 8


def test_colour_jitter_changes_images_only_and_stays_in_range():
    x, y = arrays()
    x_d4, y_d4 = augment(x, y, "d4", 2, 1)
    x_col, y_col = augment(x, y, "d4+color", 2, 1)
    np.testing.assert_array_equal(y_col, y_d4)
    drawn = draws(len(x), 2, 1)
    mean = x_d4.mean(axis=(1, 2, 3), keepdims=True)
    contrast, brightness = drawn["contrast"][:, None, None, None], drawn["brightness"][:, None, None, None]
    np.testing.assert_allclose(x_col, np.clip((x_d4 - mean) * contrast + mean + brightness, 0, 1), atol=1e-6)
    assert x_col.dtype == np.float32 and x_col.min() >= 0 and x_col.max() <= 1
    assert not np.allclose(x_col, x_d4)


def test_augmentation_depends_only_on_seed_and_epoch():
    x, y = arrays()
    first, again = augment(x, y, "d4+color", 0, 2), augment(x, y, "d4+color", 0, 2)
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], augment(x, y, "d4+color", 0, 3)[0])
    assert not np.array_equal(first[0], augment(x, y, "d4+color", 1, 2)[0])


def test_jax_arrays_get_what_numpy_arrays_get():
    jnp = pytest.importorskip("jax.numpy")
    x, y = arrays(n=8)
    x_np, y_np = augment(x, y, "d4+color", 4, 1)
    x_jax, y_jax = augment(jnp.asarray(x), jnp.asarray(y), "d4+color", 4, 1, xp=jnp)
    np.testing.assert_allclose(np.asarray(x_jax), x_np, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(y_jax), y_np)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedule


def test_cosine_warms_up_then_decays_over_its_horizon():
    settings = Settings(learning_rate=0.001, lr_schedule="cosine", warmup_epochs=2)
    rates = [learning_rate_at(settings, epoch, 10) for epoch in range(12)]
    np.testing.assert_allclose(rates[:3], [0.001 / 3, 0.002 / 3, 0.001])
    assert all(a > b for a, b in itertools.pairwise(rates[2:10]))
    assert 0 < rates[9] < 0.0001 and rates[10] == rates[11] == rates[9]  # past the horizon: the last rate
    assert learning_rate_at(Settings(learning_rate=0.001), 7, 10) == 0.001  # constant, the original's


# ---------------------------------------------------------------------------------------------
# Warm start with the recipe on


def test_warm_start_is_exact_with_augmentation_and_cosine_schedule(tmp_path):
    """Fit loop: 0->2 then 2->4 equals 0->4, both on a 6-epoch schedule (R, not the rung's budget)."""
    x, y = arrays()
    data = (x[:16], y[:16], x[16:], y[16:])
    settings = small(**RECIPE)
    straight = train(*data, settings=settings, epochs=4, schedule_epochs=6, options=QUIET)
    train(*data, settings=settings, epochs=2, schedule_epochs=6, checkpoint_dir=tmp_path, options=QUIET)
    resumed = train(*data, settings=settings, epochs=4, schedule_epochs=6, checkpoint_dir=tmp_path, options=QUIET)
    assert resumed.initial_epoch == 2
    assert float(straight.model.optimizer.learning_rate) == pytest.approx(learning_rate_at(settings, 3, 6))
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose(resumed.history[key], straight.history[key], rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(resumed.model.predict(x, verbose=0), straight.model.predict(x, verbose=0), atol=1e-5)
    with pytest.raises(ValueError, match="schedule_epochs: saved 6, now 8"):
        train(*data, settings=settings, epochs=5, schedule_epochs=8, checkpoint_dir=tmp_path, options=QUIET)


JAX_WARM_START = """
import json, sys, tempfile
import numpy as np
from seglib.settings import Settings
from seglib.train import TrainOptions, train

rng = np.random.default_rng(0)
x = rng.random((16, 32, 32, 3), dtype=np.float32)
y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
settings = Settings(batch_size=4, base_filters=4, depth=2, augment="d4+color", lr_schedule="cosine",
                    warmup_epochs=1, keep_epoch="best")
data, options = (x[:12], y[:12], x[12:], y[12:]), TrainOptions(loop="jax", verbose=0)
straight = train(*data, settings=settings, epochs=3, schedule_epochs=5, options=options)
with tempfile.TemporaryDirectory() as folder:
    train(*data, settings=settings, epochs=1, schedule_epochs=5, checkpoint_dir=folder, options=options)
    resumed = train(*data, settings=settings, epochs=3, schedule_epochs=5, checkpoint_dir=folder, options=options)
difference = float(np.abs(resumed.model.predict(x, verbose=0) - straight.model.predict(x, verbose=0)).max())
print(json.dumps({"loop": straight.metadata["loop"], "straight": straight.history["val_loss"],
                  "resumed": resumed.history["val_loss"], "difference": difference,
                  "kept": [straight.kept_epoch, resumed.kept_epoch]}))
"""


@pytest.mark.slow
def test_warm_start_is_exact_with_the_recipe_on_the_jax_loop():
    """KERAS_BACKEND is read at the first keras import: the JAX loop runs in a subprocess."""
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", JAX_WARM_START], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loop"] == "jax"
    np.testing.assert_allclose(result["resumed"], result["straight"], rtol=1e-5)
    assert result["difference"] < 1e-5 and result["kept"][0] == result["kept"][1]


# ---------------------------------------------------------------------------------------------
# The best epoch and patience


def diverging_validation():
    """Validation labels are the training rule reversed: the more it learns, the worse val_loss."""
    x, y = arrays(n=32)
    return x[:24], y[:24], x[24:], (5 - y[24:]).astype(np.uint8)


def restored(model, checkpoint):
    """A new model of ``model``'s architecture holding ``checkpoint``'s weights."""
    import keras

    twin = compile_model(keras.models.clone_model(model), 0.01)
    restore_checkpoint(twin, checkpoint)
    return twin


def test_keep_best_returns_the_best_epochs_weights_also_across_a_resume(tmp_path):
    data = diverging_validation()
    settings = small(keep_epoch="best", learning_rate=0.01)
    result = train(*data, settings=settings, epochs=4, checkpoint_dir=tmp_path / "straight", options=QUIET)
    losses = result.history["val_loss"]
    best = int(np.argmin(losses)) + 1
    assert result.kept_epoch == best < 4, losses
    saved = restored(result.model, tmp_path / "straight" / f"epoch_{best:04d}.npz")
    x = data[2]
    np.testing.assert_allclose(result.model.predict(x, verbose=0), saved.predict(x, verbose=0), atol=1e-6)
    assert result.best_val_loss == min(losses)
    # 0->2 then 2->4: the best epoch's weights come back from the file kept beside the checkpoints.
    folder = tmp_path / "rungs"
    train(*data, settings=settings, epochs=2, checkpoint_dir=folder, options=QUIET)
    for path in folder.glob("epoch_000[1]*"):  # a search prunes the checkpoints below the next rung's start
        path.unlink()
    resumed = train(*data, settings=settings, epochs=4, checkpoint_dir=folder, options=QUIET)
    assert resumed.kept_epoch == best
    np.testing.assert_allclose(resumed.model.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-5)
    last = restored(result.model, tmp_path / "straight" / "epoch_0004.npz")
    assert not np.allclose(last.predict(x, verbose=0), result.model.predict(x, verbose=0), atol=1e-4)


def test_patience_stops_after_epochs_without_a_lower_val_loss(tmp_path):
    data = diverging_validation()
    settings = small(learning_rate=0.01, patience=1, keep_epoch="best")
    result = train(*data, settings=settings, epochs=6, checkpoint_dir=tmp_path, options=QUIET)
    best = int(np.argmin(result.history["val_loss"])) + 1
    assert result.epochs_trained == len(result.history["loss"]) == best + 1 < 6
    assert "stopped early" in result.message
    again = train(*data, settings=settings, epochs=6, checkpoint_dir=tmp_path, options=QUIET)  # a later rung
    assert again.epochs_trained == result.epochs_trained and again.kept_epoch == best


@pytest.mark.parametrize(
    "name, value",
    [
        ("augment", "flips"),
        ("lr_schedule", "step"),
        ("keep_epoch", "first"),
        ("warmup_epochs", -1),
        ("patience", 0),
        ("whole_image_tta", "no"),
        ("whole_image_tta", 1),
    ],
)
def test_bad_recipe_values_are_refused_with_their_names(name, value):
    with pytest.raises(SettingError, match=f"{name}={value!r}: expected"):
        Settings(**{name: value})
