"""Backend-specific (JAX): k trials of one architecture trained together in one compiled program.

On a GPU a training step of seglib's U-Net costs about 7 ms whatever its batch, plus 0.19 ms
per patch (H200), so a trial of batch 1 keeps the device a few per cent busy. Packing trials
makes one step train all of them: ``jax.vmap`` over their weights and optimizer states, each
with its own learning rate (a variable of its optimizer's state), its own shuffle order drawn
from its own ``(seed, epoch)`` as ``seglib.train.loop`` draws it, its own dropout streams, and
its own batch size: every trial's batch is padded to the pack's shape with samples masked out
of its loss (``SegLoss.masked``), and a trial whose epoch has fewer steps than the pack's, or
whose epochs are not being trained, sits out those steps unchanged (its new state is dropped
with ``jnp.where``). So each trial trains exactly as it would alone with ``train``, to
floating-point noise, and its checkpoints are ``train``'s: either can resume the other's.
The activation is an input of the program too: the step is traced with a twin of the U-Net
whose activations are ``ActivationSwitch`` layers, each trial's choice a slice of the stacked
weights, so trials of every activation share one pack and one program (3 training programs
for the original's search space, batch sizes padded to 8, 16 and 32, instead of 12).

Implementation notes. Each trial keeps its own Keras model (its validation, checkpoints and
the model handed back, all plain U-Nets); the twin only traces the packed step. Every epoch
each model's variables (and its activation's one-hot, where the twin has a switch) are
stacked along a new first axis, the pack's steps run (one jitted call per step, or on a GPU
calls of a fixed number of steps in a ``lax.scan``, as ``JaxLoop``), and each trial's slice is
written back to its model.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from seglib.artifacts import read_json
from seglib.model import ActivationSwitch, one_hot_activation
from seglib.settings import RECIPE, Settings
from seglib.train.checkpoints import (
    check_same_config,
    checkpoint_path,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
    state_path,
)
from seglib.train.jax_loop import STEPS_PER_CALL, chunks, padded_size, validate
from seglib.train.loop import (
    POLICIES,
    TrainOptions,
    TrainResult,
    _best_val_loss,
    _build,
    compile_model,
    enable_compile_cache,
    epoch_order,
    is_fp16,
    reset_dropout_seeds,
    run_config,
)
from seglib.train.pool import device_put

# What every trial of a pack must share: the program's shapes and layers (the activation is an
# input of the program, not part of it).
ARCHITECTURE = ("base_filters", "depth", "precision", "patch_size")
# What a model lent by a ModelPool must match besides the input shape and seed.
_POOLED = ("activation", "base_filters", "depth", "precision", "num_classes", "dropout_rng")


@dataclass(frozen=True)
class PackedTrial:
    """One trial of a pack: its settings, the epoch it trains to, and its checkpoint folder (warm start)."""

    settings: Settings
    epochs: int
    checkpoint_dir: str | os.PathLike | None = None


@dataclass
class _Member:
    trial: PackedTrial
    model: keras.Model
    config: dict
    initial_epoch: int
    history: dict
    diverged: bool = False
    message: str = ""
    checkpoint: str | None = None
    started: float = 0.0
    failed_epoch: int | None = None
    pool_key: tuple | None = None  # lent by a ModelPool, with its initial weights
    initial: list | None = None

    @property
    def batch_size(self) -> int:
        return self.trial.settings.batch_size

    def trains(self, epoch: int) -> bool:
        return not self.diverged and self.initial_epoch <= epoch < self.trial.epochs


def train_packed(
    x_train,
    y_train,
    x_val=None,
    y_val=None,
    *,
    trials: Sequence[PackedTrial],
    on_epoch_end: Callable[[int, int, dict], None] | None = None,
    options: TrainOptions | None = None,
    slots: int | None = None,
) -> list[TrainResult]:
    """Train ``trials`` together; one :class:`TrainResult` each, as ``train`` would give it alone.

    Every trial resumes from the latest checkpoint in its folder at or below its epochs and
    saves one after each epoch, as ``train`` does. ``on_epoch_end(trial_index, epoch, logs)``
    follows each trained epoch of each trial. ``options``: ``steps_per_execution`` and
    ``pad_batches`` as for the jax loop (the pack's shape: the largest batch, padded to a power
    of two when ``pad_batches``, the default on a GPU), ``verbose``, ``dropout_rng``,
    ``compile_cache_dir``, and ``pool`` (the data on the device and the packed programs,
    kept for the next pack); the others are not used here. ``slots``: with padded batches, a
    pack of fewer trials fills its empty slots with a copy of the first trial that never
    keeps its steps, so packs of every size up to ``slots`` share one program (a program is
    compiled per number of slots); without padding (a CPU), where an empty slot would cost
    its patches, a pack keeps its own size.
    """
    import jax

    if keras.backend.backend() != "jax":
        raise ValueError(f"train_packed needs KERAS_BACKEND=jax; this process runs {keras.backend.backend()!r}")
    if not trials:
        raise ValueError("train_packed needs at least one trial; got none")
    options = options or TrainOptions()
    enable_compile_cache(options.compile_cache_dir)
    _check_one_architecture(trials)
    members = [_start(trial, x_train, options.dropout_rng, options.pool) for trial in trials]
    if any(is_fp16(m.model) for m in members):
        raise ValueError("train_packed does not scale losses: use precision='bf16' or 'fp32', or train() with fit")
    on_cpu = jax.default_backend() == "cpu"
    steps_per_execution = options.steps_per_execution
    if steps_per_execution is None:  # as JaxLoop: one call per step on a CPU, calls of a fixed length on a GPU
        steps_per_execution = 1 if on_cpu else STEPS_PER_CALL
    largest = max(m.batch_size for m in members)
    pad = (not on_cpu) if options.pad_batches is None else options.pad_batches
    shape = padded_size(largest) if pad else largest
    empty = max(0, slots - len(members)) if pad and slots else 0
    x, y = (options.pool.on_device if options.pool is not None else device_put)(x_train, y_train)
    # One program per architecture for the process when a pool is given: later packs reuse it.
    programs = options.pool.programs if options.pool is not None else None
    key = (tuple(x_train.shape[1:]), options.dropout_rng, *(getattr(trials[0].settings, n) for n in ARCHITECTURE))
    twin, run, run_one = _programs(members[0].trial.settings, members[0].config, x_train, programs, key)
    switches = _switches(twin, members[0].model)
    validation = None if x_val is None else (x_val, y_val)
    if validation is not None and pad:  # evaluated padded too: on the device once
        validation = (options.pool.on_device if options.pool is not None else device_put)(x_val, y_val)
    first = min(m.initial_epoch for m in members)
    last = max(m.trial.epochs for m in members)
    for epoch in range(first, last):
        active = [m.trains(epoch) for m in members]
        if not any(active):
            continue
        started = time.perf_counter()
        for member, on in zip(members, active):
            if on:
                reset_dropout_seeds(member.model, member.trial.settings.seed, epoch)
        batches = _epoch_batches(members, active, len(x_train), epoch, shape, empty)
        state = _stack(members, switches, empty)
        losses = []  # device arrays, read once the epoch's calls are queued
        count = len(batches[0])
        if steps_per_execution == 1:
            for k in range(count):
                state, loss = run_one(state, x, y, tuple(part[k] for part in batches))
                losses.append(loss[None])
        else:  # calls of one shape: the last one filled with steps no trial keeps (``on`` False)
            chunk = steps_per_execution if steps_per_execution > 1 else count
            for indices, mask, on, counts in chunks(batches, count, chunk):
                state, chunk_losses = run(state, x, y, (indices, mask, on & counts[:, None]))
                losses.append(chunk_losses)
        losses, steps_on = np.concatenate([np.asarray(loss) for loss in losses])[:count], batches[2]
        _unstack(members, state, active, switches)
        seconds = time.perf_counter() - started
        for index, (member, on) in enumerate(zip(members, active)):
            if on:
                logs = {"loss": float(np.mean(losses[steps_on[:, index], index])), "train_seconds": seconds}
                _finish_epoch(member, index, epoch, logs, validation, pad, options.verbose, on_epoch_end)
    if options.pool is not None:  # compiled models (validation, prediction) for the next pack
        for member in members:
            if member.pool_key is not None:
                options.pool.keep(member.pool_key, member.model, member.initial)
    return [_result(m) for m in members]


def _check_one_architecture(trials: Sequence[PackedTrial]) -> None:
    first = trials[0].settings
    for index, trial in enumerate(trials[1:], start=1):
        differing = {
            name: (getattr(first, name), getattr(trial.settings, name))
            for name in ARCHITECTURE
            if getattr(first, name) != getattr(trial.settings, name)
        }
        if differing:
            raise ValueError(
                f"train_packed trains trials of one architecture; trial {index} differs from trial 0 in "
                f"{differing} (trial 0's value, trial {index}'s): pack them separately"
            )


def _start(trial: PackedTrial, x_train, dropout_rng: str, pool=None) -> _Member:
    """A trial's model and history: from its latest checkpoint, or built as ``train`` builds it.

    With a ``pool`` the model is a compiled one lent by it when it holds one of this
    architecture and seed (reset to its initial weights), so its validation program is not
    compiled again.
    """
    settings = trial.settings
    config = run_config(settings, len(x_train), dropout_rng)
    folder = Path(trial.checkpoint_dir) if trial.checkpoint_dir is not None else None
    initial_epoch = latest_checkpoint(folder, trial.epochs) if folder is not None else 0
    history: dict[str, list[float]] = {}
    checkpoint = None
    if initial_epoch:
        state_file = state_path(folder, initial_epoch)
        saved = read_json(state_file)
        check_same_config(state_file, saved["config"], config)
        history = {k: list(v) for k, v in saved["history"].items()}
        checkpoint = str(checkpoint_path(folder, initial_epoch))
    pool_key = initial = model = None
    if pool is not None:
        pool_key = ("packed", tuple(x_train.shape[1:]), settings.seed, *(config[k] for k in _POOLED))
        model, initial = pool.take(pool_key, settings.learning_rate)
    if model is None:
        model = compiled_unet(settings, config, x_train)
        initial = model.get_weights() if pool is not None else None
    if initial_epoch:  # weights and optimizer state, into the compiled model
        restore_checkpoint(model, Path(checkpoint))
    member = _Member(trial, model, config, initial_epoch, history, checkpoint=checkpoint, started=time.perf_counter())
    member.pool_key, member.initial = pool_key, initial
    return member


def _epoch_batches(members, active, num_samples: int, epoch: int, shape: int, empty: int = 0):
    """(indices, mask, on) for every step of the pack: (steps, k, shape), (steps, k, shape), (steps, k).

    A trial's batches are its own epoch order's, as ``train`` draws it (``drop_remainder``);
    padding and the steps of a trial that sits out are sample 0, and ``on`` is False for them
    when the trial is not training (its state is kept) or its epoch has ended. The ``empty``
    slots after the trials compute a loss on sample 0 and are never on.
    """
    orders = []
    for member, on in zip(members, active):
        batch = member.batch_size
        if not on:
            orders.append(np.zeros((0, batch), np.int32))
            continue
        order = epoch_order(num_samples, member.trial.settings.seed, epoch)
        if len(order) >= batch:
            order = order[: len(order) // batch * batch]
        orders.append(order.reshape(-1, batch).astype(np.int32))
    steps = max(len(order) for order in orders)
    k = len(members) + empty
    indices = np.zeros((steps, k, shape), np.int32)
    mask = np.zeros((steps, k, shape), np.float32)
    on = np.zeros((steps, k), bool)
    for index, (member, order) in enumerate(zip(members, orders)):
        indices[: len(order), index, : member.batch_size] = order
        mask[:, index, : member.batch_size] = 1.0  # steps sitting out compute a real loss, then drop it
        on[: len(order), index] = True
    mask[:, len(members) :] = 1.0
    return indices, mask, on


def _switches(twin: keras.Model, model: keras.Model) -> list[bool]:
    """For each of the twin's non-trainable variables, whether it is an activation's choice.

    The others are a trial's own model's non-trainable variables, in the same order (the twin
    is the same U-Net with switch layers added), which is checked here.
    """
    choices = {id(layer.choice) for layer in twin.layers if isinstance(layer, ActivationSwitch)}
    switches = [id(v) in choices for v in twin.non_trainable_variables]
    own = [tuple(v.shape) for v, switch in zip(twin.non_trainable_variables, switches) if not switch]
    theirs = [tuple(v.shape) for v in model.non_trainable_variables]
    if own != theirs or [tuple(v.shape) for v in twin.trainable_variables] != [
        tuple(v.shape) for v in model.trainable_variables
    ]:
        raise ValueError(
            f"the packed program's U-Net does not match the trials' ({model.name}): not the same variables"
        )
    return switches


def _stack(members, switches: list[bool], empty: int = 0):
    """Every trial's (trainable, non-trainable, optimizer) values, stacked along a new first axis.

    The non-trainable part is in the twin's order: a trial's own variables, with its
    activation's one-hot where the twin has a switch. ``empty`` copies of the first trial's
    values follow (empty slots, never written back).
    """
    import jax.numpy as jnp

    def non_trainable(member):
        own = iter(member.model.non_trainable_variables)
        choice = one_hot_activation(member.trial.settings.activation)
        return [choice if switch else next(own).value for switch in switches]

    groups = [
        [
            [v.value for v in m.model.trainable_variables],
            non_trainable(m),
            [v.value for v in m.model.optimizer.variables],
        ]
        for m in members
    ]
    groups += [groups[0]] * empty
    return tuple([jnp.stack(values) for values in zip(*(g[part] for g in groups))] for part in range(3))


def _unstack(members, state, active, switches: list[bool]) -> None:
    trainable, non_trainable, optimizer = state
    non_trainable = [values for values, switch in zip(non_trainable, switches) if not switch]
    for index, (member, on) in enumerate(zip(members, active)):
        if not on:
            continue
        model = member.model
        for variables, values in zip(
            (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables),
            (trainable, non_trainable, optimizer),
        ):
            for variable, value in zip(variables, values):
                variable.assign(value[index])


def _finish_epoch(member: _Member, index, epoch, logs, validation, pad, verbose, on_epoch_end) -> None:
    """Validation, the checkpoint and the history of one trained epoch of one trial, as ``train``'s."""
    if validation is not None and math.isfinite(logs["loss"]):
        scores = validate(member.model, validation, member.batch_size, pad)
        logs.update({f"val_{k}": v for k, v in scores.items()})
    logs["epoch_seconds"] = logs["train_seconds"]
    for key, value in logs.items():
        member.history.setdefault(key, []).append(value)
    if verbose:
        shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
        print(f"Trial {index} epoch {epoch + 1}/{member.trial.epochs} - {shown}", flush=True)
    if not all(math.isfinite(v) for k, v in logs.items() if k in ("loss", "val_loss")):
        member.diverged = True
        settings = member.trial.settings
        member.message = (
            f"training diverged in epoch {epoch + 1} of {member.trial.epochs}: loss {logs.get('loss')}, "
            f"val_loss {logs.get('val_loss')} (activation {settings.activation!r}, learning rate "
            f"{settings.learning_rate}); stopped, last good epoch {epoch}"
        )
        member.failed_epoch = epoch
        return
    if member.trial.checkpoint_dir is not None:
        state = {"epoch": epoch + 1, "config": member.config, "history": member.history}
        member.checkpoint = str(save_checkpoint(Path(member.trial.checkpoint_dir), epoch + 1, member.model, state))
    if on_epoch_end is not None:
        on_epoch_end(index, epoch, dict(logs))


