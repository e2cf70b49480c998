"""Segmentation metrics: the original's training metrics, plus IoU, confusion and PR-curve data.

The original compiled with ``accuracy``, a smoothed Jaccard coefficient and Keras
``Precision``/``Recall`` (threshold 0.5 on the softmax against the one-hot mask).
``training_metrics()`` gives the same four for integer labels (the one-hot is made inside)
plus a mean IoU; ``evaluate()`` adds per-class IoU and the confusion matrix in one pass over
the data, as plain floats and lists ready for JSON.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops

from seglib.data import subsample
from seglib.losses import PACKAGE, dice_focal_loss, to_one_hot
from seglib.palette import NUM_CLASSES

JACCARD_SMOOTH = 1.0  # the original's jacard_coef: (|t*p| + 1) / (|t| + |p| - |t*p| + 1)


def jaccard_coef(y_true, y_pred, smooth=JACCARD_SMOOTH):
    """The original's smoothed Jaccard over the whole flattened batch (soft: uses probabilities)."""
    y_pred = ops.cast(y_pred, "float32")
    y_true = to_one_hot(y_true, y_pred.shape[-1])
    intersection = ops.sum(y_true * y_pred)
    return (intersection + smooth) / (ops.sum(y_true) + ops.sum(y_pred) - intersection + smooth)


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardCoefficient(keras.metrics.MeanMetricWrapper):
    """Batch-wise ``jaccard_coef``, averaged over batches (the original's ``jacard_coef`` metric)."""

    def __init__(self, name="jaccard", dtype=None, smooth=JACCARD_SMOOTH):
        super().__init__(fn=jaccard_coef, name=name, dtype=dtype, smooth=smooth)
        self.smooth = smooth

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "smooth": self.smooth}


