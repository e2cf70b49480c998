"""Short trainings one after another, their programs compiled when first needed or ahead in threads.

A HyperBand bracket's first rung as the in-process engine trains it: one short training per
configuration, each (activation, batch shape) a new program. Without compiling ahead the
training thread compiles each program before its first step; with ``--threads`` k,
``seglib.train.ahead.CompileAhead`` compiles all of them in k background threads while the
trainings run, and a training waits only for a program not compiled yet. Every arm builds
fresh models in a fresh pool (no compile cache), in one process; the arms' first-epoch losses
are compared (they must be equal); JAX's start-up is paid before the first arm. Printed per
arm: the wall seconds of all the trainings, the seconds the training thread spent compiling
seglib's programs, and the compile seconds the background threads spent (JAX's compile log).
On a CPU the background compiles take the same cores as the training, so this measures the
mechanism's cost and what it hides there, not the GPU's gain (the GPU trains while the host's
cores compile).

    KERAS_BACKEND=jax .venv/bin/python benchmarks/bench_compile_ahead.py [--threads 0 1 2
        --patch-size 64 --train-patches 96 --steps-per-execution 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import time

PROGRAMS = ("one", "scan", "evaluation_step", "results")  # seglib.train.jax_loop's


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1, 2], help="arms: compile_ahead threads")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--train-patches", type=int, default=96)
    parser.add_argument("--validation-patches", type=int, default=24)
    parser.add_argument("--steps-per-execution", type=int, default=1, help="32: a GPU's calls (slow on a CPU)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[3, 12], help="padded to 8 and 16")
    return parser.parse_args(argv)


class CompileLog(logging.Handler):
    """Seconds of seglib's programs compiled, by thread (JAX's compile log)."""

    def __init__(self):
        super().__init__()
        self.seconds: dict[str, float] = {}  # emit() runs under the handler's own lock

    def emit(self, record):
        text = record.getMessage()
        if text.startswith("Finished XLA compilation of jit(") and text.split("jit(")[1].split(")")[0] in PROGRAMS:
            thread = "training" if record.threadName == "MainThread" else "ahead"
            self.seconds[thread] = self.seconds.get(thread, 0.0) + float(text.split(" in ")[-1].split()[0])


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import numpy as np

    from seglib.settings import ACTIVATIONS, Settings
    from seglib.train import ModelPool, TrainOptions, train
    from seglib.train.ahead import CompileAhead

    jax.config.update("jax_log_compiles", True)
    compiles = CompileLog()
    logging.getLogger("jax").addHandler(compiles)
    logging.getLogger("jax").setLevel(logging.DEBUG)
    logging.getLogger("jax").propagate = False  # the log is counted, not printed
    rng = np.random.default_rng(0)
    size, n, m = args.patch_size, args.train_patches, args.validation_patches
    x = rng.random((n + m, size, size, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    arrays = (x[:n], y[:n], x[n:], y[n:])
    base = Settings(patch_size=size)  # the full-size U-Net: 16 filters, depth 4
    trainings = [base.replace(activation=a, batch_size=b) for b in args.batch_sizes for a in ACTIVATIONS]
    # JAX's and Keras' one-time start-up, outside every arm: a tiny U-Net, programs of its own
    warm = base.replace(base_filters=2, depth=1)
    train(*arrays, settings=warm, epochs=1, options=TrainOptions(loop="jax", verbose=0, pad_batches=True))
    reference = None
    for threads in args.threads:
        compiles.seconds = {}
        options = TrainOptions(
            loop="jax", verbose=0, pool=ModelPool(), pad_batches=True, steps_per_execution=args.steps_per_execution
        )
        started = time.perf_counter()
        ahead = CompileAhead(threads) if threads else None
        if ahead is not None:
            for settings in trainings:
                ahead.add(arrays[0], arrays[1], arrays[2:], settings, options)
        losses = [train(*arrays, settings=s, epochs=1, options=options).history["loss"][0] for s in trainings]
        seconds = time.perf_counter() - started
        if ahead is not None:
            ahead.close()
        reference = losses if reference is None else reference
        print(
            "RESULT "
            + json.dumps(
                {
                    "compile_ahead": threads,
                    "device": jax.devices()[0].device_kind,
                    "trainings": len(trainings),
                    "patch_size": size,
                    "steps_per_execution": args.steps_per_execution,
                    "seconds": round(seconds, 1),
                    "training_thread_compile_seconds": round(compiles.seconds.get("training", 0.0), 1),
                    "ahead_compile_seconds": round(compiles.seconds.get("ahead", 0.0), 1),
                    "losses_equal_first_arm": losses == reference,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
