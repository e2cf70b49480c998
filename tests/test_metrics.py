"""Metrics: the original's four on hand-worked masks, IoU, confusion, PR data and evaluate()."""

from __future__ import annotations

import json

import numpy as np
import pytest
from keras import ops

from seglib.data import subsample
from seglib.metrics import (
    confusion_matrix,
    evaluate,
    iou_from_confusion,
    jaccard_coef,
    pr_curve,
    training_metrics,
)
from seglib.model import build_unet

LABELS = np.array([[[0, 0], [1, 1]]], dtype=np.uint8)
PRED_CLASSES = np.array([[[0, 1], [1, 1]]])
HARD = np.eye(2, dtype=np.float32)[PRED_CLASSES]


def result(metric, y_true, y_pred) -> float:
    metric.update_state(y_true, y_pred)
    return float(ops.convert_to_numpy(metric.result()))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("accuracy", 3 / 4),
        ("jaccard", (3 + 1) / (4 + 4 - 3 + 1)),  # the original's smoothed coefficient
        ("precision", 3 / 4),  # one-hot entries: 4 predicted positive, 3 right
        ("recall", 3 / 4),
        ("mean_iou", (1 / 2 + 2 / 3) / 2),
    ],
)
def test_training_metrics_by_hand(name, expected):
    metric = next(m for m in training_metrics(num_classes=2) if m.name == name)
    assert result(metric, LABELS, HARD) == pytest.approx(expected, abs=1e-6)


def test_precision_uses_threshold_half_on_the_softmax():
    probs = np.array([[[[0.6, 0.4], [0.45, 0.55]], [[0.3, 0.7], [0.5, 0.5]]]], dtype=np.float32)
    precision = next(m for m in training_metrics(2) if m.name == "precision")
    recall = next(m for m in training_metrics(2) if m.name == "recall")
    # Above 0.5: (0,0) class 0 right; (0,1) class 1 wrong; (1,0) class 1 right; 0.5 is not above.
    assert result(precision, LABELS, probs) == pytest.approx(2 / 3)
    assert result(recall, LABELS, probs) == pytest.approx(2 / 4)


def test_one_hot_labels_give_the_same_metrics():
    one_hot = np.eye(2, dtype=np.float32)[LABELS]
    for a, b in zip(training_metrics(2), training_metrics(2)):
        assert result(a, LABELS, HARD) == pytest.approx(result(b, one_hot, HARD))


def test_jaccard_coef_soft_values():
    half = np.full((1, 2, 2, 2), 0.5, dtype=np.float32)
    # intersection 2, |t| 4, |p| 4 -> (2 + 1) / (4 + 4 - 2 + 1)
    assert float(ops.convert_to_numpy(jaccard_coef(LABELS, half))) == pytest.approx(3 / 7)


def test_confusion_and_per_class_iou_by_hand():
    confusion = confusion_matrix(LABELS, PRED_CLASSES, num_classes=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert iou_from_confusion(confusion) == [pytest.approx(1 / 2), pytest.approx(2 / 3), None]


def test_pixel_sample_is_deterministic_and_bounded():
    a, b = subsample(10_000, 100, seed=3), subsample(10_000, 100, seed=3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and a.max() < 10_000
    assert np.array_equal(subsample(50, 100), np.arange(50))


def test_pr_curve_perfect_and_small():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(4, 16, 16))
    perfect = np.eye(6, dtype=np.float32)[labels]
    curve = pr_curve(labels, perfect, max_pixels=500, max_points=50)
    assert curve["average_precision"] == pytest.approx(1.0)
    assert curve["pixels"] == 500 and len(curve["precision"]) <= 50
    noisy = pr_curve(labels, rng.dirichlet(np.ones(6), size=(4, 16, 16)).astype(np.float32))
    assert 0.1 < noisy["average_precision"] < 0.3  # chance level is 1/6
    assert curve == pr_curve(labels, perfect, max_pixels=500, max_points=50)


def test_evaluate_returns_json_ready_values_that_agree_with_the_confusion():
    rng = np.random.default_rng(1)
    model = build_unet(input_shape=(16, 16, 3), base_filters=4, depth=2, seed=0)
    x = rng.random((5, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 6, size=(5, 16, 16)).astype(np.uint8)
    results = evaluate(model, x, y, batch_size=2)
    json.dumps(results, allow_nan=False)
    assert set(results) >= {
        "loss",
        "accuracy",
        "precision",
        "recall",
        "jaccard",
        "mean_iou",
        "per_class_iou",
        "confusion",
    }
    confusion = np.array(results["confusion"])
    assert confusion.sum() == y.size
    assert results["accuracy"] == pytest.approx(np.trace(confusion) / y.size, abs=1e-6)
    present = [v for v in results["per_class_iou"] if v is not None]
    assert results["mean_iou"] == pytest.approx(np.mean(present))
    probs = model.predict(x, verbose=0)
    assert results["accuracy"] == pytest.approx(float((probs.argmax(-1) == y).mean()), abs=1e-6)
