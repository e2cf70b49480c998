"""Programs a full HyperBand pass compiles, counted from its configurations (no training).

A training program is one compiled call of the training step: one per (activation, batch
shape) of a model architecture, and with a ``lax.scan`` over the steps of a call, per number
of steps too. Counted for one pass at the original's R = 60, η = 3 (seed 0):

* ``processes``: a process per trial (the NNI engine): every trial compiles its own, or loads
  it from JAX's persistent cache when an earlier trial compiled the same one;
* ``in_process``: the local engine's ``ModelPool`` lends a compiled model to the next trial of
  the same architecture: one program per (activation, batch size);
* ``in_process_whole_epoch``: batches padded to a power of two (at least 8) with masked
  samples, the whole epoch in one call (the jax loop's GPU default before calls of a fixed
  length): the epoch's number of steps is part of the program, so one per (activation,
  padded size, steps), i.e. per batch size again;
* ``in_process_padded``: padded, in calls of ``STEPS_PER_CALL`` steps, the last one filled
  (the jax loop's GPU default): one per (activation, padded size);
* ``packed``: each rung's trials trained in packs of ``--slots`` (``seglib.train.packed``)
  per padded size, a pack of fewer trials filled with trials that sit out: the activation is
  an input of the program, so one program per padded size with ``--slots`` members;
* ``validation_keras``: Keras' evaluation after every epoch runs at the trial's own batch
  size, and a last, smaller batch when the validation patches are not a multiple of it: a
  forward program per (activation, batch shape) (models of one architecture share them
  through JAX's persistent cache, which the search turns on);
* ``validation_padded``: the jax loop's evaluation with padded batches
  (``seglib.train.jax_loop.evaluate``, the default on a GPU): one per (activation, padded size).

Which configurations a pass promotes depends on their losses, but every trial's configuration
is one of those drawn for its bracket's first rung, so the counts do not.

``--measure`` also compiles (XLA, on whatever device JAX has: a CPU here, a proxy for a GPU's
compile times) the full-size U-Net's training call (``STEPS_PER_CALL`` steps in a scan) at
every padded batch shape a pass needs, alone and packed, and its validation program at those
shapes (Keras' and the padded one), and multiplies each way's programs by their seconds.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/bench_programs.py [--max-budget 60 --eta 3 --seed 0
                                                                    --slots 4 --measure]
"""

from __future__ import annotations

import argparse
import json
import random

from seglib.hpo.hyperband import HyperBand
from seglib.hpo.simulate import TrainingCost


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-budget", type=int, default=60)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4, help="trials a packed program trains")
    parser.add_argument("--measure", action="store_true", help="compile each program shape and time it")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--train-patches", type=int, default=1044)
    parser.add_argument("--validation-patches", type=int, default=261)
    return parser.parse_args(argv)


def packs(search: HyperBand, pad, slots: int) -> list[tuple]:
    """The packs a pass trains: each rung's trials grouped by program, ``slots`` at a time."""
    groups: dict[tuple, list] = {}
    for job in search.jobs:
        params = search.params(job)
        key = (job.bracket, job.rung, pad(params["batch_size"]))
        groups.setdefault(key, []).append(job)
    return [(key, jobs[i : i + slots]) for key, jobs in groups.items() for i in range(0, len(jobs), slots)]


