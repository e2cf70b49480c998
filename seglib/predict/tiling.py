"""Windows over an image -> class probabilities: reflect-padded, blended smoothly, strip by strip.

The model sees square windows of its input size, each min-max scaled on its own exactly as
the training patches were (``scale_patches``). An image of any size is reflect-padded: a
mirrored border keeps a window's per-channel range that of real pixels, where zeros would
stretch it. ``mode="blend"`` (the default) lays windows at half a window's stride and
weights each prediction by a Hann window, so the window borders, where a U-Net sees the
least context, count the least and leave no seams; ``mode="tiles"`` is the training's
non-overlapping cut. ``tta=True`` averages the 8 flips and rotations (each undone).

Only the band of rows that one row of windows touches is held as probabilities (window
height x padded width x classes, float32); finished rows leave as a uint8 class map.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from seglib.data import CLASS_NAMES, NUM_CLASSES, DataError, scale_patches
from seglib.predict.options import DEFAULT_BATCH_SIZE, MODES

# The 8 symmetries of a square: quarter turns, without and with a left-right flip.
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))


# ---------------------------------------------------------------------------------------------
# The model


def patch_size_of(model) -> int:
    """The model's window side P, after checking it maps (P, P, 3) images to the six classes."""
    inputs, outputs = model.input_shape, model.output_shape
    if not (
        isinstance(inputs, tuple)
        and len(inputs) == 4
        and inputs[1] is not None
        and inputs[1] == inputs[2]
        and inputs[3] == 3
    ):
        raise DataError(
            f"model {model.name!r}: expected one input of shape (batch, P, P, 3), a fixed square "
            f"RGB window, found {inputs}"
        )
    expected = (inputs[1], inputs[2], NUM_CLASSES)
    if not (isinstance(outputs, tuple) and tuple(outputs[1:]) == expected):
        raise DataError(
            f"model {model.name!r}: expected output (batch, {inputs[1]}, {inputs[2]}, {NUM_CLASSES}): "
            f"one probability per pixel for each of {', '.join(CLASS_NAMES)}; found {outputs}"
        )
    return int(inputs[1])


def _predict(model, windows: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(np.ascontiguousarray(windows)), dtype=np.float32)


