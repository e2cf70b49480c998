"""Training from prepared arrays: resumable checkpoints, a NaN guard, hooks, seeds, precision.

``train()`` trains one epoch at a time so that everything random in an epoch depends only
on ``(seed, epoch)``: the shuffle order is drawn from ``numpy.random.default_rng([seed,
epoch])`` and every dropout layer's seed state is reset from the same pair before the epoch.
With the optimizer state saved beside the weights, training 0->k and then k->n therefore
gives the model that 0->n gives (to floating-point noise), which is what HyperBand's warm
start relies on.

The recipe follows the same rule. Augmentation (``seglib.train.augment``) is drawn from
``(seed, epoch)``; the learning rate is set before each epoch from the epoch's index and a
fixed horizon (``schedule_epochs``: the run's epochs, or R for a search's trials, never a
rung's budget); ``keep_epoch="best"`` keeps the best epoch's weights beside the checkpoints
(``best_epoch_NNNN.npz``), so a later rung that never beats an earlier one returns the
earlier one's weights; ``patience`` is judged from the history, which checkpoints carry.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from seglib import losses as seglib_losses
from seglib import metrics as seglib_metrics
from seglib.artifacts import read_json
from seglib.model import build_unet
from seglib.palette import NUM_CLASSES
from seglib.settings import RECIPE, Settings
from seglib.system import COMPILE_CACHE_VARIABLE
from seglib.train.augment import augment
from seglib.train.checkpoints import (
    check_same_config,
    checkpoint_path,
    latest_checkpoint,
    load_best,
    restore_checkpoint,
    save_best,
    save_checkpoint,
    state_path,
)
from seglib.train.pool import ModelPool

log = logging.getLogger(__name__)

# Keras' dtype policy for each of seglib's precision names.
POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
LOOPS = ("auto", "fit", "jax")


@dataclass
class TrainResult:
    """What a training run gives back.

    ``epochs_trained`` is the number of epochs the returned model has been trained in all
    (checkpointed epochs included); this call trained ``epochs_trained - initial_epoch`` of
    them. ``history`` holds one value per epoch from epoch 0, also across a resume.
    """

    model: keras.Model
    history: dict[str, list[float]]
    diverged: bool
    epochs_trained: int
    initial_epoch: int
    seconds: float
    best_val_loss: float | None = None
    message: str = ""
    checkpoint: str | None = None
    metadata: dict = field(default_factory=dict)
    kept_epoch: int | None = None  # the epoch (1-based) whose weights ``model`` holds; None: the last


def enable_compile_cache(cache_dir: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``cache_dir`` (or ``$SEGLIB_COMPILE_CACHE``).

    With the cache warm a U-Net training step loads in about a second instead of 30-40 s of
    XLA compilation. Only JAX has such a cache; on other backends this does nothing.
    """
    cache_dir = cache_dir or os.environ.get(COMPILE_CACHE_VARIABLE)
    if not cache_dir or keras.backend.backend() != "jax":
        return None
    import jax  # backend-specific: JAX's persistent compilation cache

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir != str(cache_dir):
        jax.config.update("jax_compilation_cache_dir", str(cache_dir))
        # JAX decides once, at its first compilation, whether a cache is in use: forget that
        # decision so a process that already compiled something still starts using it.
        from jax.experimental.compilation_cache import compilation_cache

        compilation_cache.reset_cache()
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return str(cache_dir)


def auto_verbose(verbose: int | None) -> int:
    """Keras verbosity: a progress bar (1) in a terminal or notebook, one line per epoch (2) otherwise."""
    if verbose is not None:
        return verbose
    interactive = sys.stdout.isatty() or "ipykernel" in sys.modules
    return 1 if interactive else 2


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle order of one epoch: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