def compile_seconds(shape: int, slots: int | None, args) -> float:
    """Seconds XLA takes to compile the full-size U-Net's training call: alone, or ``slots`` packed."""
    import time

    import jax
    import numpy as np

    from seglib.settings import Settings
    from seglib.train.jax_loop import STEPS_PER_CALL, programs
    from seglib.train.loop import run_config
    from seglib.train.packed import _programs, compiled_unet

    settings = Settings(patch_size=args.patch_size)
    x = np.zeros((1, args.patch_size, args.patch_size, 3), np.float32)
    config = run_config(settings, args.train_patches, "keras")
    if slots is None:
        model = compiled_unet(settings, config, x)
    else:  # the packed program's own U-Net: the activation an input (ActivationSwitch layers)
        model, packed_scan, _ = _programs(settings, config, x)
    state = tuple(
        [v.value for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    )
    data = (
        jax.ShapeDtypeStruct((args.train_patches, args.patch_size, args.patch_size, 3), np.float32),
        jax.ShapeDtypeStruct((args.train_patches, args.patch_size, args.patch_size), np.uint8),
    )
    steps = STEPS_PER_CALL
    if slots is None:
        scan, _ = programs(model, padded=True)
        batches = (np.zeros((steps, shape), np.int32), np.ones((steps, shape), np.float32), np.ones(steps, bool))
        lowered = scan.lower(state, *data, batches)
    else:
        stacked = jax.tree.map(lambda v: jax.ShapeDtypeStruct((slots, *v.shape), v.dtype), state)
        batches = (
            np.zeros((steps, slots, shape), np.int32),
            np.ones((steps, slots, shape), np.float32),
            np.ones((steps, slots), bool),
        )
        lowered = packed_scan.lower(stacked, *data, batches)
    started = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - started


def validation_compile_seconds(shape: int, args) -> dict[str, float]:
    """Seconds XLA takes to compile the full-size U-Net's validation program at batch ``shape``.

    Keras' evaluation step, and the jax loop's padded one (``seglib.train.jax_loop.evaluate``).
    """
    import jax
    import numpy as np

    from seglib.settings import Settings
    from seglib.train.jax_loop import evaluate
    from seglib.train.loop import run_config
    from seglib.train.packed import compiled_unet

    seconds = {"keras": 0.0, "padded": 0.0}

    def listen(event: str, duration: float, **kwargs) -> None:
        name = str(kwargs.get("fun_name"))
        if event == "/jax/core/compile/backend_compile_duration" and name in ("jit(test_step)", "jit(evaluation_step)"):
            seconds["keras" if "test" in name else "padded"] += duration

    settings = Settings(patch_size=args.patch_size)
    x = np.zeros((shape, args.patch_size, args.patch_size, 3), np.float32)
    y = np.zeros(x.shape[:3], np.uint8)
    model = compiled_unet(settings, run_config(settings, args.train_patches, "keras"), x)
    jax.monitoring.register_event_duration_secs_listener(listen)
    model.evaluate(x, y, batch_size=shape, verbose=0)
    evaluate(model, *jax.device_put((x, y)), shape, shape)
    return seconds


def main(argv=None) -> int:
    from seglib.train.jax_loop import padded_size  # imports Keras and JAX: only when counting

    args = parse_args(argv)
    search = HyperBand(args.max_budget, args.eta, seed=args.seed)
    rng = random.Random(0)
    while (job := search.next_job()) is not None:
        search.report(job.parameter_id, rng.random())
    configs = [search.params(job) for job in search.jobs]
    patches = args.train_patches
    validation = {
        (c["activation"], shape)
        for c in configs
        for shape in TrainingCost(validation_patches=args.validation_patches).validation_shapes(c["batch_size"])
    }
    result = {
        "max_budget": args.max_budget,
        "eta": args.eta,
        "seed": args.seed,
        "trials": len(configs),
        "configurations": len({job.config_id for job in search.jobs}),
        "processes": {
            "compiled_or_loaded": len(configs),
            "distinct": len({(c["activation"], c["batch_size"]) for c in configs}),
        },
        "in_process": len({(c["activation"], c["batch_size"]) for c in configs}),
        "in_process_whole_epoch": len(
            {(c["activation"], padded_size(c["batch_size"]), patches // c["batch_size"]) for c in configs}
        ),
        "in_process_padded": len({(c["activation"], padded_size(c["batch_size"])) for c in configs}),
        "slots": args.slots,
        "packed": len({key[2] for key, _ in packs(search, padded_size, args.slots)}),
        "packs": len(packs(search, padded_size, args.slots)),
        "validation_keras": len(validation),
        "validation_padded": len({(c["activation"], padded_size(c["batch_size"])) for c in configs}),
    }
    if args.measure:
        import jax

        shapes = sorted({padded_size(c["batch_size"]) for c in configs})
        alone = {shape: compile_seconds(shape, None, args) for shape in shapes}
        together = {shape: compile_seconds(shape, args.slots, args) for shape in shapes}
        evaluation = {shape: validation_compile_seconds(shape, args) for shape in shapes}
        per_shape = {
            shape: sum(1 for c in {(c["activation"], padded_size(c["batch_size"])) for c in configs} if c[1] == shape)
            for shape in shapes
        }
        unpadded = {(c["activation"], c["batch_size"]) for c in configs}
        result["measured"] = {
            "device": jax.default_backend(),
            "patch_size": args.patch_size,
            "compile_seconds_alone": {str(k): round(v, 1) for k, v in alone.items()},
            "compile_seconds_packed": {str(k): round(v, 1) for k, v in together.items()},
            "compile_seconds_validation": {str(k): {w: round(v[w], 1) for w in v} for k, v in evaluation.items()},
            # a program of a batch size taken as costing what the padded shape at or above it costs
            "in_process_seconds": round(sum(alone[padded_size(b)] for _, b in unpadded), 1),
            "in_process_padded_seconds": round(sum(alone[s] * n for s, n in per_shape.items()), 1),
            "packed_seconds": round(sum(together.values()), 1),  # one program per padded size
            "validation_keras_seconds": round(sum(evaluation[padded_size(b)]["keras"] for _, b in validation), 1),
            "validation_padded_seconds": round(sum(evaluation[s]["padded"] * n for s, n in per_shape.items()), 1),
        }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
