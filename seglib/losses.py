"""Dice and categorical focal losses as segmentation_models defines them, in Keras 3.

Labels: ``y_true`` may be integer class indices ``(N, H, W)`` (what seglib.data gives; the
one-hot is made inside with ``keras.ops.one_hot``, so a training set never holds one-hot
masks in memory) or one-hot ``(N, H, W, C)``. Predictions are softmax probabilities
``(N, H, W, C)``. Every loss computes in float32, also under mixed precision.

Losses compose with operators, as in segmentation_models: ``dice + 1.0 * focal`` is a
``SumOfLosses`` named ``dice_loss_plus_1_focal_loss``. All classes are registered with
Keras under the package ``seglib``: a saved ``.keras`` model loads back with
``keras.models.load_model`` once seglib's losses, metrics and model modules are imported:
``seglib.train.load_model`` does that.

Note on the original's loss: segmentation_models multiplies the per-class Dice scores by
``class_weights`` and then takes their mean, so ``class_weights=[1/6]*6`` (the original's)
gives ``1 - mean(score) / 6``: a Dice term between 5/6 and 1. seglib keeps that definition so
its numbers compare with the original's (validation loss 0.907); ``loss == 1 - score`` holds
for ``class_weights=None``.
"""

from __future__ import annotations

import keras
from keras import ops

from seglib.palette import NUM_CLASSES

SMOOTH = 1e-5  # segmentation_models' default smoothing for Dice/F-score
EPSILON = 1e-7  # keras.backend.epsilon(): the clip segmentation_models applies before log

PACKAGE = "seglib"


def to_one_hot(y_true, num_classes: int):
    """``y_true`` as float32 one-hot ``(N, H, W, C)``, from class indices or already one-hot."""
    if len(y_true.shape) == 4 and y_true.shape[-1] == num_classes:
        return ops.cast(y_true, "float32")
    if len(y_true.shape) == 4 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
    if len(y_true.shape) != 3:
        raise ValueError(
            f"labels: expected class indices (N, H, W) or one-hot (N, H, W, {num_classes}); "
            f"found shape {tuple(y_true.shape)}"
        )
    return ops.one_hot(ops.cast(y_true, "int32"), num_classes, dtype="float32")


def _prepare(y_true, y_pred, sample_mask=None):
    """Both tensors as float32 one-hot/probabilities of the same shape; masked samples zeroed.

    ``sample_mask`` (N,) of 1s and 0s marks padding samples (0) that must not count: a batch
    padded to a shared shape then gives the loss of its real samples exactly.
    """
    y_pred = ops.cast(y_pred, "float32")
    y_true = to_one_hot(y_true, y_pred.shape[-1])
    if sample_mask is not None:
        mask = ops.reshape(ops.cast(sample_mask, "float32"), (-1, 1, 1, 1))
        y_true, y_pred = y_true * mask, y_pred * mask
    return y_true, y_pred


def f_score(
    y_true, y_pred, beta=1.0, class_weights=None, smooth=SMOOTH, per_image=False, threshold=None, sample_mask=None
):
    """segmentation_models' F-score (Dice for beta=1), reduced over pixels and batch, then classes.

    Per class: ``((1+b^2) tp + smooth) / ((1+b^2) tp + b^2 fn + fp + smooth)``; then the
    class scores are multiplied by ``class_weights`` and averaged (a mean, not a weighted sum).
    """
    y_true, y_pred = _prepare(y_true, y_pred, sample_mask)
    if threshold is not None:
        y_pred = ops.cast(ops.greater(y_pred, threshold), "float32")
    axes = [1, 2] if per_image else [0, 1, 2]
    tp = ops.sum(y_true * y_pred, axis=axes)
    fp = ops.sum(y_pred, axis=axes) - tp
    fn = ops.sum(y_true, axis=axes) - tp
    b2 = beta**2
    score = ((1 + b2) * tp + smooth) / ((1 + b2) * tp + b2 * fn + fp + smooth)
    if per_image:
        score = ops.mean(score, axis=0)
    if class_weights is not None:
        score = score * ops.convert_to_tensor(class_weights, dtype="float32")
    return ops.mean(score)


def iou_score(y_true, y_pred, class_weights=None, smooth=SMOOTH, per_image=False, threshold=None):
    """segmentation_models' IoU (Jaccard): ``(tp + smooth) / (tp + fp + fn + smooth)`` per class."""
    y_true, y_pred = _prepare(y_true, y_pred)
    if threshold is not None:
        y_pred = ops.cast(ops.greater(y_pred, threshold), "float32")
    axes = [1, 2] if per_image else [0, 1, 2]
    intersection = ops.sum(y_true * y_pred, axis=axes)
    union = ops.sum(y_true + y_pred, axis=axes) - intersection
    score = (intersection + smooth) / (union + smooth)
    if per_image:
        score = ops.mean(score, axis=0)
    if class_weights is not None:
        score = score * ops.convert_to_tensor(class_weights, dtype="float32")
    return ops.mean(score)


def categorical_focal_loss(y_true, y_pred, alpha=0.25, gamma=2.0, sample_mask=None):
    """segmentation_models' focal loss: mean over every pixel and class of ``-t a (1-p)^g log p``.

    With ``sample_mask`` the mean is over the unmasked samples' pixels only.
    """
    y_true, y_pred = _prepare(y_true, y_pred, sample_mask)
    y_pred = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    loss = -y_true * (alpha * ops.power(1.0 - y_pred, gamma) * ops.log(y_pred))
    if sample_mask is None:
        return ops.mean(loss)
    per_sample = float(loss.shape[1] * loss.shape[2] * loss.shape[3])
    return ops.sum(loss) / (ops.sum(ops.cast(sample_mask, "float32")) * per_sample)