def learning_rate_at(settings: Settings, epoch: int, schedule_epochs: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``settings.lr_schedule`` over ``schedule_epochs``.

    "cosine": ``warmup_epochs`` of linear warm-up to the learning rate, then a cosine decay
    that would reach 0 at ``schedule_epochs``; epochs past it keep the last epoch's rate.
    """
    base = settings.learning_rate
    if settings.lr_schedule == "constant":
        return base
    warmup = min(settings.warmup_epochs, schedule_epochs - 1)
    epoch = min(epoch, schedule_epochs - 1)
    if epoch < warmup:
        return base * (epoch + 1) / (warmup + 1)
    progress = (epoch - warmup) / (schedule_epochs - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def best_epoch(history: dict[str, list[float]]) -> int | None:
    """The 1-based epoch with the lowest finite validation loss (training loss without one)."""
    values = history.get("val_loss") or history.get("loss") or []
    finite = [(v, k) for k, v in enumerate(values) if math.isfinite(v)]
    return min(finite)[1] + 1 if finite else None


def reset_dropout_seeds(model: keras.Model, seed: int, epoch: int) -> int:
    """Set every dropout stream of ``model`` from ``(seed, epoch, layer)``; returns how many.

    Keras keeps each Dropout's RNG state in a ``SeedGenerator`` that advances per call and is
    not saved in ``.keras`` files; resetting it per epoch makes resumed runs draw the same
    masks as uninterrupted ones.
    """
    count = 0
    for index, layer in enumerate(model.layers):
        generator = getattr(layer, "seed_generator", None)
        if isinstance(generator, keras.random.SeedGenerator):
            value = np.random.default_rng([seed, epoch, index]).integers(0, 2**31 - 1)
            generator.state.assign(np.array([value, 0], dtype=generator.state.dtype))
            count += 1
    return count


def compile_model(
    model: keras.Model, learning_rate: float, steps_per_execution: int = 1, jit_compile: bool | str = "auto"
) -> keras.Model:
    """Compile with Adam, the original's Dice + focal loss and seglib's training metrics."""
    num_classes = int(model.output_shape[-1])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss=seglib_losses.dice_focal_loss(num_classes),
        metrics=seglib_metrics.training_metrics(num_classes),
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def _is_finite(logs: dict) -> bool:
    return all(math.isfinite(v) for k, v in logs.items() if k in ("loss", "val_loss"))


def _best_val_loss(history: dict[str, list[float]]) -> float | None:
    values = history.get("val_loss") or history.get("loss") or []
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else None


# ---------------------------------------------------------------------------------------------
# Training


@dataclass(frozen=True)
class TrainOptions:
    """How :func:`train` runs, as opposed to what it trains (``Settings``).

    ``loop``: "auto" (the default) is "jax" on the JAX backend (except fp16, which needs
    fit()'s loss scaling) and "fit" elsewhere: measured 2.0x fit() on an H200 and 1.06x on a
    2-core CPU, with the same losses (tests/test_backends.py). "jax" (JAX only,
    ``seglib.train.jax_loop``) keeps the training data on the device; its history has
    ``loss`` and the validation metrics but no training-set metrics.
    ``verbose``: Keras' verbosity (None: a bar in a terminal or notebook, a line otherwise).
    ``steps_per_execution``, ``jit_compile`` and ``compile_cache_dir`` (JAX's persistent
    cache; also ``$SEGLIB_COMPILE_CACHE``) are speed options that do not change the result.
    ``drop_remainder``: each epoch trains ``len(x_train) // batch_size`` full batches of a
    fresh permutation; a smaller last batch would make XLA compile the step a second time
    (30-40 s on a GPU), and every sample is still seen across epochs.
    ``dropout_rng="rbg"`` draws dropout masks with JAX's RBG generator instead of threefry
    (``seglib.model.RbgDropout``; the same on other backends): a speed option to measure.
    ``pad_batches`` (jax loop; default: on a GPU) pads each batch to a power of two with
    masked samples, so batch sizes share training programs with each one's own loss and
    gradient. ``pool`` (a :class:`ModelPool`) lends and takes back the compiled model, so
    trainings of one architecture in one process compile their programs once. ``model``
    replaces the built U-Net (compiled here unless it already is).
    """

    loop: str = "auto"
    verbose: int | None = None
    steps_per_execution: int | None = None
    jit_compile: bool | str = "auto"
    compile_cache_dir: str | os.PathLike | None = None
    drop_remainder: bool = True
    dropout_rng: str = "keras"
    pad_batches: bool | None = None
    pool: ModelPool | None = None
    model: keras.Model | None = None


def train(
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    *,
    settings: Settings,
    epochs: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    options: TrainOptions | None = None,
    schedule_epochs: int | None = None,
) -> TrainResult:
    """Train the U-Net of ``settings`` on float32 images ``(N, H, W, 3)`` and labels ``(N, H, W)``.

    ``settings`` gives the architecture (base_filters, depth, activation), the optimisation
    (batch_size, learning_rate, precision) and the seed; ``epochs`` defaults to its epochs.
    With ``checkpoint_dir`` the model and optimizer state are saved after every epoch and
    training resumes from the latest checkpoint at or below ``epochs`` (HyperBand: budget 6
    after budget 2 trains epochs 2..5 only); the checkpoint must come from the same
    configuration. ``on_epoch_end(epoch, logs)`` is called after each finite epoch with the
    0-based epoch index and plain-float logs (``loss``, ``val_loss``, metrics), after that
    epoch's checkpoint is on disk. A non-finite loss stops training: the result has
    ``diverged=True`` and a message, and no exception is raised. ``options``
    (:class:`TrainOptions`) say how to run it. ``schedule_epochs`` is the learning-rate
    schedule's horizon (default: ``settings.epochs``); a search passes R so that its rungs
    continue one schedule. The recipe (augment, lr_schedule, keep_epoch, patience) is the
    settings'; ``kept_epoch`` in the result says which epoch's weights the model holds.
    """
    options = options or TrainOptions()
    model, pool, loop = options.model, options.pool, options.loop
    dropout_rng = options.dropout_rng
    started = time.perf_counter()
    epochs = settings.epochs if epochs is None else int(epochs)
    schedule_epochs = settings.epochs if schedule_epochs is None else int(schedule_epochs)
    policy = POLICIES[settings.precision]
    enable_compile_cache(options.compile_cache_dir)
    verbose = auto_verbose(options.verbose)
    config = run_config(settings, len(x_train), dropout_rng, model, schedule_epochs)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    initial_epoch = latest_checkpoint(checkpoint_dir, epochs) if checkpoint_dir else 0
    history: dict[str, list[float]] = {}
    if initial_epoch:
        state_file = state_path(checkpoint_dir, initial_epoch)
        state = read_json(state_file)
        check_same_config(state_file, state["config"], config)
        history = {k: list(v) for k, v in state["history"].items()}
    pool_key = _pool_key(x_train, loop, config)
    initial = None
    if pool is not None and model is None:
        model, initial = pool.take(pool_key, settings.learning_rate)
        if model is None:
            model, initial = _build_for_pool(x_train, config, settings, options)
    elif model is None:
        model = _build(x_train, config, policy)
    loop = resolve_loop(loop, model)
    if getattr(model, "optimizer", None) is None or not model.compiled:
        # Keras' own steps_per_execution only applies to fit(); the jax loop reads it itself.
        steps = (options.steps_per_execution or 1) if loop == "fit" else 1
        compile_model(model, settings.learning_rate, steps, options.jit_compile)
    if initial_epoch:  # weights and optimizer state, into the compiled model
        restore_checkpoint(model, checkpoint_path(checkpoint_dir, initial_epoch))
        log.info("resumed from %s", checkpoint_path(checkpoint_dir, initial_epoch))

    validation = (x_val, y_val) if x_val is not None else None
    diverged = False
    message = ""
    last_checkpoint = str(checkpoint_path(checkpoint_dir, initial_epoch)) if initial_epoch else None
    if initial_epoch < epochs:
        runner = _make_loop(
            loop,
            model,
            x_train,
            y_train,
            validation,
            settings.batch_size,
            verbose,
            options.steps_per_execution,
            pool.on_device if pool is not None else None,
            options.pad_batches,
            settings=settings,
        )
    kept = best_epoch(history) if settings.keep_epoch == "best" else None
    best_weights = None
    if kept is not None and kept != initial_epoch:
        best_weights = load_best(checkpoint_dir, kept) if checkpoint_dir else None
        if best_weights is None:
            log.warning(
                "no weights of best epoch %d in %s: counting from epoch %d", kept, checkpoint_dir, initial_epoch
            )
            kept = initial_epoch
    if kept is not None and kept == initial_epoch:
        best_weights = model.get_weights()
    stopped = _patience_spent(history, settings.patience)
    epoch = initial_epoch
    for epoch in range(initial_epoch, epochs if not stopped else initial_epoch):
        epoch_started = time.perf_counter()
        if settings.lr_schedule != "constant":
            model.optimizer.learning_rate = learning_rate_at(settings, epoch, schedule_epochs)
        order = epoch_order(len(x_train), settings.seed, epoch)
        if options.drop_remainder and len(order) >= settings.batch_size:
            order = order[: len(order) // settings.batch_size * settings.batch_size]
        reset_dropout_seeds(model, settings.seed, epoch)
        try:
            logs = runner.run_epoch(order, epoch, epochs)
        except FloatingPointError as error:  # a backend that raises on NaN instead of returning it
            logs = {"loss": math.nan}
            message = str(error)
        logs["epoch_seconds"] = time.perf_counter() - epoch_started
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if not _is_finite(logs):
            diverged = True
            message = (
                f"training diverged in epoch {epoch + 1} of {epochs}: loss {logs.get('loss')}, "
                f"val_loss {logs.get('val_loss')} (activation {settings.activation!r}, "
                f"learning rate {settings.learning_rate}); stopped, last good epoch {epoch}"
                + (f"; {message}" if message else "")
            )
            log.warning(message)
            break
        if checkpoint_dir is not None:
            state = {"epoch": epoch + 1, "config": config, "history": history}
            last_checkpoint = str(save_checkpoint(checkpoint_dir, epoch + 1, model, state))
        if settings.keep_epoch == "best" and best_epoch(history) == epoch + 1:
            kept, best_weights = epoch + 1, model.get_weights()
            if checkpoint_dir is not None:
                save_best(checkpoint_dir, kept, best_weights)
        if on_epoch_end is not None:
            on_epoch_end(epoch, dict(logs))
        if _patience_spent(history, settings.patience):
            stopped = True
            break
    else:
        epoch = epochs
    if stopped:
        epoch = len(history.get("loss", []))
        message = f"stopped early after epoch {epoch}: no lower val_loss in {settings.patience} epochs"
        log.info(message)
    if kept is not None and best_weights is not None and kept != epoch:
        model.set_weights(best_weights)
    if pool is not None and initial is not None:
        pool.keep(pool_key, model, initial)

    recipe = {name: getattr(settings, name) for name in RECIPE}
    recipe.update(schedule_epochs=schedule_epochs, kept_epoch=kept)
    return TrainResult(
        model=model,
        history=history,
        diverged=diverged,
        epochs_trained=epoch if diverged or stopped else max(epochs, initial_epoch),
        initial_epoch=initial_epoch,
        seconds=time.perf_counter() - started,
        best_val_loss=_best_val_loss(history),
        message=message,
        checkpoint=last_checkpoint,
        metadata={"config": config, "backend": keras.backend.backend(), "loop": loop, "recipe": recipe},
        kept_epoch=kept,
    )


def pooled_model(x_train, settings: Settings, options: TrainOptions) -> keras.Model:
    """The model ``train`` takes from ``options.pool`` for these arrays and settings.

    Built (and kept in the pool) if the pool has none, as ``train`` would build it, so that its
    programs can be compiled before the training that will take it (``seglib.train.ahead``).
    """
    config = run_config(settings, len(x_train), options.dropout_rng)
    key = _pool_key(x_train, options.loop, config)
    model = options.pool.peek(key)
    if model is None:
        model, initial = _build_for_pool(x_train, config, settings, options)
        options.pool.keep(key, model, initial)
    return model


def _pool_key(x_train, loop: str, config: dict) -> tuple:
    """What a compiled model is made of: shapes, batch size and learning rate are the programs' inputs."""
    names = ("activation", "base_filters", "depth", "seed", "precision", "num_classes", "dropout_rng")
    return (tuple(x_train.shape[1:]), loop, *(config[k] for k in names))


def _build_for_pool(x_train, config: dict, settings: Settings, options: TrainOptions) -> tuple[keras.Model, list]:
    """A new compiled model for the pool and its initial weights (what the pool resets it to)."""
    model = _build(x_train, config, POLICIES[settings.precision])
    compile_model(
        model,
        settings.learning_rate,
        1 if resolve_loop(options.loop, model) == "jax" else (options.steps_per_execution or 1),
        options.jit_compile,
    )
    model.optimizer.build(model.trainable_variables)
    return model, model.get_weights()


def _patience_spent(history: dict[str, list[float]], patience: int | None) -> bool:
    """Whether the last ``patience`` epochs brought no lower validation loss than the best before."""
    best = best_epoch(history)
    return patience is not None and best is not None and len(history.get("loss", [])) - best >= patience


def run_config(
    settings: Settings,
    train_size: int,
    dropout_rng: str,
    model: keras.Model | None = None,
    schedule_epochs: int | None = None,
) -> dict:
    """What a checkpoint must have been trained with to be resumed: saved beside every checkpoint."""
    config = {
        "batch_size": settings.batch_size,
        "learning_rate": settings.learning_rate,
        "activation": settings.activation,
        "base_filters": settings.base_filters,
        "depth": settings.depth,
        "seed": settings.seed,
        "precision": POLICIES[settings.precision],
        "train_size": train_size,
        "num_classes": NUM_CLASSES,
        "dropout_rng": dropout_rng,
        "augment": settings.augment,
        "lr_schedule": settings.lr_schedule,
        "warmup_epochs": settings.warmup_epochs,
        "schedule_epochs": schedule_epochs if settings.lr_schedule != "constant" else None,
    }
    if model is not None:
        config.update(base_filters=None, depth=None, num_classes=int(model.output_shape[-1]))
    return config


def _build(x_train, config: dict, policy: str, activation_switch: bool = False) -> keras.Model:
    """The U-Net for these arrays, with its layers created under the dtype ``policy``.

    The global seed is set here, where a model is made, and not for every training: under
    TensorFlow setting it makes every traced step function trace again, which cost a model
    lent by the pool 1.3-2 s per trial on a 2-core CPU.
    """
    keras.utils.set_random_seed(config["seed"])
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        return build_unet(
            input_shape=tuple(x_train.shape[1:]),
            num_classes=config["num_classes"],
            activation=config["activation"],
            base_filters=config["base_filters"],
            depth=config["depth"],
            seed=config["seed"],
            dropout_rng=config["dropout_rng"],
            activation_switch=activation_switch,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def resolve_loop(loop: str, model: keras.Model) -> str:
    """The training loop ``loop`` names: "auto" is "jax" on JAX unless the model is fp16."""
    if loop not in LOOPS:
        raise ValueError(f"loop={loop!r}; expected one of {LOOPS}")
    if loop != "auto":
        return loop
    return "jax" if keras.backend.backend() == "jax" and not is_fp16(model) else "fit"


def is_fp16(model: keras.Model) -> bool:
    """Whether any layer computes in float16 (a loaded model's own policy says float32)."""
    policies = {keras.config.dtype_policy().name, model.dtype_policy.name}
    return "mixed_float16" in policies | {layer.dtype_policy.name for layer in model.layers}


class _FitLoop:
    """One ``Model.fit`` call per epoch on the epoch's order: works on every backend."""

    def __init__(self, model, x_train, y_train, validation, batch_size, verbose, settings):
        self.model, self.x, self.y = model, x_train, y_train
        self.batch_size, self.verbose = batch_size, verbose
        self.augment, self.seed = settings.augment, settings.seed
        # Validated in the trial's batch size, as the original did and the jax and packed loops
        # do: Dice pools over a batch, so the batch size is part of the validation loss.
        self.validation = {}
        if validation is not None:
            data = _batches(*validation, batch_size)
            self.validation = {
                "validation_data": data.get("x") if "y" not in data else (data["x"], data["y"]),
                "validation_batch_size": data.get("batch_size"),
            }

    def run_epoch(self, order: np.ndarray, epoch: int, epochs: int) -> dict:
        timer = _TrainTimer()
        started = time.perf_counter()
        x, y = augment(self.x, self.y, self.augment, self.seed, epoch)
        augment_seconds = time.perf_counter() - started
        fit = self.model.fit(
            **_batches(x[order], y[order], self.batch_size),
            **self.validation,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            callbacks=[keras.callbacks.TerminateOnNaN(), timer],
            verbose=self.verbose,
        )
        logs = {k: float(v[-1]) for k, v in fit.history.items()}
        return {**logs, "train_seconds": timer.seconds, "augment_seconds": augment_seconds}


def _batches(x, y, batch_size: int) -> dict:
    """``fit``'s ``x``, ``y`` and ``batch_size`` for ``(x, y)`` in batches of ``batch_size``.

    On TensorFlow a dataset whose batch dimension is unknown, so a lent model's steps are traced
    once for every batch size (numpy arrays give each its own static shape: a second trace,
    2-4 s on a 2-core CPU); elsewhere the arrays, as ``fit`` takes them. The dataset prefetches
    two batches with tf.data's autotuning off: with it on, the end of many epochs' ``fit``
    waited for the autotuner's next ~5 s wake-up (14-15 s of a quick search's 82 s of epochs
    on a 2-core CPU), and without the explicit prefetch the steps lost their overlap with
    batching (30 % slower).
    """
    if keras.backend.backend() != "tensorflow":
        return {"x": x, "y": y, "batch_size": batch_size}
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(2)
    return {"x": dataset.with_options(options)}


class _TrainTimer(keras.callbacks.Callback):
    """Seconds of an epoch's training steps (up to validation), as ``train_seconds`` in the logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self.started, self.seconds = time.perf_counter(), None

    def on_test_begin(self, logs=None):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds is None:
            self.seconds = time.perf_counter() - self.started


def _make_loop(
    loop,
    model,
    x_train,
    y_train,
    validation,
    batch_size,
    verbose,
    steps_per_execution,
    on_device=None,
    pad_batches=None,
    *,
    settings: Settings,
):
    if loop == "jax":
        if keras.backend.backend() != "jax":
            raise ValueError(f"loop='jax' needs KERAS_BACKEND=jax; this process runs {keras.backend.backend()!r}")
        if is_fp16(model):
            raise ValueError("loop='jax' does not scale losses: use precision='bf16' or loop='fit'")
        from seglib.train.jax_loop import JaxLoop

        return JaxLoop(
            model,
            x_train,
            y_train,
            validation,
            batch_size,
            verbose,
            steps_per_execution,
            on_device,
            pad_batches,
            (settings.augment, settings.seed),
        )
    return _FitLoop(model, x_train, y_train, validation, batch_size, verbose, settings)
