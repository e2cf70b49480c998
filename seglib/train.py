"""Training from prepared arrays: resumable checkpoints, a NaN guard, hooks, seeds, precision.

``train()`` runs one ``fit()`` per epoch so that everything random in an epoch depends only
on ``(seed, epoch)``: the shuffle order is drawn from ``numpy.random.default_rng([seed,
epoch])`` and every dropout layer's seed state is reset from the same pair before the epoch.
With the optimizer state saved beside the weights, training 0->k and then k->n therefore
gives the model that 0->n gives (to floating-point noise), which is what HyperBand's warm
start relies on.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from seglib import losses as seglib_losses
from seglib import metrics as seglib_metrics
from seglib.model import NUM_CLASSES, build_unet, resolve_activation

log = logging.getLogger(__name__)

COMPILE_CACHE_ENV = "SEGLIB_COMPILE_CACHE"
CHECKPOINT_PATTERN = re.compile(r"^epoch_(\d{4,})\.keras$")


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


def load_model(path: str | os.PathLike, compile: bool = True) -> keras.Model:
    """A saved seglib ``.keras`` model, with seglib's losses and metrics registered first."""
    import seglib.losses  # noqa: F401  (registers the classes the file names)
    import seglib.metrics  # noqa: F401

    return keras.models.load_model(str(path), compile=compile)


