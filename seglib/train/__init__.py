"""Training from prepared arrays (``loop``), its augmentation (``augment``), its checkpoints,
models kept between trainings (``pool``), and seglib's own loop on JAX (``jax_loop``)."""

from seglib.train.checkpoints import (
    CHECKPOINT_PATTERN,
    forget_best,
    forget_checkpoints,
    latest_checkpoint,
    load_model,
    prune_checkpoints,
    restore_checkpoint,
)
from seglib.train.loop import (
    POLICIES,
    TrainOptions,
    TrainResult,
    compile_model,
    enable_compile_cache,
    epoch_order,
    learning_rate_at,
    reset_dropout_seeds,
    train,
)
from seglib.train.pool import ModelPool

__all__ = [
    "CHECKPOINT_PATTERN",
    "POLICIES",
    "ModelPool",
    "TrainOptions",
    "TrainResult",
    "compile_model",
    "enable_compile_cache",
    "epoch_order",
    "forget_best",
    "forget_checkpoints",
    "latest_checkpoint",
    "learning_rate_at",
    "load_model",
    "prune_checkpoints",
    "reset_dropout_seeds",
    "restore_checkpoint",
    "train",
]
