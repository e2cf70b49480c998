"""The U-Net: the original's parameter count, activations, seeds and save/load."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from seglib.losses import dice_focal_loss
from seglib.metrics import training_metrics
from seglib.model import ActivationSwitch, NumpyInitializer, RbgDropout, build_unet, one_hot_activation
from seglib.train import load_model


def test_original_topology_has_1941190_parameters():
    model = build_unet()
    assert model.count_params() == 1_941_190
    assert model.output_shape == (None, 256, 256, 6)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert len(convs) == 18 and [c.filters for c in convs[:10:2]] == [16, 32, 64, 128, 256]
    rates = [layer.rate for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.2] * 4 + [0.3] + [0.2] * 4


@pytest.mark.parametrize(
    "activation, keras_name",
    [("relu", "relu"), ("tanh", "tanh"), ("swish", "silu"), (None, "linear")],
)
def test_activation_choices(activation, keras_name):
    model = build_unet(input_shape=(16, 16, 3), base_filters=2, depth=2, activation=activation)
    conv = model.get_layer("down0_conv1")
    assert conv.activation.__name__ == keras_name


@pytest.mark.parametrize("activation", ["gelu", "linear", "None"])
def test_unknown_activation_lists_the_choices(activation):
    """One vocabulary: None is linear; the strings 'linear' and 'None' are refused, not guessed."""
    with pytest.raises(ValueError, match=rf"'{activation}'.*\['relu', 'tanh', 'swish', None\]"):
        build_unet(activation=activation)


def test_input_size_must_divide_by_the_depth():
    with pytest.raises(ValueError, match="multiples of 2\\*\\*depth = 16"):
        build_unet(input_shape=(40, 40, 3), depth=4)


def test_seed_fixes_the_initial_weights():
    a = build_unet(input_shape=(16, 16, 3), base_filters=4, depth=2, seed=7)
    b = build_unet(input_shape=(16, 16, 3), base_filters=4, depth=2, seed=7)
    c = build_unet(input_shape=(16, 16, 3), base_filters=4, depth=2, seed=8)
    assert all(np.array_equal(u, v) for u, v in zip(a.get_weights(), b.get_weights()))
    assert not np.array_equal(a.get_weights()[0], c.get_weights()[0])


@pytest.mark.parametrize("kind, shape", [("he_normal", (3, 3, 16, 32)), ("glorot_uniform", (2, 2, 32, 64))])
def test_numpy_initializers_match_keras_statistics(kind, shape):
    ours = NumpyInitializer(kind, seed=1).values(shape)
    theirs = keras.ops.convert_to_numpy(keras.initializers.get(kind)(shape))
    assert ours.dtype == np.float32 and ours.shape == shape
    assert ours.std() == pytest.approx(theirs.std(), rel=0.05)
    assert np.abs(ours).max() <= np.abs(theirs).max() * 1.05
    assert np.array_equal(ours, NumpyInitializer(kind, seed=1).values(shape))
    if kind == "he_normal":  # truncated at two standard deviations of the underlying normal
        assert np.abs(ours).max() <= 2 * np.sqrt(2 / (9 * 16)) / 0.87962566103423978


def test_rbg_dropout_option_builds_and_is_identity_at_inference():
    model = build_unet(input_shape=(16, 16, 3), base_filters=2, depth=2, seed=0, dropout_rng="rbg")
    plain = build_unet(input_shape=(16, 16, 3), base_filters=2, depth=2, seed=0)
    assert isinstance(model.get_layer("down0_dropout"), RbgDropout)
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="dropout_rng='philox'"):
        build_unet(dropout_rng="philox")


def test_save_load_gives_the_same_predictions_and_loss(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 6, size=(4, 32, 32)).astype(np.uint8)
    model = build_unet(input_shape=(32, 32, 3), base_filters=4, depth=3, seed=0)
    model.compile(optimizer="adam", loss=dice_focal_loss(), metrics=training_metrics())
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    for loaded in (load_model(path), keras.models.load_model(path)):
        assert np.array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
        assert loaded.loss.name == "dice_loss_plus_1_focal_loss"
        assert loaded.evaluate(x, y, verbose=0) == pytest.approx(model.evaluate(x, y, verbose=0), rel=1e-6)


def test_the_activation_switch_computes_the_chosen_activation_exactly(tmp_path):
    """A U-Net with the activation as a weight: the plain U-Net's weights and outputs, and the
    choice is data (one model switched to another activation gives that activation's outputs)."""
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    switched = build_unet((16, 16, 3), base_filters=2, depth=2, seed=1, activation="relu", activation_switch=True)
    choices = [layer.choice for layer in switched.layers if isinstance(layer, ActivationSwitch)]
    assert len(choices) == 2 * 5  # two convolutions a level: 2 down, the bottleneck, 2 up
    outputs = {}
    for activation in ("relu", "tanh", "swish", None):
        plain = build_unet((16, 16, 3), base_filters=2, depth=2, seed=1, activation=activation)
        for choice in choices:
            choice.assign(one_hot_activation(activation))
        for mine, theirs in zip(switched.trainable_weights, plain.trainable_weights, strict=True):
            np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
        outputs[activation] = np.asarray(switched(x))
        np.testing.assert_array_equal(outputs[activation], np.asarray(plain(x)))
    assert np.abs(outputs["relu"] - outputs["tanh"]).max() > 1e-3  # the choice changes the outputs
    switched.save(tmp_path / "switched.keras")
    np.testing.assert_array_equal(np.asarray(load_model(tmp_path / "switched.keras")(x)), outputs[None])