def _result(member: _Member) -> TrainResult:
    epochs = member.trial.epochs
    trained = member.failed_epoch if member.diverged else max(epochs, member.initial_epoch)
    return TrainResult(
        model=member.model,
        history=member.history,
        diverged=member.diverged,
        epochs_trained=trained,
        initial_epoch=member.initial_epoch,
        seconds=time.perf_counter() - member.started,
        best_val_loss=_best_val_loss(member.history),
        message=member.message,
        checkpoint=member.checkpoint,
        metadata={
            "config": member.config,
            "backend": keras.backend.backend(),
            "loop": "packed",
            # the original recipe, the only one packing trains (Settings refuses the others)
            "recipe": {name: getattr(member.trial.settings, name) for name in RECIPE}
            | {"schedule_epochs": None, "kept_epoch": None},
        },
    )


def compiled_unet(settings: Settings, config: dict, x_train, activation_switch: bool = False) -> keras.Model:
    """The U-Net of ``settings`` and ``config`` (``run_config``'s), compiled, its optimizer built."""
    model = _build(x_train, config, POLICIES[settings.precision], activation_switch)
    compile_model(model, settings.learning_rate)
    model.optimizer.build(model.trainable_variables)
    return model


def _programs(settings: Settings, config: dict, x_train, cache: dict | None = None, key: tuple = ()):
    """(twin, k steps in a ``lax.scan``, one step): the packed training programs and their U-Net.

    The twin is the U-Net of ``settings`` and ``config`` (``run_config``'s) with
    ``ActivationSwitch`` layers, compiled as a trial's model is.
    The programs read only its structure, loss and optimizer update, never its variables, so
    they serve every trial of the architecture whatever its activation: kept in ``cache``
    under ``key`` (a ``ModelPool``'s) for the next pack.
    """
    key = ("packed", *key)
    if cache is not None and key in cache:
        return cache[key]
    import jax
    import jax.numpy as jnp

    model = compiled_unet(settings, config, x_train, activation_switch=True)

    def step(state, x, y, batch):  # one trial: vmapped over the pack's first axis
        trainable, non_trainable, optimizer_state = state
        indices, mask, on = batch
        xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)

        def loss_of(trainable):
            y_pred, updated = model.stateless_call(trainable, non_trainable, xb, training=True)
            return model.loss.masked(yb, y_pred, mask), updated

        (loss, updated), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        new_trainable, new_optimizer_state = model.optimizer.stateless_apply(optimizer_state, grads, trainable)
        new = (new_trainable, updated, new_optimizer_state)
        return jax.tree.map(lambda after, before: jnp.where(on, after, before), new, state), loss

    packed_step = jax.vmap(step, in_axes=(0, None, None, 0))

    def scan(state, x, y, batches):
        return jax.lax.scan(lambda carried, batch: packed_step(carried, x, y, batch), state, batches)

    programs = (model, jax.jit(scan), jax.jit(packed_step))
    if cache is not None:
        cache[key] = programs
    return programs
