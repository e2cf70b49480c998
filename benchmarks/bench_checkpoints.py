"""Writing one epoch's checkpoint: the weights and optimizer state as arrays, against a ``.keras`` archive.

A training writes a checkpoint after every epoch, so its cost is paid epochs times per
trial. Builds the profile's U-Net, trains it one step (so the optimizer has its state), then
times ``seglib.train.checkpoints.save_checkpoint`` (``epoch_NNNN.npz`` + ``.json``) and, as the
reference in the same run, Keras' ``model.save`` of the same model to a ``.keras`` file. Prints
one ``RESULT`` line with the median seconds of each over ``--repeats`` writes.

    .venv/bin/python benchmarks/bench_checkpoints.py                  # quick profile's U-Net
    .venv/bin/python benchmarks/bench_checkpoints.py --profile full   # the original's, 256 px
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from seglib.model import build_unet
from seglib.settings import PROFILES, profile
from seglib.train import compile_model
from seglib.train.checkpoints import save_checkpoint


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    settings = profile(args.profile)
    x = np.zeros((2, settings.patch_size, settings.patch_size, 3), "float32")
    y = np.zeros((2, settings.patch_size, settings.patch_size), "uint8")
    model = build_unet(input_shape=x.shape[1:], base_filters=settings.base_filters, depth=settings.depth)
    compile_model(model, settings.learning_rate)
    model.fit(x, y, batch_size=2, verbose=0)
    arrays, archive = [], []
    with tempfile.TemporaryDirectory() as folder:
        for k in range(args.repeats):
            started = time.perf_counter()
            save_checkpoint(Path(folder), k + 1, model, {"epoch": k + 1})
            arrays.append(time.perf_counter() - started)
            started = time.perf_counter()
            model.save(Path(folder) / f"model_{k}.keras")
            archive.append(time.perf_counter() - started)
    result = {
        "profile": args.profile,
        "parameters": model.count_params(),
        "checkpoint_seconds": round(statistics.median(arrays), 4),
        "keras_archive_seconds": round(statistics.median(archive), 4),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
