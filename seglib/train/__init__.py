"""Training from prepared arrays (``loop``), and seglib's own loop on JAX (``jax_loop``)."""

from seglib.train.loop import (
    CHECKPOINT_PATTERN,
    POLICIES,
    ModelPool,
    TrainResult,
    compile_model,
    enable_compile_cache,
    epoch_order,
    latest_checkpoint,
    load_model,
    prune_checkpoints,
    reset_dropout_seeds,
    train,
)

__all__ = [
    "CHECKPOINT_PATTERN",
    "POLICIES",
    "ModelPool",
    "TrainResult",
    "compile_model",
    "enable_compile_cache",
    "epoch_order",
    "latest_checkpoint",
    "load_model",
    "prune_checkpoints",
    "reset_dropout_seeds",
    "train",
]