@keras.saving.register_keras_serializable(package=PACKAGE)
class OneHotPrecision(keras.metrics.Precision):
    """Keras ``Precision`` at 0.5 on the softmax vs the one-hot mask, from integer labels."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = to_one_hot(y_true, y_pred.shape[-1])
        return super().update_state(y_true, ops.cast(y_pred, "float32"), sample_weight)


@keras.saving.register_keras_serializable(package=PACKAGE)
class OneHotRecall(keras.metrics.Recall):
    """Keras ``Recall`` at 0.5 on the softmax vs the one-hot mask, from integer labels."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = to_one_hot(y_true, y_pred.shape[-1])
        return super().update_state(y_true, ops.cast(y_pred, "float32"), sample_weight)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassAccuracy(keras.metrics.MeanMetricWrapper):
    """Pixel accuracy of the argmax, from integer labels or one-hot masks."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=_pixel_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _pixel_accuracy(y_true, y_pred):
    y_true = to_one_hot(y_true, y_pred.shape[-1])
    hits = ops.equal(ops.argmax(y_true, axis=-1), ops.argmax(y_pred, axis=-1))
    return ops.cast(hits, "float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class ArgmaxMeanIoU(keras.metrics.MeanIoU):
    """Keras ``MeanIoU`` on the argmax of the softmax; labels as integers or one-hot."""

    def __init__(self, num_classes=NUM_CLASSES, name="mean_iou", dtype=None, **kwargs):
        kwargs.pop("sparse_y_true", None)
        kwargs.pop("sparse_y_pred", None)
        super().__init__(num_classes=num_classes, name=name, dtype=dtype, sparse_y_pred=False, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        if len(y_true.shape) == len(y_pred.shape):
            y_true = ops.argmax(y_true, axis=-1)
        return super().update_state(y_true, y_pred, sample_weight)


def training_metrics(num_classes: int = NUM_CLASSES) -> list[keras.metrics.Metric]:
    """Fresh metric objects for ``compile``: accuracy, jaccard, precision, recall, mean_iou."""
    return [
        ClassAccuracy(name="accuracy"),
        JaccardCoefficient(name="jaccard"),
        OneHotPrecision(thresholds=0.5, name="precision"),
        OneHotRecall(thresholds=0.5, name="recall"),
        ArgmaxMeanIoU(num_classes=num_classes, name="mean_iou"),
    ]


def confusion_matrix(y_true, y_pred_classes, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Pixel counts ``[true, predicted]`` (int64) from integer arrays of the same shape."""
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred_classes, dtype=np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_from_confusion(confusion: np.ndarray) -> list[float | None]:
    """Per-class IoU ``tp / (tp + fp + fn)``; None for a class absent from labels and predictions."""
    confusion = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def mean_of_present(values: list[float | None]) -> float:
    """Mean over the classes that have a value (NaN when none has)."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else math.nan


def evaluate(model: keras.Model, x, y, batch_size: int = 16, loss=None) -> dict:
    """Loss, the training metrics, per-class IoU and confusion of ``model`` on ``(x, y)``.

    One pass over the data in batches of ``batch_size``. The loss is the model's compiled loss
    if it has one, else the original's Dice + focal; as in ``Model.evaluate`` it is the
    batch-size-weighted mean of per-batch losses (Dice is computed per batch). IoU, per class
    and its mean over the classes present, comes from one confusion matrix of exact integer
    counts (Keras' MeanIoU keeps float32 counts, which round above 16.7 M pixels). Everything
    returned is a plain float, int or list, ready for ``json.dump``.
    """
    num_classes = int(model.output_shape[-1])
    loss = loss or _compiled_loss(model) or dice_focal_loss(num_classes)
    metrics = [m for m in training_metrics(num_classes) if not isinstance(m, ArgmaxMeanIoU)]
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    loss_sum = 0.0
    count = 0
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        yb = np.asarray(y[start : start + batch_size])
        probs = model.predict_on_batch(xb)
        loss_sum += float(ops.convert_to_numpy(loss(yb, probs))) * len(xb)
        count += len(xb)
        for metric in metrics:
            metric.update_state(yb, probs)
        labels = yb.argmax(-1) if yb.ndim == 4 else yb
        confusion += confusion_matrix(labels, np.asarray(probs).argmax(-1), num_classes)
    results = {"loss": loss_sum / max(count, 1)}
    for metric in metrics:
        results[metric.name] = float(ops.convert_to_numpy(metric.result()))
    per_class = iou_from_confusion(confusion)
    results["mean_iou"] = mean_of_present(per_class)
    results["per_class_iou"] = per_class
    results["confusion"] = confusion.tolist()
    return results


def _compiled_loss(model):
    loss = getattr(model, "loss", None)
    return loss if callable(loss) else None


def pr_curve(y_true, probs, max_pixels: int = 200_000, max_points: int = 500, seed: int = 0) -> dict:
    """Precision-recall curve data as the original plotted it, made small enough to keep.

    The original ran sklearn's ``precision_recall_curve`` on the flattened one-hot masks
    against the flattened softmax (all classes pooled: a micro-average). Here the pixels are
    a deterministic subsample of at most ``max_pixels`` (a full validation set is 17 M pixels
    x 6 classes), and the curve is thinned to about ``max_points`` points for JSON.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    probs = np.asarray(probs, dtype=np.float32)
    num_classes = probs.shape[-1]
    probs = probs.reshape(-1, num_classes)
    y_true = np.asarray(y_true)
    labels = (
        y_true.reshape(-1, num_classes).argmax(-1)
        if y_true.shape[-1:] == (num_classes,) and y_true.ndim == 4
        else y_true.ravel()
    )
    keep = subsample(len(labels), max_pixels, seed)
    one_hot = np.eye(num_classes, dtype=np.uint8)[labels[keep]].ravel()
    scores = probs[keep].ravel()
    precision, recall, thresholds = precision_recall_curve(one_hot, scores)
    points = np.unique(np.linspace(0, len(precision) - 1, min(max_points, len(precision))).round().astype(int))
    return {
        "precision": precision[points].tolist(),
        "recall": recall[points].tolist(),
        "thresholds": thresholds[np.minimum(points, len(thresholds) - 1)].tolist(),
        "average_precision": float(average_precision_score(one_hot, scores)),
        "pixels": len(keep),
    }
