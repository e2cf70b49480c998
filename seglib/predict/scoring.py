"""Whole images scored against their masks, per tiling mode, and the arrays of the report's figure.

Pixels are pooled over all images, as ``seglib.metrics.evaluate`` pools patches; masks are
read as in training, so off-palette colours count as Unlabeled.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from seglib.data import NUM_CLASSES, DataError, read_rgb, rgb_to_labels
from seglib.metrics import confusion_matrix, iou_from_confusion, mean_of_present
from seglib.predict.images import colourize, open_image
from seglib.predict.options import DEFAULT_BATCH_SIZE, MODES
from seglib.predict.tiling import source_classes

SCORE_MODES = ("tiles", "blend", "blend+tta")


def parse_mode(name: str) -> tuple[str, bool]:
    """``"blend+tta"`` -> ``("blend", True)``; ``"tiles"`` -> ``("tiles", False)``."""
    mode, _, extra = name.partition("+")
    if mode not in MODES or extra not in ("", "tta"):
        raise ValueError(f"mode {name!r}; expected one of {MODES}, optionally with '+tta'")
    return mode, extra == "tta"


def _mask_labels(mask_path, height: int, width: int, image_path) -> np.ndarray:
    """Class indices of a mask; off-palette colours become Unlabeled, as in training."""
    labels, _ = rgb_to_labels(read_rgb(mask_path))
    if labels.shape != (height, width):
        raise DataError(
            f"{image_path} is {width}x{height} but its mask {mask_path} is "
            f"{labels.shape[1]}x{labels.shape[0]} (width x height); expected equal sizes"
        )
    return labels


def score_whole_images(
    model, pairs, modes: Sequence[str] = SCORE_MODES, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, dict]:
    """Per-class IoU, mean IoU and confusion of whole images against their masks, per mode.

    ``pairs`` are ``(image, mask, ...)`` paths (``seglib.data.Pair`` fits). Pixels are pooled
    over all images, as ``seglib.metrics.evaluate`` pools patches; ``seconds`` is the time
    spent predicting in that mode.
    """
    settings = {name: parse_mode(name) for name in modes}
    confusion = {name: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64) for name in modes}
    seconds = dict.fromkeys(modes, 0.0)
    count = 0
    for image_path, mask_path, *_ in pairs:
        with open_image(image_path) as source:
            labels = _mask_labels(mask_path, source.height, source.width, image_path)
            for name, (mode, tta) in settings.items():
                started = time.perf_counter()
                classes = source_classes(model, source, mode, tta, batch_size)
                seconds[name] += time.perf_counter() - started
                confusion[name] += confusion_matrix(labels, classes, NUM_CLASSES)
        count += 1
    scores = {}
    for name in modes:
        per_class = iou_from_confusion(confusion[name])
        scores[name] = {
            "per_class_iou": per_class,
            "mean_iou": mean_of_present(per_class),
            "confusion": confusion[name].tolist(),
            "seconds": seconds[name],
            "images": count,
        }
    return scores


def figure_arrays(
    model,
    image_path,
    mask_path,
    mode: str = "blend",
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, np.ndarray]:
    """``image``, ``mask`` and ``prediction`` as uint8 RGB arrays (mask colours) for a figure."""
    with open_image(image_path) as source:
        labels = _mask_labels(mask_path, source.height, source.width, image_path)
        classes = source_classes(model, source, mode, tta, batch_size)
        image = source.display_rows(0, source.height)
    return {"image": image, "mask": colourize(labels), "prediction": colourize(classes)}