def _turned(windows: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Windows ``(N, P, P, C)`` rotated ``turns`` quarter turns, then flipped left-right."""
    turned = np.rot90(windows, turns, axes=(1, 2))
    return turned[:, :, ::-1] if flip else turned


def _unturned(windows: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of ``_turned``: flip back first, then turn back."""
    windows = windows[:, :, ::-1] if flip else windows
    return np.rot90(windows, -turns, axes=(1, 2))


def predict_windows(model, scaled: np.ndarray, tta: bool = False) -> np.ndarray:
    """Class probabilities ``(N, P, P, classes)`` of scaled windows ``(N, P, P, 3)``.

    With ``tta`` the mean over the 8 flips/rotations, each prediction turned back to the
    window's own orientation first. Min-max scaling does not depend on pixel order, so the
    windows are scaled once, before turning.
    """
    if not tta:
        return _predict(model, scaled)
    total = None
    for turns, flip in DIHEDRAL:
        probs = _unturned(_predict(model, _turned(scaled, turns, flip)), turns, flip)
        total = probs if total is None else total + probs
    return total / len(DIHEDRAL)


# ---------------------------------------------------------------------------------------------
# Windows over an image


def window_weights(patch_size: int, mode: str) -> np.ndarray:
    """1-D weights across a window: Hann (sin^2, never zero) to blend, ones for tiles.

    At a stride of half an even window sin^2(x) + sin^2(x + pi/2) = 1: the weights at every
    image pixel sum to one. ``predict_strips`` still divides by their sum, which keeps the
    blend a weighted mean for an odd window too.
    """
    if mode == "tiles":
        return np.ones(patch_size)
    return np.sin(np.pi * (np.arange(patch_size) + 0.5) / patch_size) ** 2


def window_starts(length: int, patch_size: int, mode: str) -> tuple[int, list[int]]:
    """Padding before the image, and where windows start, along one axis (padded coordinates).

    Tiles start at the image's first pixel, as the training patches did, and the far end is
    padded up to a whole window. Blending pads half a window before and at least half a
    window after, so every image pixel lies in the middle half of some window.
    """
    stride = patch_size if mode == "tiles" else max(patch_size // 2, 1)
    margin = patch_size - stride
    count = max(1, math.ceil((length + 2 * margin - patch_size) / stride) + 1)
    return margin, [i * stride for i in range(count)]


def _coverage(starts: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Summed window weights at every padded position of one axis."""
    total = np.zeros(starts[-1] + len(weights), dtype=np.float32)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total


def _reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for any positions, mirrored as np.pad's "reflect"."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def check_settings(mode: str, batch_size: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, found {batch_size}")


def predict_strips(
    model,
    read_rows: Callable[[int, int], np.ndarray],
    height: int,
    width: int,
    mode: str = "blend",
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities of an image in finished strips: ``(first row, (rows, width, classes))``.

    ``read_rows(start, stop)`` gives image rows ``start:stop`` as ``(rows, width, 3)``; only
    the rows one row of windows covers are asked for at a time. Rows leave as soon as no
    later window reaches them, so memory holds one band of window height, not the image.
    """
    check_settings(mode, batch_size)
    patch = patch_size_of(model)
    weights = window_weights(patch, mode)
    pad_top, row_starts = window_starts(height, patch, mode)
    pad_left, col_starts = window_starts(width, patch, mode)
    row_cover, col_cover = _coverage(row_starts, weights), _coverage(col_starts, weights)
    col_cover = col_cover[pad_left : pad_left + width, None]
    columns = _reflect(np.arange(col_starts[-1] + patch) - pad_left, width)
    window_2d = np.outer(weights, weights).astype(np.float32)[..., None]
    band = np.zeros((patch, len(columns), NUM_CLASSES), dtype=np.float32)
    for index, top in enumerate(row_starts):
        rows = _reflect(np.arange(top, top + patch) - pad_top, height)
        strip = read_rows(int(rows.min()), int(rows.max()) + 1)[rows - rows.min()][:, columns]
        for first in range(0, len(col_starts), batch_size):
            lefts = col_starts[first : first + batch_size]
            windows = np.stack([strip[:, left : left + patch] for left in lefts])
            for left, probs in zip(lefts, predict_windows(model, scale_patches(windows), tta)):
                band[:, left : left + patch] += probs * window_2d
        done = row_starts[index + 1] - top if index + 1 < len(row_starts) else patch
        start, stop = max(top, pad_top), min(top + done, pad_top + height)
        if start < stop:
            finished = band[start - top : stop - top, pad_left : pad_left + width]
            yield start - pad_top, finished / (row_cover[start:stop, None, None] * col_cover)
        band[: patch - done] = band[done:]  # rows later windows still add to move up
        band[patch - done :] = 0


def _class_map(strips: Iterator[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    classes = np.empty((height, width), dtype=np.uint8)
    for first, probs in strips:
        classes[first : first + len(probs)] = probs.argmax(-1)
    return classes


def _array_strips(model, image, mode, tta, batch_size):
    """``predict_strips`` over an image array, with its height and width."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image array (H, W, 3), found shape {image.shape}")
    height, width = image.shape[:2]
    read_rows = lambda start, stop: image[start:stop]
    return predict_strips(model, read_rows, height, width, mode, tta, batch_size), height, width


def predict_image(
    model, image: np.ndarray, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class indices uint8 ``(H, W)`` of an RGB image ``(H, W, 3)`` (uint8 or uint16) of any size."""
    return _class_map(*_array_strips(model, image, mode, tta, batch_size))


def predict_probabilities(
    model, image: np.ndarray, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class probabilities float32 ``(H, W, classes)`` of an RGB image: for images that fit in memory."""
    strips, _, _ = _array_strips(model, image, mode, tta, batch_size)
    return np.concatenate([probs for _, probs in strips])


def source_classes(
    model, source, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class indices uint8 ``(H, W)`` of an opened image (``images.ImageSource``), strip by strip."""
    strips = predict_strips(model, source.read_rows, source.height, source.width, mode, tta, batch_size)
    return _class_map(strips, source.height, source.width)