def enable_compile_cache(cache_dir: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``cache_dir`` (or ``$SEGLIB_COMPILE_CACHE``).

    With the cache warm a U-Net training step loads in about a second instead of 30-40 s of
    XLA compilation. Only JAX has such a cache; on other backends this does nothing.
    """
    cache_dir = cache_dir or os.environ.get(COMPILE_CACHE_ENV)
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


def precision_policy(mixed_precision: bool | str) -> str:
    """The Keras dtype policy for ``mixed_precision``: False, True (bf16), "bf16" or "fp16"."""
    choices = {
        False: "float32",
        None: "float32",
        "fp32": "float32",
        "float32": "float32",
        True: "mixed_bfloat16",
        "bf16": "mixed_bfloat16",
        "bfloat16": "mixed_bfloat16",
        "mixed_bfloat16": "mixed_bfloat16",
        "fp16": "mixed_float16",
        "float16": "mixed_float16",
        "mixed_float16": "mixed_float16",
    }
    try:
        return choices[mixed_precision]
    except (KeyError, TypeError):
        raise ValueError(
            f"mixed_precision={mixed_precision!r}; expected False, True (bf16), 'bf16' or 'fp16'"
        ) from None


def auto_verbose(verbose: int | None) -> int:
    """Keras verbosity: a progress bar (1) in a terminal or notebook, one line per epoch (2) otherwise."""
    if verbose is not None:
        return verbose
    interactive = sys.stdout.isatty() or "ipykernel" in sys.modules
    return 1 if interactive else 2


def epoch_order(num_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle order of one epoch: a function of ``(seed, epoch)`` only."""
    return np.random.default_rng([seed, epoch]).permutation(num_samples)


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
    model: keras.Model,
    learning_rate: float,
    steps_per_execution: int = 1,
    jit_compile: bool | str = "auto",
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


def _checkpoint_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.keras"


def _state_path(checkpoint_dir: Path, epoch: int) -> Path:
    return checkpoint_dir / f"epoch_{epoch:04d}.json"


def latest_checkpoint(checkpoint_dir: str | os.PathLike, max_epoch: int) -> int:
    """The highest epoch <= ``max_epoch`` with a complete checkpoint (model and state), else 0."""
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        return 0
    best = 0
    for path in checkpoint_dir.iterdir():
        match = CHECKPOINT_PATTERN.match(path.name)
        if match:
            epoch = int(match.group(1))
            if best < epoch <= max_epoch and _state_path(checkpoint_dir, epoch).is_file():
                best = epoch
    return best


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: no half-written file."""
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def save_checkpoint(checkpoint_dir: Path, epoch: int, model: keras.Model, state: dict) -> Path:
    """Model with optimizer state as ``epoch_NNNN.keras`` and ``state`` as ``epoch_NNNN.json``.

    The JSON is written last: a checkpoint counts only when both files exist.
    """
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = _checkpoint_path(checkpoint_dir, epoch)
    _write_atomically(path, lambda p: model.save(p))
    _write_atomically(
        _state_path(checkpoint_dir, epoch),
        lambda p: p.write_text(json.dumps(state, indent=1)),
    )
    return path


# Settings added to the checkpoint's config after its first release, with the value every
# older checkpoint was trained with: an experiment resumed across a seglib upgrade goes on.
_CONFIG_ADDED = {"dropout_rng": "keras"}


def _check_same_config(state_file: Path, saved: dict, current: dict) -> None:
    saved = {**_CONFIG_ADDED, **saved}
    differing = {k: (saved.get(k), v) for k, v in current.items() if saved.get(k) != v}
    if differing:
        details = ", ".join(f"{k}: saved {a!r}, now {b!r}" for k, (a, b) in differing.items())
        raise ValueError(
            f"{state_file}: checkpoint was written by a different training configuration "
            f"({details}); use a new checkpoint_dir for a new configuration"
        )


def _is_finite(logs: dict) -> bool:
    return all(math.isfinite(v) for k, v in logs.items() if k in ("loss", "val_loss"))


def _best_val_loss(history: dict[str, list[float]]) -> float | None:
    values = history.get("val_loss") or history.get("loss") or []
    finite = [v for v in values if math.isfinite(v)]
    return min(finite) if finite else None


def train(
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    *,
    epochs: int,
    batch_size: int = 16,
    learning_rate: float = 0.007,
    activation: str | None = "relu",
    base_filters: int = 16,
    depth: int = 4,
    checkpoint_dir: str | os.PathLike | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    seed: int = 0,
    mixed_precision: bool | str = False,
    verbose: int | None = None,
    model: keras.Model | None = None,
    steps_per_execution: int | None = None,
    jit_compile: bool | str = "auto",
    compile_cache_dir: str | os.PathLike | None = None,
    num_classes: int = NUM_CLASSES,
    drop_remainder: bool = True,
    engine: str = "auto",
    dropout_rng: str = "keras",
) -> TrainResult:
    """Train the U-Net on float32 images ``(N, H, W, 3)`` and integer labels ``(N, H, W)``.

    With ``checkpoint_dir`` the model and optimizer state are saved after every epoch and
    training resumes from the latest checkpoint at or below ``epochs`` (HyperBand: budget 6
    after budget 2 trains epochs 2..5 only); the checkpoint must come from the same
    configuration. ``on_epoch_end(epoch, logs)`` is called after each finite epoch with the
    0-based epoch index and plain-float logs (``loss``, ``val_loss``, metrics), after that
    epoch's checkpoint is on disk. A non-finite loss stops training: the result has
    ``diverged=True`` and a message, and no exception is raised. ``model`` replaces the
    built U-Net (compiled here unless it already is). ``steps_per_execution``,
    ``jit_compile`` and ``compile_cache_dir`` (JAX's persistent cache; also
    ``$SEGLIB_COMPILE_CACHE``) are speed settings that do not change the result.

    Each epoch trains on ``len(x_train) // batch_size`` full batches of a fresh permutation
    (``drop_remainder``): a smaller last batch would make XLA compile the training step a
    second time (30-40 s on a GPU) and every sample is still seen across epochs.
    ``engine="auto"`` (the default) is "jax" on the JAX backend (except fp16, which needs
    fit()'s loss scaling) and "fit" elsewhere: measured 2.0x fit() on an H200 and 1.06x on
    a 2-core CPU, with the same losses (tests/test_backends.py).
    ``engine="jax"`` (JAX backend only) keeps the training data on the device and runs one
    jitted step per batch (``steps_per_execution=1``), k steps per call in a ``lax.scan``
    (k > 1) or the whole epoch in one call (0; the default on a GPU); its history has ``loss`` and the validation
    metrics but no training-set metrics.
    ``dropout_rng="rbg"`` draws dropout masks with JAX's RBG generator instead of threefry
    (``seglib.model.RbgDropout``; the same on other backends): a speed option to measure.
    """
    started = time.perf_counter()
    policy = precision_policy(mixed_precision)
    enable_compile_cache(compile_cache_dir)
    verbose = auto_verbose(verbose)
    keras.utils.set_random_seed(seed)
    config = {
        "batch_size": int(batch_size),
        "learning_rate": float(learning_rate),
        "activation": resolve_activation(activation),
        "base_filters": int(base_filters),
        "depth": int(depth),
        "seed": int(seed),
        "precision": policy,
        "train_size": int(len(x_train)),
        "num_classes": int(num_classes),
        "dropout_rng": dropout_rng,
    }
    if model is not None:
        config.update(base_filters=None, depth=None)

    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    initial_epoch = latest_checkpoint(checkpoint_dir, epochs) if checkpoint_dir else 0
    history: dict[str, list[float]] = {}
    if initial_epoch:
        state_file = _state_path(checkpoint_dir, initial_epoch)
        state = json.loads(state_file.read_text())
        _check_same_config(state_file, state["config"], config)
        history = {k: list(v) for k, v in state["history"].items()}
        model = load_model(_checkpoint_path(checkpoint_dir, initial_epoch))
        log.info("resumed from %s", _checkpoint_path(checkpoint_dir, initial_epoch))
    else:
        model = model if model is not None else _build(x_train, y_train, config, policy)
    engine = resolve_engine(engine, model)
    if getattr(model, "optimizer", None) is None or not model.compiled:
        # Keras' own steps_per_execution only applies to fit(); the jax engine reads it itself.
        compile_model(model, learning_rate, (steps_per_execution or 1) if engine == "fit" else 1, jit_compile)

    validation = (x_val, y_val) if x_val is not None else None
    diverged = False
    message = ""
    last_checkpoint = (
        str(_checkpoint_path(checkpoint_dir, initial_epoch)) if initial_epoch else None
    )
    if initial_epoch < epochs:
        runner = _make_engine(engine, model, x_train, y_train, validation, batch_size, verbose, steps_per_execution)
    epoch = initial_epoch
    for epoch in range(initial_epoch, epochs):
        epoch_started = time.perf_counter()
        order = epoch_order(len(x_train), seed, epoch)
        if drop_remainder and len(order) >= batch_size:
            order = order[: len(order) // batch_size * batch_size]
        reset_dropout_seeds(model, seed, epoch)
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
                f"val_loss {logs.get('val_loss')} (activation {config['activation']!r}, "
                f"learning rate {learning_rate}); stopped, last good epoch {epoch}"
                + (f"; {message}" if message else "")
            )
            log.warning(message)
            break
        if checkpoint_dir is not None:
            state = {"epoch": epoch + 1, "config": config, "history": history}
            last_checkpoint = str(save_checkpoint(checkpoint_dir, epoch + 1, model, state))
        if on_epoch_end is not None:
            on_epoch_end(epoch, dict(logs))
    else:
        epoch = epochs

    return TrainResult(
        model=model,
        history=history,
        diverged=diverged,
        epochs_trained=epoch if diverged else max(epochs, initial_epoch),
        initial_epoch=initial_epoch,
        seconds=time.perf_counter() - started,
        best_val_loss=_best_val_loss(history),
        message=message,
        checkpoint=last_checkpoint,
        metadata={"config": config, "backend": keras.backend.backend(), "engine": engine},
    )


def _build(x_train, y_train, config: dict, policy: str) -> keras.Model:
    """The U-Net for these arrays, with its layers created under the dtype ``policy``."""
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
        )
    finally:
        keras.config.set_dtype_policy(previous)


ENGINES = ("auto", "fit", "jax")


def resolve_engine(engine: str, model: keras.Model) -> str:
    """The training loop ``engine`` names: "auto" is "jax" on JAX unless the model is fp16."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; expected one of {ENGINES}")
    if engine != "auto":
        return engine
    return "jax" if keras.backend.backend() == "jax" and not _is_fp16(model) else "fit"


def _is_fp16(model: keras.Model) -> bool:
    """Whether any layer computes in float16 (a loaded model's own policy says float32)."""
    policies = {keras.config.dtype_policy().name, model.dtype_policy.name}
    return "mixed_float16" in policies | {layer.dtype_policy.name for layer in model.layers}


class _FitEngine:
    """One ``Model.fit`` call per epoch on the epoch's order: works on every backend."""

    def __init__(self, model, x_train, y_train, validation, batch_size, verbose):
        self.model, self.x, self.y = model, x_train, y_train
        self.validation, self.batch_size, self.verbose = validation, batch_size, verbose

    def run_epoch(self, order: np.ndarray, epoch: int, epochs: int) -> dict:
        fit = self.model.fit(
            self.x[order],
            self.y[order],
            batch_size=self.batch_size,
            epochs=epoch + 1,
            initial_epoch=epoch,
            shuffle=False,
            validation_data=self.validation,
            callbacks=[keras.callbacks.TerminateOnNaN()],
            verbose=self.verbose,
        )
        return {k: float(v[-1]) for k, v in fit.history.items()}


class _JaxEngine:
    """Backend-specific (JAX): data on the device; one jitted call per step, or ``lax.scan``.

    ``fit()`` copies each batch from host memory; here the permutation gathers batches on
    the device. ``steps_per_execution`` 1 dispatches one compiled step per batch (JAX's
    asynchronous dispatch keeps the device busy); k > 1 runs k steps per call inside a
    ``lax.scan``, and 0 the whole epoch in one call. None (the default) picks 1 on the CPU,
    where the scan was 16x slower (convolutions inside a while loop), and 0 on a GPU, where
    the whole-epoch scan trained 2,075-2,094 patches/s (H200, bf16, batch 24, full U-Net).
    The step is the one ``fit()`` runs: stateless forward pass, the compiled loss, gradients,
    ``optimizer.stateless_apply``. Variables are written back after every epoch, so
    checkpoints, validation and hooks see the model as ``fit()`` would leave it.
    """

    def __init__(self, model, x_train, y_train, validation, batch_size, verbose, steps_per_execution):
        import jax

        self.model, self.validation, self.batch_size, self.verbose = model, validation, batch_size, verbose
        if steps_per_execution is None:  # measured: scan on an H200 2,075-2,094 patches/s; per-step on CPU
            steps_per_execution = 1 if jax.default_backend() == "cpu" else 0
        self.steps_per_execution = steps_per_execution
        self.x = jax.device_put(np.asarray(x_train))
        self.y = jax.device_put(np.asarray(y_train))
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self._run = jax.jit(self._scan)
        self._run_one = jax.jit(self._one)

    def _step(self, state, indices):
        import jax
        import jax.numpy as jnp

        trainable, non_trainable, optimizer_state, x, y = state
        xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)

        def loss_of(trainable):
            y_pred, updated = self.model.stateless_call(trainable, non_trainable, xb, training=True)
            return self.model.loss(yb, y_pred), updated

        (loss, non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        trainable, optimizer_state = self.model.optimizer.stateless_apply(optimizer_state, grads, trainable)
        return (trainable, non_trainable, optimizer_state, x, y), loss

    def _one(self, state, x, y, batch):
        (trainable, non_trainable, optimizer_state, _, _), loss = self._step((*state, x, y), batch)
        return (trainable, non_trainable, optimizer_state), loss

    def _scan(self, state, x, y, batches):
        import jax

        (trainable, non_trainable, optimizer_state, _, _), losses = jax.lax.scan(
            self._step, (*state, x, y), batches
        )
        return (trainable, non_trainable, optimizer_state), losses

    def run_epoch(self, order: np.ndarray, epoch: int, epochs: int) -> dict:
        model = self.model
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
        )
        batches = order.reshape(-1, self.batch_size).astype(np.int32)
        losses = []
        if self.steps_per_execution == 1:
            for batch in batches:
                state, loss = self._run_one(state, self.x, self.y, batch)
                losses.append(loss)
            losses = [np.asarray(losses)]
        else:
            chunk = self.steps_per_execution if self.steps_per_execution > 1 else len(batches)
            for start in range(0, len(batches), chunk):
                state, chunk_losses = self._run(state, self.x, self.y, batches[start : start + chunk])
                losses.append(np.asarray(chunk_losses))
        for variables, values in zip(
            (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables), state
        ):
            for variable, value in zip(variables, values):
                variable.assign(value)
        logs = {"loss": float(np.mean(np.concatenate(losses)))}
        if self.validation is not None and math.isfinite(logs["loss"]):
            scores = model.evaluate(*self.validation, batch_size=self.batch_size, verbose=0, return_dict=True)
            logs.update({f"val_{k}": float(v) for k, v in scores.items()})
        if self.verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {shown}", flush=True)
        return logs


def _make_engine(engine, model, x_train, y_train, validation, batch_size, verbose, steps_per_execution):
    if engine == "jax":
        if keras.backend.backend() != "jax":
            raise ValueError(f"engine='jax' needs KERAS_BACKEND=jax; this process runs {keras.backend.backend()!r}")
        if _is_fp16(model):
            raise ValueError("engine='jax' does not scale losses: use bf16 (mixed_precision=True) or engine='fit'")
        return _JaxEngine(model, x_train, y_train, validation, batch_size, verbose, steps_per_execution)
    return _FitEngine(model, x_train, y_train, validation, batch_size, verbose)
