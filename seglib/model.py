"""The U-Net of the original project, with width and depth as parameters.

At the defaults (256x256x3 input, 6 classes, 16 base filters, depth 4) this is the original's
topology exactly: 1,941,190 parameters. Per level two 3x3 ``he_normal`` convolutions with a
dropout between them, 2x2 max pooling, a decoder of 2x2 stride-2 transposed convolutions
concatenated with the skip, and a 1x1 softmax head.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from seglib.palette import NUM_CLASSES
from seglib.settings import ACTIVATIONS, Settings

DROPOUT_RNGS = ("keras", "rbg")
INITIALIZERS = ("he_normal", "glorot_uniform", "zeros")


@keras.saving.register_keras_serializable(package="seglib")
class NumpyInitializer(keras.initializers.Initializer):
    """Keras' ``he_normal``/``glorot_uniform``/``zeros`` drawn with NumPy from ``seed``.

    Two reasons: the same seed gives the same initial weights on every backend, and no
    initializer runs as an eager backend op - on JAX each new shape would otherwise be a
    separate XLA compilation before training starts (tens of programs for a U-Net).
    He-normal is Keras' truncated normal (cut at 2 sigma, rescaled); fans as Keras counts them.
    """

    def __init__(self, kind: str = "he_normal", seed: int | None = None):
        if kind not in INITIALIZERS:
            raise ValueError(f"initializer kind {kind!r}; expected one of {INITIALIZERS}")
        self.kind = kind
        self.seed = seed

    def __call__(self, shape, dtype=None):
        return ops.convert_to_tensor(self.values(shape), dtype=dtype or "float32")

    def values(self, shape) -> np.ndarray:
        """The initial values as a float32 NumPy array."""
        shape = tuple(int(d) for d in shape)
        if self.kind == "zeros":
            return np.zeros(shape, dtype=np.float32)
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        fan_in = shape[-2] * receptive if len(shape) > 1 else shape[0]
        fan_out = shape[-1] * receptive
        rng = np.random.default_rng(self.seed)
        if self.kind == "glorot_uniform":
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            return rng.uniform(-limit, limit, size=shape).astype(np.float32)
        stddev = np.sqrt(2.0 / fan_in) / 0.87962566103423978  # std of a 2-sigma truncated normal
        values = rng.standard_normal(shape)
        outside = np.abs(values) > 2
        while outside.any():
            values[outside] = rng.standard_normal(int(outside.sum()))
            outside = np.abs(values) > 2
        return (values * stddev).astype(np.float32)

    def get_config(self):
        return {"kind": self.kind, "seed": self.seed}


@keras.saving.register_keras_serializable(package="seglib")
class RbgDropout(layers.Dropout):
    """Dropout whose mask comes from XLA's RngBitGenerator on JAX (``dropout_rng="rbg"``).

    Keras draws dropout masks on JAX with threefry, which XLA computes with plain integer
    arithmetic and which can cost a noticeable share of a small network's training step on
    a GPU; the "rbg" key type uses the hardware-friendly RngBitGenerator instead. The seed
    still comes from the layer's ``SeedGenerator``, so runs stay repeatable and resumable.
    Other backends use Keras' own dropout: the option only changes which bits are drawn.
    """

    def call(self, inputs, training=False):
        if not training or self.rate == 0 or keras.backend.backend() != "jax":
            return super().call(inputs, training=training)
        import jax  # backend-specific: JAX's RBG key type
        import jax.numpy as jnp

        seed = jnp.asarray(self.seed_generator.next(), dtype=jnp.uint32)
        key = jax.random.wrap_key_data(jnp.concatenate([seed, seed ^ jnp.uint32(0x9E3779B9)]), impl="rbg")
        keep = jax.random.bernoulli(key, 1.0 - self.rate, inputs.shape)
        return jnp.where(keep, inputs / jnp.asarray(1.0 - self.rate, inputs.dtype), jnp.zeros((), inputs.dtype))


@keras.saving.register_keras_serializable(package="seglib")
class ActivationSwitch(layers.Layer):
    """One of ``ACTIVATIONS``, chosen by a non-trainable weight (one-hot) instead of the code.

    A program traced with these layers serves every activation: the choice is data, so trials
    of different activations share one compiled training step (``seglib.train.packed``, where
    each trial's choice is its own slice of the stacked weights). Every activation is computed
    and all but the chosen one are discarded with a select, never multiplied by zero, so the
    output and its gradient are the chosen activation's exactly, and an overflowing branch that
    is not chosen cannot turn them into NaN.
    """

    def __init__(self, activation: str | None = None, **kwargs):
        super().__init__(**kwargs)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r}; expected one of {list(ACTIVATIONS)} (None = linear)")
        self.activation = activation

    def build(self, input_shape):
        self.choice = self.add_weight(shape=(len(ACTIVATIONS),), initializer="zeros", trainable=False, name="choice")
        self.choice.assign(one_hot_activation(self.activation))

    def call(self, inputs):
        outputs = inputs  # None: linear
        for index, name in enumerate(ACTIVATIONS):
            if name is not None:
                outputs = ops.where(self.choice[index] > 0, keras.activations.get(name)(inputs), outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), "activation": self.activation}


def one_hot_activation(activation: str | None) -> np.ndarray:
    """``ActivationSwitch``'s weight for ``activation``."""
    return np.eye(len(ACTIVATIONS), dtype=np.float32)[ACTIVATIONS.index(activation)]


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed * 1000 + offset


def _double_conv(x, filters, activation, dropout, seed, index, name, dropout_rng="keras", switch=False):
    """Two 3x3 convolutions with dropout between them, as every level of the original."""
    dropout_layer = RbgDropout if dropout_rng == "rbg" else layers.Dropout
    for conv in (1, 2):
        x = layers.Conv2D(
            filters,
            3,
            activation=None if switch else activation,
            kernel_initializer=NumpyInitializer("he_normal", _seed(seed, 3 * index + 2 * (conv - 1))),
            bias_initializer=NumpyInitializer("zeros"),
            padding="same",
            name=f"{name}_conv{conv}",
        )(x)
        if switch:
            x = ActivationSwitch(activation, name=f"{name}_conv{conv}_activation")(x)
        if conv == 1:
            x = dropout_layer(dropout, seed=_seed(seed, 3 * index + 1), name=f"{name}_dropout")(x)
    return x


def build_unet(
    input_shape: tuple[int, int, int] = (Settings.patch_size, Settings.patch_size, 3),
    num_classes: int = NUM_CLASSES,
    activation: str | None = Settings.activation,
    base_filters: int = Settings.base_filters,
    depth: int = Settings.depth,
    dropout: float = 0.2,
    bottleneck_dropout: float = 0.3,
    seed: int | None = None,
    dropout_rng: str = "keras",
    activation_switch: bool = False,
) -> keras.Model:
    """The original U-Net; ``depth`` down-sampling levels, filters doubling from ``base_filters``.

    The defaults are the original's settings (``seglib.settings.Settings``, one place each).
    The softmax head computes in float32 so that mixed precision never feeds bf16/fp16
    probabilities to the loss. ``seed`` fixes the initial weights and the dropout streams.
    ``dropout_rng="rbg"`` draws dropout masks with JAX's RBG generator (see ``RbgDropout``).
    ``activation_switch=True`` applies the activation with ``ActivationSwitch`` layers: the same
    trainable weights and outputs, and one program for every activation.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; expected one of {list(ACTIVATIONS)} (None = linear)")
    if dropout_rng not in DROPOUT_RNGS:
        raise ValueError(f"dropout_rng={dropout_rng!r}; expected one of {DROPOUT_RNGS}")
    height, width = input_shape[:2]
    if height % 2**depth or width % 2**depth:
        raise ValueError(
            f"input_shape {tuple(input_shape)}: height and width must be multiples of "
            f"2**depth = {2**depth} for a U-Net of depth {depth}"
        )
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = inputs
    skips = []
    for level in range(depth):
        x = _double_conv(
            x, base_filters * 2**level, activation, dropout, seed, level, f"down{level}", dropout_rng, activation_switch
        )
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _double_conv(
        x,
        base_filters * 2**depth,
        activation,
        bottleneck_dropout,
        seed,
        depth,
        "bottleneck",
        dropout_rng,
        activation_switch,
    )
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            padding="same",
            kernel_initializer=NumpyInitializer("glorot_uniform", _seed(seed, 100 + level)),
            bias_initializer=NumpyInitializer("zeros"),
            name=f"up{level}_transpose",
        )(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _double_conv(
            x, filters, activation, dropout, seed, 2 * depth + 1 + level, f"up{level}", dropout_rng, activation_switch
        )
    outputs = layers.Conv2D(
        num_classes,
        1,
        activation="softmax",
        kernel_initializer=NumpyInitializer("glorot_uniform", _seed(seed, 200)),
        bias_initializer=NumpyInitializer("zeros"),
        dtype="float32",
        name="classes",
    )(x)
    return keras.Model(inputs, outputs, name="unet")
