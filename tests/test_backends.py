"""The same model, losses and metrics on TensorFlow and JAX; seglib without TensorFlow.

KERAS_BACKEND is read at the first keras import, so the other backend runs in a subprocess
on the same saved weights and the same arrays.
"""

from __future__ import annotations

import textwrap

import keras
import numpy as np
import pytest
from script_helpers import run_python

from seglib.losses import CategoricalFocalLoss, DiceLoss, dice_focal_loss
from seglib.metrics import evaluate, training_metrics
from seglib.model import build_unet

OTHER = {"tensorflow": "jax", "jax": "tensorflow"}.get(keras.backend.backend(), "tensorflow")

# Values computed from saved arrays, printed as JSON on the last line.
COMPUTE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import keras
    from seglib.train import load_model
    model = load_model(sys.argv[2])
    from keras import ops
    from seglib.losses import CategoricalFocalLoss, DiceLoss, dice_focal_loss
    from seglib.metrics import evaluate
    from seglib.model import build_unet

    arrays = np.load(sys.argv[1])
    labels, probs = arrays["labels"], arrays["probs"]
    losses = {name: float(ops.convert_to_numpy(loss(labels, probs))) for name, loss in
              [("dice", DiceLoss()), ("focal", CategoricalFocalLoss()), ("total", dice_focal_loss())]}
    result = {"backend": keras.backend.backend(), "losses": losses,
              "evaluate": evaluate(model, arrays["x"], arrays["y"], batch_size=2),
              "predict": model.predict(arrays["x"], verbose=0).tolist(),
              "initial_weights": [w.tolist() for w in build_unet(
                  input_shape=(32, 32, 3), base_filters=4, depth=2, seed=5).get_weights()]}
    print(json.dumps(result))
    """
)


def local_values(arrays: dict, model) -> dict:
    labels, probs = arrays["labels"], arrays["probs"]
    losses = {
        name: float(keras.ops.convert_to_numpy(loss(labels, probs)))
        for name, loss in [("dice", DiceLoss()), ("focal", CategoricalFocalLoss()), ("total", dice_focal_loss())]
    }
    return {
        "losses": losses,
        "evaluate": evaluate(model, arrays["x"], arrays["y"], batch_size=2),
        "predict": model.predict(arrays["x"], verbose=0),
    }


def test_other_backend_gives_the_same_losses_metrics_and_predictions(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 16, 16, 6)).astype(np.float32)
    arrays = {
        "labels": rng.integers(0, 6, size=(2, 16, 16)).astype(np.uint8),
        "probs": (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32),
        "x": rng.random((4, 32, 32, 3), dtype=np.float32),
        "y": rng.integers(0, 6, size=(4, 32, 32)).astype(np.uint8),
    }
    np.savez(tmp_path / "arrays.npz", **arrays)
    model = build_unet(input_shape=(32, 32, 3), base_filters=4, depth=2, seed=0)
    model.compile(optimizer="adam", loss=dice_focal_loss(), metrics=training_metrics())
    model.save(tmp_path / "model.keras")

    other = run_python(COMPUTE, str(tmp_path / "arrays.npz"), str(tmp_path / "model.keras"), backend=OTHER)
    here = local_values(arrays, model)
    assert other["backend"] == OTHER
    for name, value in here["losses"].items():
        assert other["losses"][name] == pytest.approx(value, abs=1e-5), name
    np.testing.assert_allclose(np.array(other["predict"]), here["predict"], atol=1e-5)
    for key in ("loss", "accuracy", "jaccard", "precision", "recall", "mean_iou"):
        assert other["evaluate"][key] == pytest.approx(here["evaluate"][key], abs=1e-5), key
    assert other["evaluate"]["confusion"] == here["evaluate"]["confusion"]
    seeded = build_unet(input_shape=(32, 32, 3), base_filters=4, depth=2, seed=5).get_weights()
    for theirs, ours in zip(other["initial_weights"], seeded):
        np.testing.assert_array_equal(np.array(theirs, dtype=np.float32), ours)


NO_TENSORFLOW = textwrap.dedent(
    """
    import json, sys, tempfile
    sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
    import numpy as np
    import seglib, seglib.model, seglib.losses, seglib.metrics
    from seglib.settings import Settings
    from seglib.train import TrainOptions, train
    import keras

    rng = np.random.default_rng(0)
    x = rng.random((16, 32, 32, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    small = dict(settings=Settings(batch_size=4, base_filters=4, depth=2))
    data = (x[:12], y[:12], x[12:], y[12:])
    with tempfile.TemporaryDirectory() as folder:
        straight = train(*data, epochs=2, options=TrainOptions(loop="fit", verbose=0), **small)
        scan = train(*data, epochs=2, options=TrainOptions(loop="jax", steps_per_execution=0, verbose=0), **small)
        train(*data, epochs=1, checkpoint_dir=folder, options=TrainOptions(loop="jax", verbose=0), **small)
        resumed = train(*data, epochs=2, checkpoint_dir=folder, options=TrainOptions(verbose=0), **small)  # "auto"
        same = float(np.abs(resumed.model.predict(x, verbose=0) - straight.model.predict(x, verbose=0)).max())
    with tempfile.TemporaryDirectory() as cache:
        options = TrainOptions(loop="jax", dropout_rng="rbg", compile_cache_dir=cache, verbose=0)
        rbg = train(*data, epochs=1, options=options, **small)
        import os
        cached = len(os.listdir(cache))
    print(json.dumps({"backend": keras.backend.backend(), "tensorflow_loaded": "tensorflow" in sys.modules
                      and sys.modules["tensorflow"] is not None, "straight": straight.history["val_loss"],
                      "train_loss": [straight.history["loss"], resumed.history["loss"]],
                      "resumed": resumed.history["val_loss"], "prediction_difference": same,
                      "diverged": straight.diverged, "rbg_loss": rbg.history["loss"], "cached_programs": cached,
                      "scan": scan.history["val_loss"], "auto_loop": resumed.metadata["loop"]}))
    """
)


@pytest.mark.slow
def test_seglib_trains_and_resumes_on_jax_with_tensorflow_unimportable():
    """With TensorFlow unimportable: fit 0->2 equals loop='jax' 0->1 then 1->2 (resumed).

    The resume runs with the default loop, "auto", which must pick the jax loop here.

    Also: dropout_rng='rbg' trains, and compile_cache_dir fills JAX's persistent cache even
    though this process compiled other programs before.
    """
    result = run_python(NO_TENSORFLOW, backend="jax")
    assert result["backend"] == "jax" and not result["tensorflow_loaded"]
    assert result["auto_loop"] == "jax"
    assert not result["diverged"] and all(np.isfinite(result["straight"]))
    np.testing.assert_allclose(result["resumed"], result["straight"], rtol=1e-5)
    np.testing.assert_allclose(result["scan"], result["straight"], rtol=1e-5)  # whole epoch in one call
    np.testing.assert_allclose(*result["train_loss"], rtol=1e-5)
    assert result["prediction_difference"] < 1e-5
    assert np.isfinite(result["rbg_loss"]).all()
    assert result["cached_programs"] > 0  # JAX's persistent compilation cache was written


# The jax loop as it runs on a GPU, on the CPU: batches padded to 8 and calls of 4 steps, for
# batch sizes 5, 6 and 7 (20, 16 and 14 steps an epoch: the last needs two steps of filling)
# on one pooled model; against the same padded steps one a call, and unpadded.
GPU_WAY = textwrap.dedent(
    """
    import json
    import numpy as np
    from seglib.settings import Settings
    from seglib.train import TrainOptions, train
    from seglib.train.jax_loop import evaluate, padded_size
    from seglib.train.loop import run_config
    from seglib.train.packed import compiled_unet
    from seglib.train.pool import ModelPool, device_put

    rng = np.random.default_rng(0)
    x = rng.random((124, 16, 16, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    data = (x[:100], y[:100], x[100:], y[100:])
    pool = ModelPool()
    gpu = TrainOptions(loop="jax", verbose=0, pad_batches=True, steps_per_execution=4, pool=pool)
    per_step = TrainOptions(loop="jax", verbose=0, pad_batches=True, steps_per_execution=1)
    unpadded = TrainOptions(loop="jax", verbose=0, pad_batches=False, steps_per_execution=1)
    result, models = {}, set()
    for batch in (5, 6, 7):
        settings = Settings(batch_size=batch, base_filters=2, depth=2, patch_size=16, learning_rate=0.02)
        runs = [train(*data, settings=settings, epochs=2, options=o) for o in (gpu, per_step, unpadded)]
        weights = [r.model.get_weights() for r in runs[:2]]
        result[batch] = {
            "losses": [r.history["loss"] for r in runs],
            "weights_difference": max(float(np.abs(a - b).max()) for a, b in zip(*weights)),
            "validation": [{k: v for k, v in r.history.items() if k.startswith("val_")} for r in (runs[0], runs[2])],
        }
        models.add(id(runs[0].model))
    scan, _ = runs[0].model._seglib_programs[True]
    # Padded evaluation against Keras' on a model whose predictions vary and pass 0.5
    model = compiled_unet(settings.replace(activation="tanh"), run_config(settings, 100, "keras"), x)
    kernel, bias = model.layers[-1].weights
    kernel.assign(np.random.default_rng(1).normal(size=kernel.shape).astype(np.float32) * 30)
    bias.assign(np.array([0, 0, 3, 0, 1, 0], np.float32))
    on_device = device_put(x[100:], y[100:])
    evaluated = {b: [evaluate(model, *on_device, b, padded_size(b)),
                     model.evaluate(x[100:], y[100:], batch_size=b, verbose=0, return_dict=True)]
                 for b in (1, 3, 5, 8, 13)}
    print(json.dumps({"runs": result, "models": len(models), "scan_executables": scan._cache_size(),
                      "evaluated": {b: [{k: float(v) for k, v in e.items()} for e in pair]
                                    for b, pair in evaluated.items()},
                      "evaluation_executables": model._seglib_evaluation["program"]._cache_size()}))
    """
)


@pytest.fixture(scope="module")
def gpu_way() -> dict:
    return run_python(GPU_WAY, backend="jax")


@pytest.mark.slow
def test_the_gpu_default_compiles_one_training_program_for_every_batch_size_of_a_padded_shape(gpu_way):
    """Every call has one shape: the epoch's last call is filled with steps that change nothing."""
    result = gpu_way
    assert result["models"] == 1  # the pool lent one model to the three trainings
    assert result["scan_executables"] == 1  # 20, 16 and 14 steps an epoch: one program
    for batch, run in result["runs"].items():
        # A filling step that trained would move every weight by about the learning rate (Adam).
        assert run["weights_difference"] < 1e-5, batch
        gpu, per_step, unpadded = run["losses"]
        np.testing.assert_allclose(gpu, per_step, rtol=1e-6, err_msg=f"batch {batch}")
        np.testing.assert_allclose(gpu, unpadded, rtol=1e-5, err_msg=f"batch {batch}")
        padded, keras_evaluated = run["validation"]
        assert set(padded) == set(keras_evaluated) and "val_mean_iou" in padded
        for key in padded:
            np.testing.assert_allclose(padded[key], keras_evaluated[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.slow
def test_padded_evaluation_gives_keras_scores_from_one_program_per_padded_shape(gpu_way):
    """24 validation patches at batch 1, 3, 5, 8 and 13: Keras compiles a program per batch shape."""
    result = gpu_way
    assert result["evaluation_executables"] == 2  # shapes 8 and 16
    for batch, (padded, keras_evaluated) in result["evaluated"].items():
        assert set(padded) == set(keras_evaluated)
        for key, value in keras_evaluated.items():
            np.testing.assert_allclose(padded[key], value, rtol=1e-5, atol=1e-6, err_msg=f"batch {batch}: {key}")
    # The check can fail: the predictions pass 0.5 in places, and the batch sizes' losses differ.
    scores = result["evaluated"]["5"][1]
    assert 0.01 < scores["precision"] < 0.99 and 0.01 < scores["recall"] < 0.99
    assert abs(result["evaluated"]["1"][1]["loss"] - result["evaluated"]["13"][1]["loss"]) > 1e-5
