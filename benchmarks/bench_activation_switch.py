"""What the activation as an input of the program costs: a training step and its compile, with and without.

The packed training program (``seglib.train.packed``) is traced with a U-Net whose
activations are ``ActivationSwitch`` layers, so one program serves every activation: each
switch computes all of ``ACTIVATIONS`` and keeps the chosen one. This measures that price on
whatever device JAX has, against the plain U-Net measured in the same run (the reference):
the full-size U-Net's jitted training step (seglib's jax loop, one step a call) at one batch
shape, its compile seconds and its median step seconds (each measured twice, the second kept).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/bench_activation_switch.py [--patch-size 128
        --batch-size 8 --steps 20 --repeats 3 --activation relu]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--train-patches", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--activation", default="relu")
    return parser.parse_args(argv)


def measure(switch: bool, args) -> dict:
    """Compile seconds and median step seconds of the training step, plain or with switches."""
    import jax
    import numpy as np

    from seglib.settings import Settings
    from seglib.train.jax_loop import programs
    from seglib.train.loop import run_config
    from seglib.train.packed import compiled_unet

    settings = Settings(patch_size=args.patch_size, batch_size=args.batch_size, activation=args.activation)
    rng = np.random.default_rng(0)
    x = rng.random((args.train_patches, args.patch_size, args.patch_size, 3), dtype=np.float32)
    y = rng.integers(0, 6, (args.train_patches, args.patch_size, args.patch_size)).astype(np.uint8)
    model = compiled_unet(settings, run_config(settings, len(x), "keras"), x, activation_switch=switch)
    state = tuple(
        [v.value for v in variables]
        for variables in (model.trainable_variables, model.non_trainable_variables, model.optimizer.variables)
    )
    x, y = jax.device_put(x), jax.device_put(y)
    batch = np.arange(args.batch_size, dtype=np.int32)
    _, one = programs(model)
    started = time.perf_counter()
    step = one.lower(state, x, y, batch).compile()
    compile_seconds = time.perf_counter() - started
    state, loss = step(state, x, y, batch)  # one untimed step: buffers allocated
    jax.block_until_ready(loss)
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        for _ in range(args.steps):
            state, loss = step(state, x, y, batch)
        jax.block_until_ready(loss)
        seconds.append((time.perf_counter() - started) / args.steps)
    return {"compile_seconds": round(compile_seconds, 2), "step_seconds": round(statistics.median(seconds), 4)}


def main(argv=None) -> int:
    import jax
    import keras

    args = parse_args(argv)
    if keras.backend.backend() != "jax":
        raise SystemExit(
            f"bench_activation_switch needs KERAS_BACKEND=jax; this process runs {keras.backend.backend()!r}"
        )
    # Twice each, alternating, the second kept: a process's first compile also pays XLA's own start.
    _, _, plain, switch = (measure(switched, args) for switched in (False, True, False, True))
    result = {
        "device": jax.default_backend(),
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
        "activation": args.activation,
        "plain": plain,
        "switch": switch,
        "step_ratio": round(switch["step_seconds"] / plain["step_seconds"], 3),
        "compile_ratio": round(switch["compile_seconds"] / plain["compile_seconds"], 3),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
