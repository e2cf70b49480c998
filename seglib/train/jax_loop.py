"""Backend-specific (JAX): seglib's training loop, with the training data on the device.

``fit()`` copies each batch from host memory; here the permutation gathers batches on the
device. The step is the one ``fit()`` runs: stateless forward pass, the compiled loss,
gradients, ``optimizer.stateless_apply``.
"""

from __future__ import annotations

import concurrent.futures
import math
import threading
import time

import numpy as np

from seglib.train.augment import augment
from seglib.train.pool import device_put

# Programs are made once per model; threads compiling ahead (seglib.train.ahead) ask for them too.
_MAKING = threading.Lock()

# Steps a call runs on a GPU: an epoch in calls of this many steps, the last one filled
# (``chunks``), so a program serves every batch size of a padded shape; not yet measured
# against the whole-epoch scan on a GPU (benchmarks/bench_train.py --steps-per-execution).
STEPS_PER_CALL = 32


class JaxLoop:
    """Backend-specific (JAX): data on the device; one jitted call per step, or ``lax.scan``.

    ``fit()`` copies each batch from host memory; here the permutation gathers batches on
    the device. ``steps_per_execution`` 1 dispatches one compiled step per batch (JAX's
    asynchronous dispatch keeps the device busy); k > 1 runs k steps per call inside a
    ``lax.scan``, the epoch's last call filled with steps that change nothing, so every call
    has one shape whatever the batch size; 0 runs the whole epoch in one call (a program per
    number of steps, so per batch size). None (the default) picks 1 on the CPU, where the
    scan was 16x slower (convolutions inside a while loop), and ``STEPS_PER_CALL`` on a GPU:
    the whole-epoch scan trained 2,075-2,094 patches/s (H200, bf16, batch 24, full U-Net),
    but compiled a program for every batch size.
    The step is the one ``fit()`` runs: stateless forward pass, the compiled loss, gradients,
    ``optimizer.stateless_apply``. Variables are written back after every epoch, so
    checkpoints, validation and hooks see the model as ``fit()`` would leave it.
    """

    def __init__(
        self,
        model,
        x_train,
        y_train,
        validation,
        batch_size,
        verbose,
        steps_per_execution,
        on_device=None,
        pad_batches: bool | None = None,
        augmentation: tuple[str, int] = ("none", 0),
    ):
        self.model, self.validation, self.batch_size, self.verbose = model, validation, batch_size, verbose
        self.steps_per_execution, self.pad, self.padded_size = loop_shape(batch_size, steps_per_execution, pad_batches)
        self.x, self.y = (on_device or device_put)(x_train, y_train)
        if validation is not None and self.pad:  # evaluated padded too: on the device once
            self.validation = (on_device or device_put)(*validation)
        self.augmentation = augmentation  # (mode, seed): the epoch's arrays are augmented on the device
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        self._run, self._run_one = programs(model, padded=self.padded_size != batch_size)
        _wait_for_ahead(model, call_key(len(x_train), batch_size, self.steps_per_execution, self.pad))

    def run_epoch(self, order: np.ndarray, epoch: int, epochs: int) -> dict:
        import jax
        import jax.numpy as jnp

        started = time.perf_counter()
        mode, seed = self.augmentation
        x, y = jax.block_until_ready(augment(self.x, self.y, mode, seed, epoch, xp=jnp))
        augment_seconds = time.perf_counter() - started
        model = self.model
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
        )
        batches = order.reshape(-1, self.batch_size).astype(np.int32)
        count = len(batches)
        mask = None
        if self.padded_size != self.batch_size:  # pad with sample 0, masked out of the loss
            mask = np.zeros((count, self.padded_size), np.float32)
            mask[:, : self.batch_size] = 1.0
            padding = np.zeros((count, self.padded_size - self.batch_size), np.int32)
            batches = np.concatenate([batches, padding], axis=1)
        losses = []  # device arrays, read once the epoch's calls are queued
        if self.steps_per_execution == 1:
            for k in range(count):
                state, loss = self._run_one(state, x, y, (batches[k], None if mask is None else mask[k], None))
                losses.append(loss[None])
        else:
            chunk = self.steps_per_execution if self.steps_per_execution > 1 else count
            for part in chunks((batches, mask), count, chunk):
                state, chunk_losses = self._run(state, x, y, part)
                losses.append(chunk_losses)
        losses = np.concatenate([np.asarray(loss) for loss in losses])[:count]  # the filling's are last: dropped
        for variables, values in zip(
            (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables), state
        ):
            for variable, value in zip(variables, values):
                variable.assign(value)
        logs = {
            "loss": float(np.mean(losses)),
            "train_seconds": time.perf_counter() - started,
            "augment_seconds": augment_seconds,
        }
        if self.validation is not None and math.isfinite(logs["loss"]):
            logs.update({f"val_{k}": v for k, v in validate(model, self.validation, self.batch_size, self.pad).items()})
        if self.verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            print(f"Epoch {epoch + 1}/{epochs} - {shown}", flush=True)
        return logs


