"""Training throughput of the full-size U-Net for one backend, precision and batch size.

Random 256x256 patches and labels (speed does not depend on the values), trained through
``seglib.train.train`` - the path the baseline and every HyperBand trial take. Reports the
time from the start of training to the end of the first epoch (model build and XLA
compilation included) and the steady throughput of the later epochs. The last line is:

    RESULT backend=<b> precision=<p> batch=<n> patches_per_s=<f> first_epoch_s=<f>

Examples::

    .venv/bin/python benchmarks/bench_train.py --backend tensorflow --precision fp32 --batch 16 --patches 64 --epochs 2
    SEGLIB_COMPILE_CACHE=/tmp/xla .venv/bin/python benchmarks/bench_train.py --backend jax --precision bf16 --batch 24
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["tensorflow", "jax", "torch"], default="tensorflow")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--batch", type=int, default=24, help="batch size (the seed's best: 24)")
    parser.add_argument("--patches", type=int, default=1024, help="training patches per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs; throughput is measured after the first")
    parser.add_argument("--size", type=int, default=256, help="patch size in pixels")
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument(
        "--loop",
        choices=["auto", "fit", "jax"],
        default="auto",
        help="training loop: Keras fit(), or seglib's device-resident lax.scan loop (JAX only); auto = jax on JAX",
    )
    parser.add_argument(
        "--pad-batches",
        choices=["auto", "yes", "no"],
        default="auto",
        help="loop jax: pad batches to a power of two with masked samples (auto: on a GPU)",
    )
    parser.add_argument(
        "--dropout-rng",
        choices=["keras", "rbg"],
        default="keras",
        help="dropout mask generator (rbg = JAX's RngBitGenerator keys)",
    )
    parser.add_argument(
        "--steps-per-execution",
        type=int,
        default=None,
        help="loop jax: steps per compiled call (1 = one jitted step per batch, "
        "k > 1 = lax.scan over k steps, the last call filled, 0 = the whole epoch in one call; "
        "default: 32 on a GPU, 1 on the CPU)",
    )
    parser.add_argument(
        "--compile-cache", default=None, help="JAX persistent compilation cache folder (default: $SEGLIB_COMPILE_CACHE)"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend  # read once, at the first keras import below
    import keras
    import numpy as np

    from seglib.settings import Settings
    from seglib.train import TrainOptions, train

    if keras.backend.backend() != args.backend:
        sys.exit(
            f"bench_train.py: asked for backend {args.backend!r} but keras was already imported with "
            f"{keras.backend.backend()!r}"
        )
    loop = args.loop if args.loop != "auto" else ("jax" if args.backend == "jax" else "fit")
    settings = Settings(
        batch_size=args.batch,
        base_filters=args.base_filters,
        depth=args.depth,
        precision=args.precision,
        seed=args.seed,
        patch_size=args.size,
    )
    rng = np.random.default_rng(args.seed)
    x = rng.random((args.patches, args.size, args.size, 3), dtype=np.float32)
    y = rng.integers(0, 6, size=(args.patches, args.size, args.size), dtype=np.uint8)
    trained_per_epoch = args.patches // args.batch * args.batch if args.patches >= args.batch else args.patches

    epoch_ends: list[float] = []
    started = time.perf_counter()
    result = train(
        x,
        y,
        settings=settings,
        epochs=args.epochs,
        on_epoch_end=lambda epoch, logs: epoch_ends.append(time.perf_counter()),
        options=TrainOptions(
            verbose=0,
            loop=loop,
            pad_batches={"auto": None, "yes": True, "no": False}[args.pad_batches],
            dropout_rng=args.dropout_rng,
            steps_per_execution=args.steps_per_execution,
            compile_cache_dir=args.compile_cache,
        ),
    )
    if result.diverged or not epoch_ends:
        sys.exit(f"bench_train.py: training did not complete: {result.message}")
    first_epoch_s = epoch_ends[0] - started
    if len(epoch_ends) > 1:
        patches_per_s = trained_per_epoch * (len(epoch_ends) - 1) / (epoch_ends[-1] - epoch_ends[0])
    else:
        patches_per_s = trained_per_epoch / first_epoch_s
    record = {
        "backend": args.backend,
        "precision": args.precision,
        "batch": args.batch,
        "loop": loop,
        "dropout_rng": args.dropout_rng,
        "patches": args.patches,
        "size": args.size,
        "epochs": args.epochs,
        "parameters": result.model.count_params(),
        "epoch_seconds": result.history["epoch_seconds"],
        "first_epoch_s": first_epoch_s,
        "patches_per_s": patches_per_s,
        "devices": _devices(args.backend),
        "compile_cache": os.environ.get("SEGLIB_COMPILE_CACHE") or args.compile_cache,
    }
    print(json.dumps(record))
    print(
        f"RESULT backend={args.backend} precision={args.precision} batch={args.batch} "
        f"patches_per_s={patches_per_s:.3f} first_epoch_s={first_epoch_s:.2f}"
    )
    return record


def _devices(backend: str) -> list[str]:
    """The accelerator(s) the backend sees, for the record."""
    try:
        if backend == "jax":
            import jax

            return [str(d) for d in jax.devices()]
        if backend == "torch":
            import torch

            return [torch.cuda.get_device_name(0)] if torch.cuda.is_available() else ["cpu"]
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices()]
    except Exception as error:  # the record is informative only
        return [f"unknown ({error})"]


if __name__ == "__main__":
    main()