def _name_number(value: float) -> str:
    """``1.0`` -> ``"1"``, ``0.5`` -> ``"0p5"``: a multiplier that is safe in a metric/log key."""
    return f"{float(value):g}".replace(".", "p").replace("-", "m")


class SegLoss(keras.losses.Loss):
    """Base for seglib losses: float32 maths and ``+``/``*`` composition, serialisable.

    The loss returns a scalar for the batch, so Keras' reduction leaves it as it is; pass
    sample weights through a sum of losses only if every term understands them (they do not).
    """

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype="float32"):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __add__(self, other):
        if not isinstance(other, SegLoss):
            return NotImplemented
        return SumOfLosses(self, other)

    def __radd__(self, other):
        if not isinstance(other, SegLoss):
            return NotImplemented
        return SumOfLosses(other, self)

    def __mul__(self, value):
        if not isinstance(value, (int, float)):
            return NotImplemented
        return MultipliedLoss(self, value)

    __rmul__ = __mul__

    def masked(self, y_true, y_pred, sample_mask):
        """The loss of the samples ``sample_mask`` keeps (1) in a padded batch; padding (0) ignored."""
        raise NotImplementedError(f"{type(self).__name__} has no masked form")


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(SegLoss):
    """``1 - f_score(beta)``; with ``class_weights`` the score is ``mean(w_c * dice_c)``."""

    def __init__(self, beta=1.0, class_weights=None, smooth=SMOOTH, per_image=False, name="dice_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.beta = float(beta)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.smooth = float(smooth)
        self.per_image = bool(per_image)

    def call(self, y_true, y_pred):
        return self.masked(y_true, y_pred, None)

    def masked(self, y_true, y_pred, sample_mask):
        return 1.0 - f_score(
            y_true,
            y_pred,
            beta=self.beta,
            class_weights=self.class_weights,
            smooth=self.smooth,
            per_image=self.per_image,
            sample_mask=sample_mask,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "beta": self.beta,
            "class_weights": self.class_weights,
            "smooth": self.smooth,
            "per_image": self.per_image,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class CategoricalFocalLoss(SegLoss):
    """Focal loss (Lin et al. 2017) as segmentation_models: mean of ``-t a (1-p)^g log p``."""

    def __init__(self, alpha=0.25, gamma=2.0, name="focal_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha = float(alpha)
        self.gamma = float(gamma)

    def call(self, y_true, y_pred):
        return self.masked(y_true, y_pred, None)

    def masked(self, y_true, y_pred, sample_mask):
        return categorical_focal_loss(y_true, y_pred, alpha=self.alpha, gamma=self.gamma, sample_mask=sample_mask)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SumOfLosses(SegLoss):
    """``l1 + l2``, named ``<l1>_plus_<l2>``."""

    def __init__(self, l1, l2, name=None, **kwargs):
        l1 = _as_loss(l1)
        l2 = _as_loss(l2)
        super().__init__(name=name or f"{l1.name}_plus_{l2.name}", **kwargs)
        self.l1 = l1
        self.l2 = l2

    def call(self, y_true, y_pred):
        return self.l1.call(y_true, y_pred) + self.l2.call(y_true, y_pred)

    def masked(self, y_true, y_pred, sample_mask):
        return self.l1.masked(y_true, y_pred, sample_mask) + self.l2.masked(y_true, y_pred, sample_mask)

    def get_config(self):
        return {
            **super().get_config(),
            "l1": keras.saving.serialize_keras_object(self.l1),
            "l2": keras.saving.serialize_keras_object(self.l2),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultipliedLoss(SegLoss):
    """``multiplier * loss``, named ``<multiplier>_<loss>`` (``0.5`` is written ``0p5``)."""

    def __init__(self, loss, multiplier, name=None, **kwargs):
        loss = _as_loss(loss)
        super().__init__(name=name or f"{_name_number(multiplier)}_{loss.name}", **kwargs)
        self.loss = loss
        self.multiplier = float(multiplier)

    def call(self, y_true, y_pred):
        return self.multiplier * self.loss.call(y_true, y_pred)

    def masked(self, y_true, y_pred, sample_mask):
        return self.multiplier * self.loss.masked(y_true, y_pred, sample_mask)

    def get_config(self):
        return {
            **super().get_config(),
            "loss": keras.saving.serialize_keras_object(self.loss),
            "multiplier": self.multiplier,
        }


def _as_loss(value) -> SegLoss:
    """A SegLoss from an instance or its serialised config (what ``from_config`` receives)."""
    if isinstance(value, SegLoss):
        return value
    loss = keras.saving.deserialize_keras_object(value)
    if not isinstance(loss, SegLoss):
        raise TypeError(f"expected a seglib loss; found {type(loss).__name__}")
    return loss


def dice_focal_loss(num_classes: int = NUM_CLASSES, focal_weight: float = 1.0) -> SegLoss:
    """The original's loss: ``DiceLoss(class_weights=[1/C]*C) + focal_weight * CategoricalFocalLoss()``."""
    return DiceLoss(class_weights=[1.0 / num_classes] * num_classes) + focal_weight * CategoricalFocalLoss()