def loop_shape(batch_size: int, steps_per_execution: int | None, pad_batches: bool | None) -> tuple[int, bool, int]:
    """(steps a call runs, whether batches are padded, the batch shape) of a JaxLoop on this device."""
    import jax

    on_cpu = jax.default_backend() == "cpu"
    if steps_per_execution is None:
        steps_per_execution = 1 if on_cpu else STEPS_PER_CALL
    # On a GPU a step's cost is mostly fixed (~7 ms + 0.19 ms per patch on an H200), so
    # padding a batch to a shared size costs little and saves compiling a program per batch
    # size; on a CPU the cost is per patch, so batches keep their own size there.
    pad = not on_cpu if pad_batches is None else pad_batches
    return steps_per_execution, pad, padded_size(batch_size) if pad else batch_size


def call_key(train_size: int, batch_size: int, steps_per_execution: int, pad: bool) -> tuple:
    """What tells a JaxLoop's compiled programs apart: steps a call, padding, batch shape."""
    steps = steps_per_execution or train_size // batch_size  # 0: the whole epoch in one call
    return steps, pad, padded_size(batch_size) if pad else batch_size


def program_calls(model, x_train, y_train, validation, batch_size: int, steps_per_execution: int, pad: bool):
    """[(jitted program, its arguments' shapes)] of the calls a JaxLoop of these arguments makes.

    The training call, and with ``pad`` the padded evaluation (Keras' own, unpadded, compiles
    when it first runs). Compiling each (``program.lower(*shapes).compile()``, no data moved)
    leaves its executable with the jitted function, so the loop's first call runs it without
    compiling. Made by the thread that trains, between trainings: the model's variables are
    read for their shapes, and Keras empties them while it evaluates. ``steps_per_execution``
    and ``pad`` as :func:`loop_shape` resolves them.
    """
    import jax

    def spec(array):
        return jax.ShapeDtypeStruct(array.shape, array.dtype)

    steps, _, shape = call_key(len(x_train), batch_size, steps_per_execution, pad)
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    state = tuple(
        [spec(v.value) for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    )
    scan, one = programs(model, padded=shape != batch_size)
    rows = () if steps_per_execution == 1 else (steps,)
    indices = jax.ShapeDtypeStruct((*rows, shape), np.int32)
    mask = jax.ShapeDtypeStruct((*rows, shape), np.float32) if shape != batch_size else None
    on = None if steps_per_execution == 1 else jax.ShapeDtypeStruct((steps,), np.bool_)
    calls = [(one if steps_per_execution == 1 else scan, (state, spec(x_train), spec(y_train), (indices, mask, on)))]
    if validation is not None and pad:
        metrics, evaluation, results = _evaluation(model)
        values = [[spec(v.value) for v in metric.variables] for metric in metrics]
        batch = (jax.ShapeDtypeStruct((shape,), np.int32), jax.ShapeDtypeStruct((shape,), np.float32))
        calls += [(evaluation, (state[0], state[1], values, *map(spec, validation), *batch)), (results, (values,))]
    return calls


def _wait_for_ahead(model, key: tuple) -> None:
    """Wait for the compile of ``key`` another thread runs (seglib.train.ahead), or take it over.

    One not started yet is compiled by the training, now, rather than after those queued before it.
    """
    queued = model.__dict__.get("_seglib_ahead", {})
    ahead = queued.get(key)
    if ahead is None:
        return
    if ahead.cancel():
        done = concurrent.futures.Future()
        done.set_result(None)
        queued[key] = done  # compiled here: not queued again
    else:
        concurrent.futures.wait([ahead])


def padded_size(batch_size: int, smallest: int = 8) -> int:
    """The shared batch shape a batch is padded to: the next power of two, at least ``smallest``.

    Batch sizes 1..31 (the original's search space) then share 3 training programs per
    activation instead of one each.
    """
    size = smallest
    while size < batch_size:
        size *= 2
    return size


def chunks(parts, count: int, chunk: int):
    """(parts..., on) for each call of ``chunk`` steps over an epoch of ``count`` steps.

    ``parts`` are arrays with a first axis of ``count`` steps (None passes through). The last
    call is filled with copies of step 0 whose ``on`` is False: the program keeps its state
    through them and their losses are dropped, so every call has the same shapes and one
    compiled program serves every epoch length, i.e. every batch size of a padded shape.
    """
    calls = -(-count // chunk)
    filled = calls * chunk - count
    on = np.arange(calls * chunk) < count
    if filled:
        parts = tuple(None if p is None else np.concatenate([p, np.repeat(p[:1], filled, axis=0)]) for p in parts)
    for start in range(0, calls * chunk, chunk):
        yield (*(None if p is None else p[start : start + chunk] for p in parts), on[start : start + chunk])


def programs(model, padded: bool = False):
    """``model``'s jitted training programs: (k steps in a ``lax.scan``, one step).

    Made once per model object and kept on it, so a model reused for another training (the
    in-process search engine's ``ModelPool``) keeps its compiled programs; JAX compiles one
    executable per batch shape and reuses it for every later call with that shape. A batch
    is (indices, mask, on): with ``padded``, padding samples are masked out of the loss
    (``SegLoss.masked``), so the gradient is the real samples' exactly (mask None
    otherwise); a step whose ``on`` is False leaves the state as it was (a call's filling,
    see :func:`chunks`; None: every step counts).
    """
    with _MAKING:
        cache = model.__dict__.setdefault("_seglib_programs", {})
        if padded not in cache:
            cache[padded] = _programs(model, padded)
        return cache[padded]


def _programs(model, padded: bool):
    import jax
    import jax.numpy as jnp

    def step(state, batch):
        trainable, non_trainable, optimizer_state, x, y = state
        indices, mask, on = batch
        xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)

        def loss_of(trainable):
            y_pred, updated = model.stateless_call(trainable, non_trainable, xb, training=True)
            loss = model.loss.masked(yb, y_pred, mask) if padded else model.loss(yb, y_pred)
            return loss, updated

        (loss, new_non_trainable), grads = jax.value_and_grad(loss_of, has_aux=True)(trainable)
        new_trainable, new_optimizer_state = model.optimizer.stateless_apply(optimizer_state, grads, trainable)
        new = (new_trainable, new_non_trainable, new_optimizer_state)
        if on is not None:
            new = jax.tree.map(lambda after, before: jnp.where(on, after, before), new, state[:3])
        return (*new, x, y), loss

    def one(state, x, y, batch):
        (trainable, non_trainable, optimizer_state, _, _), loss = step((*state, x, y), batch)
        return (trainable, non_trainable, optimizer_state), loss

    def scan(state, x, y, batches):
        (trainable, non_trainable, optimizer_state, _, _), losses = jax.lax.scan(step, (*state, x, y), batches)
        return (trainable, non_trainable, optimizer_state), losses

    return jax.jit(scan), jax.jit(one)


def validate(model, validation: tuple, batch_size: int, pad: bool) -> dict:
    """The validation scores of ``model`` as plain floats: padded batches (``evaluate``) or Keras'."""
    if pad:
        return evaluate(model, *validation, batch_size, padded_size(batch_size))
    scores = model.evaluate(*validation, batch_size=batch_size, verbose=0, return_dict=True)
    return {k: float(v) for k, v in scores.items()}


def evaluate(model, x, y, batch_size: int, shape: int) -> dict:
    """What ``model.evaluate(x, y, batch_size=batch_size)`` returns, computed in batches padded to ``shape``.

    Keras evaluates in batches of ``batch_size`` and a last, smaller one: a program per batch
    shape, so per batch size. Here every batch is padded to ``shape`` with sample 0, masked
    out: of the loss (``SegLoss.masked``), by a sample weight of 0 in the metrics, and of the
    Jaccard coefficient by zeroing the padding's one-hot labels and probabilities. The loss is
    averaged over batches weighted by their real samples, each metric as Keras averages it,
    so the values are Keras' to floating-point noise, from one program per (model, shape),
    for a model compiled with seglib's loss and metrics (``compile_model``).
    ``x`` and ``y`` are best on the device already (``device_put``): each batch gathers from them.
    """
    metrics, program, results = _evaluation(model)
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    values = [[v.value for v in metric.variables] for metric in metrics]  # as built: zero
    losses, sizes = [], []
    for start in range(0, len(x), batch_size):
        real = min(batch_size, len(x) - start)
        indices = np.zeros(shape, np.int32)
        indices[:real] = np.arange(start, start + real)
        mask = (np.arange(shape) < real).astype(np.float32)
        loss, values = program(trainable, non_trainable, values, x, y, indices, mask)
        losses.append(loss)
        sizes.append(real)
    result = {"loss": float(np.dot(np.asarray(losses, np.float64), sizes) / sum(sizes))}
    return result | {metric.name: float(value) for metric, value in zip(metrics, results(values))}


def _evaluation(model):
    """``model``'s evaluation programs, made once and kept on it: (metrics, one padded batch, results)."""
    with _MAKING:
        cache = model.__dict__.setdefault("_seglib_evaluation", {})
        if "program" not in cache:
            cache["metrics"], cache["program"], cache["results"] = _evaluation_programs(model)
        return cache["metrics"], cache["program"], cache["results"]


def _evaluation_programs(model):
    import jax
    import jax.numpy as jnp

    from seglib.metrics import JaccardCoefficient, OneHotPrecision, OneHotRecall, training_metrics

    num_classes = int(model.output_shape[-1])
    metrics = training_metrics(num_classes)  # fresh: their variables' values are passed in and out

    def evaluation_step(trainable, non_trainable, metric_values, x, y, indices, mask):
        xb, yb = jnp.take(x, indices, axis=0), jnp.take(y, indices, axis=0)
        y_pred, _ = model.stateless_call(trainable, non_trainable, xb, training=False)
        y_pred = jnp.asarray(y_pred, jnp.float32)
        loss = model.loss.masked(yb, y_pred, mask)
        pixels = jnp.broadcast_to(mask[:, None, None], yb.shape)
        updated = []
        for metric, values in zip(metrics, metric_values):
            if isinstance(metric, JaccardCoefficient):  # one value per batch, from the real samples only
                one_hot = jax.nn.one_hot(yb, num_classes) * mask[:, None, None, None]
                values = metric.stateless_update_state(values, one_hot, y_pred * mask[:, None, None, None])
            elif isinstance(metric, (OneHotPrecision, OneHotRecall)):  # weights of the probabilities' shape
                values = metric.stateless_update_state(values, yb, y_pred, sample_weight=mask[:, None, None, None])
            else:
                values = metric.stateless_update_state(values, yb, y_pred, sample_weight=pixels)
            updated.append(values)
        return loss, updated

    def results(metric_values):
        return [metric.stateless_result(values) for metric, values in zip(metrics, metric_values)]

    return metrics, jax.jit(evaluation_step), jax.jit(results)
