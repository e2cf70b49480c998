"""Training programs a full HyperBand pass compiles, counted from its configurations (no training).

A program is one compiled training step: one per (activation, batch shape) of a model
architecture. Counted three ways for one pass at the original's R = 60, η = 3 (seed 0):

* ``processes``: a process per trial (the NNI engine): every trial compiles its own, or loads
  it from JAX's persistent cache when an earlier trial compiled the same one;
* ``in_process``: the local engine's ``ModelPool`` lends a compiled model to the next trial of
  the same architecture: one program per (activation, batch size);
* ``in_process_padded``: the same with batches padded to a power of two (at least 8) with
  masked samples (the jax loop's default on a GPU): one per (activation, padded size).

* ``packed``: each rung's trials trained in packs of ``--slots`` (``seglib.train.packed``)
  per padded size, a pack of fewer trials filled with trials that sit out: the activation is
  an input of the program, so one program per padded size with ``--slots`` members.

Which configurations a pass promotes depends on their losses, but every trial's configuration
is one of those drawn for its bracket's first rung, so the counts do not.

``--measure`` also compiles (XLA, on whatever device JAX has: a CPU here, a proxy for a GPU's
compile times) the full-size U-Net's training step at every batch shape a pass needs, alone
and packed, and multiplies each way's programs by their seconds.

    KERAS_BACKEND=jax .venv/bin/python benchmarks/bench_programs.py [--max-budget 60 --eta 3 --seed 0
                                                                    --slots 4 --measure]
"""

from __future__ import annotations

import argparse
import json
import random

from seglib.hpo.hyperband import HyperBand


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-budget", type=int, default=60)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=4, help="trials a packed program trains")
    parser.add_argument("--measure", action="store_true", help="compile each program shape and time it")
    parser.add_argument("--patch-size", type=int, default=256)
    parser.add_argument("--train-patches", type=int, default=1044)
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
    """Seconds XLA takes to compile the full-size U-Net's training step: alone, or ``slots`` packed."""
    import time

    import jax
    import numpy as np

    from seglib.settings import Settings
    from seglib.train.jax_loop import programs
    from seglib.train.loop import run_config
    from seglib.train.packed import _programs, compiled_unet

    settings = Settings(patch_size=args.patch_size)
    x = np.zeros((1, args.patch_size, args.patch_size, 3), np.float32)
    config = run_config(settings, args.train_patches, "keras")
    if slots is None:
        model = compiled_unet(settings, config, x)
    else:  # the packed program's own U-Net: the activation an input (ActivationSwitch layers)
        model, _, packed_step = _programs(settings, config, x)
    state = tuple(
        [v.value for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    )
    data = (
        jax.ShapeDtypeStruct((args.train_patches, args.patch_size, args.patch_size, 3), np.float32),
        jax.ShapeDtypeStruct((args.train_patches, args.patch_size, args.patch_size), np.uint8),
    )
    if slots is None:
        _, one = programs(model)
        lowered = one.lower(state, *data, np.zeros(shape, np.int32))
    else:
        stacked = jax.tree.map(lambda v: jax.ShapeDtypeStruct((slots, *v.shape), v.dtype), state)
        batch = (np.zeros((slots, shape), np.int32), np.ones((slots, shape), np.float32), np.ones(slots, bool))
        lowered = packed_step.lower(stacked, *data, batch)
    started = time.perf_counter()
    lowered.compile()
    return time.perf_counter() - started


def main(argv=None) -> int:
    from seglib.train.jax_loop import padded_size  # imports Keras and JAX: only when counting

    args = parse_args(argv)
    search = HyperBand(args.max_budget, args.eta, seed=args.seed)
    rng = random.Random(0)
    while (job := search.next_job()) is not None:
        search.report(job.parameter_id, rng.random())
    configs = [search.params(job) for job in search.jobs]
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
        "in_process_padded": len({(c["activation"], padded_size(c["batch_size"])) for c in configs}),
        "slots": args.slots,
        "packed": len({key[2] for key, _ in packs(search, padded_size, args.slots)}),
        "packs": len(packs(search, padded_size, args.slots)),
    }
    if args.measure:
        import jax

        shapes = sorted({padded_size(c["batch_size"]) for c in configs})
        alone = {shape: compile_seconds(shape, None, args) for shape in shapes}
        together = {shape: compile_seconds(shape, args.slots, args) for shape in shapes}
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
            # unpadded programs' seconds taken as those of the padded shape at or above them
            "in_process_seconds": round(sum(alone[padded_size(b)] for _, b in unpadded), 1),
            "in_process_padded_seconds": round(sum(alone[s] * n for s, n in per_shape.items()), 1),
            "packed_seconds": round(sum(together.values()), 1),  # one program per padded size
        }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
