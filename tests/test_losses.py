"""Dice and focal losses on tiny masks whose values are worked out by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
from keras import ops

from seglib.losses import (
    CategoricalFocalLoss,
    DiceLoss,
    MultipliedLoss,
    SumOfLosses,
    dice_focal_loss,
    f_score,
    iou_score,
)

# One 2x2 image, two classes. Labels: top row class 0, bottom row class 1.
LABELS = np.array([[[0, 0], [1, 1]]], dtype=np.uint8)
# Hard prediction: one class-0 pixel taken for class 1.
HARD = np.eye(2, dtype=np.float32)[np.array([[[0, 1], [1, 1]]])]
# Class 0: tp 1, fp 0, fn 1 -> Dice 2/3, IoU 1/2. Class 1: tp 2, fp 1, fn 0 -> Dice 4/5, IoU 2/3.
HALF = np.full((1, 2, 2, 2), 0.5, dtype=np.float32)
# Soft 0.5 everywhere: per class tp 1, fp 1, fn 1 -> Dice 2/4, IoU 1/3.


def value(x) -> float:
    return float(ops.convert_to_numpy(x))


@pytest.mark.parametrize(
    "y_pred, class_weights, expected",
    [
        (HARD, None, 1 - (2 / 3 + 4 / 5) / 2),
        (HARD, [0.5, 0.5], 1 - (2 / 3 + 4 / 5) / 2 / 2),  # segmentation_models: mean(w * score)
        (HARD, [1.0, 0.0], 1 - (2 / 3) / 2),
        (HALF, None, 0.5),
        (np.eye(2, dtype=np.float32)[LABELS], None, 0.0),
    ],
)
def test_dice_loss_by_hand(y_pred, class_weights, expected):
    assert value(DiceLoss(class_weights=class_weights)(LABELS, y_pred)) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize(
    "p_true, alpha, gamma, expected",
    [
        # One pixel, two classes; the loss is the mean over both class entries.
        (0.5, 0.25, 2.0, 0.25 * 0.25 * math.log(2) / 2),
        (0.9, 0.25, 2.0, 0.25 * 0.01 * -math.log(0.9) / 2),
        (0.2, 1.0, 0.0, -math.log(0.2) / 2),  # alpha 1, gamma 0: cross-entropy / classes
        (1.0, 0.25, 2.0, 0.0),
    ],
)
def test_focal_loss_by_hand(p_true, alpha, gamma, expected):
    labels = np.zeros((1, 1, 1), dtype=np.uint8)
    probs = np.array([[[[p_true, 1 - p_true]]]], dtype=np.float32)
    loss = CategoricalFocalLoss(alpha=alpha, gamma=gamma)(labels, probs)
    assert value(loss) == pytest.approx(expected, rel=1e-5, abs=1e-7)


@pytest.mark.parametrize("y_pred, expected", [(HARD, (1 / 2 + 2 / 3) / 2), (HALF, 1 / 3)])
def test_iou_score_by_hand(y_pred, expected):
    assert value(iou_score(LABELS, y_pred)) == pytest.approx(expected, abs=1e-5)


def random_case(seed=0, classes=6):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, size=(3, 8, 8)).astype(np.uint8)
    logits = rng.normal(size=(3, 8, 8, classes)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    return labels, probs


def test_dice_loss_is_one_minus_f_score():
    labels, probs = random_case()
    for beta in (0.5, 1.0, 2.0):
        assert value(DiceLoss(beta=beta)(labels, probs)) == pytest.approx(
            1 - value(f_score(labels, probs, beta=beta)), abs=1e-6
        )


def test_integer_and_one_hot_labels_give_the_same_losses():
    labels, probs = random_case()
    one_hot = np.eye(6, dtype=np.float32)[labels]
    loss = dice_focal_loss()
    assert value(loss(labels, probs)) == pytest.approx(value(loss(one_hot, probs)), abs=1e-7)


def test_bad_label_shape_names_expected_and_found():
    with pytest.raises(ValueError, match=r"expected class indices \(N, H, W\).*found shape \(3, 8\)"):
        DiceLoss()(np.zeros((3, 8)), np.zeros((3, 8, 8, 6), dtype=np.float32))


def test_losses_compose_with_operators_and_names_are_built():
    labels, probs = random_case(1)
    dice, focal = DiceLoss(), CategoricalFocalLoss()
    total = dice + 1.0 * focal
    assert isinstance(total, SumOfLosses) and isinstance(total.l2, MultipliedLoss)
    assert total.name == "dice_loss_plus_1_focal_loss"
    assert (0.5 * focal).name == "0p5_focal_loss"
    expected = value(dice(labels, probs)) + value(focal(labels, probs))
    assert value(total(labels, probs)) == pytest.approx(expected, rel=1e-6)
    assert value((dice + 3 * focal)(labels, probs)) == pytest.approx(
        value(dice(labels, probs)) + 3 * value(focal(labels, probs)), rel=1e-6
    )


def test_original_loss_is_weighted_dice_plus_focal():
    labels, probs = random_case(2)
    loss = dice_focal_loss()
    expected = value(DiceLoss(class_weights=[1 / 6] * 6)(labels, probs)) + value(CategoricalFocalLoss()(labels, probs))
    assert value(loss(labels, probs)) == pytest.approx(expected, rel=1e-6)
    # The original's 1/6 weights put the Dice term between 5/6 and 1.
    assert 5 / 6 <= value(DiceLoss(class_weights=[1 / 6] * 6)(labels, probs)) <= 1


def test_losses_round_trip_through_keras_serialisation():
    labels, probs = random_case(3)
    loss = dice_focal_loss()
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is SumOfLosses and restored.name == loss.name
    assert restored.get_config() == loss.get_config()
    assert value(restored(labels, probs)) == pytest.approx(value(loss(labels, probs)), abs=0)


def test_loss_is_float32_for_bf16_predictions():
    labels, probs = random_case(4)
    loss = dice_focal_loss()(labels, ops.cast(probs, "bfloat16"))
    assert keras.backend.standardize_dtype(loss.dtype) == "float32"
    assert value(loss) == pytest.approx(value(dice_focal_loss()(labels, probs)), abs=1e-2)


@pytest.mark.parametrize("real", [1, 3, 5])
def test_a_padded_batch_with_its_mask_gives_the_real_samples_loss(real):
    """What lets batches of different sizes share one compiled training step, exactly."""
    rng = np.random.default_rng(real)
    labels = rng.integers(0, 6, size=(8, 4, 4))
    probs = rng.dirichlet(np.ones(6), size=(8, 4, 4)).astype(np.float32)
    mask = np.array([1.0] * real + [0.0] * (8 - real), dtype=np.float32)
    loss = dice_focal_loss()
    expected = float(ops.convert_to_numpy(loss(labels[:real], probs[:real])))
    assert float(ops.convert_to_numpy(loss.masked(labels, probs, mask))) == pytest.approx(expected, rel=1e-6)
