"""The U-Net of the original project, with width and depth as parameters.

At the defaults (256x256x3 input, 6 classes, 16 base filters, depth 4) this is the original's
topology exactly: 1,941,190 parameters. Per level two 3x3 ``he_normal`` convolutions with a
dropout between them, 2x2 max pooling, a decoder of 2x2 stride-2 transposed convolutions
concatenated with the skip, and a 1x1 softmax head.
"""

from __future__ import annotations

import keras
from keras import layers

ACTIVATIONS = ("relu", "tanh", "swish", None)
NUM_CLASSES = 6

# NNI passes choices through JSON, where None may arrive as the string "None" or "null".
_LINEAR_NAMES = {None, "none", "None", "null", "linear"}


def resolve_activation(activation: str | None) -> str | None:
    """The Keras activation name for a search-space choice; None means linear."""
    if activation in _LINEAR_NAMES:
        return None
    if activation in ACTIVATIONS:
        return activation
    raise ValueError(
        f"activation {activation!r} is not supported; expected one of "
        f"{list(ACTIVATIONS)} (None = linear; the strings 'None' and 'linear' also mean linear)"
    )


def _seed(seed: int | None, offset: int) -> int | None:
    return None if seed is None else seed * 1000 + offset


def _double_conv(x, filters, activation, dropout, seed, index, name):
    """Two 3x3 convolutions with dropout between them, as every level of the original."""
    x = layers.Conv2D(
        filters,
        3,
        activation=activation,
        kernel_initializer=keras.initializers.HeNormal(seed=_seed(seed, 3 * index)),
        padding="same",
        name=f"{name}_conv1",
    )(x)
    x = layers.Dropout(dropout, seed=_seed(seed, 3 * index + 1), name=f"{name}_dropout")(x)
    return layers.Conv2D(
        filters,
        3,
        activation=activation,
        kernel_initializer=keras.initializers.HeNormal(seed=_seed(seed, 3 * index + 2)),
        padding="same",
        name=f"{name}_conv2",
    )(x)


def build_unet(
    input_shape: tuple[int, int, int] = (256, 256, 3),
    num_classes: int = NUM_CLASSES,
    activation: str | None = "relu",
    base_filters: int = 16,
    depth: int = 4,
    dropout: float = 0.2,
    bottleneck_dropout: float = 0.3,
    seed: int | None = None,
) -> keras.Model:
    """The original U-Net; ``depth`` down-sampling levels, filters doubling from ``base_filters``.

    The softmax head computes in float32 so that mixed precision never feeds bf16/fp16
    probabilities to the loss. ``seed`` fixes the initial weights and the dropout streams.
    """
    activation = resolve_activation(activation)
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
        x = _double_conv(x, base_filters * 2**level, activation, dropout, seed, level, f"down{level}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    x = _double_conv(
        x, base_filters * 2**depth, activation, bottleneck_dropout, seed, depth, "bottleneck"
    )
    for level in reversed(range(depth)):
        filters = base_filters * 2**level
        x = layers.Conv2DTranspose(
            filters,
            2,
            strides=2,
            padding="same",
            kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(seed, 100 + level)),
            name=f"up{level}_transpose",
        )(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _double_conv(x, filters, activation, dropout, seed, 2 * depth + 1 + level, f"up{level}")
    outputs = layers.Conv2D(
        num_classes,
        1,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=_seed(seed, 200)),
        dtype="float32",
        name="classes",
    )(x)
    return keras.Model(inputs, outputs, name="unet")
