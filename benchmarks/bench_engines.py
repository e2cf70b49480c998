"""The two search engines, one after the other, on the same search: wall time and trials' fixed cost.

Runs ``seglib hpo`` with ``--engine nni`` and then ``--engine local`` (same profile, seed and
data, fresh folders) and prints one ``RESULT`` line:

* ``wall_seconds``: the whole command, start to exit (NNI's start and stop included);
* ``outside_training_seconds``: per trial, the seconds not spent in training steps: from the
  trial's start (its process's start, under NNI) to its end, minus its epochs' patches at the
  run's steady rate (the median seconds per patch of epochs that were not a trial's first,
  so compiling, tracing, validation, checkpoints, data loading and start-up all count);
  and two parts of it measured directly: ``start_and_end_seconds`` (the trial's time outside
  its epochs: start-up, data, the model, checkpoints, records) and
  ``validation_seconds_per_epoch`` (an epoch's time after its training steps);
* whether the two exports have the same columns and the same trial and epoch counts.

    .venv/bin/python benchmarks/bench_engines.py                     # quick profile, embedded data, CPU
    .venv/bin/python benchmarks/bench_engines.py --profile quick -p max_budget=9
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import operator
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_engine(engine: str, out: Path, args) -> float:
    command = [
        sys.executable,
        "-m",
        "seglib.cli",
        "hpo",
        "--out",
        str(out),
        "--profile",
        args.profile,
        "--engine",
        engine,
        "--seed",
        str(args.seed),
        *functools.reduce(operator.iadd, (["-p", p] for p in args.param), []),
    ]
    if args.data:
        command += ["--data", args.data]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{engine} engine failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def trial_costs(out: Path) -> dict:
    """Per trial: seconds from start to end, epochs' patches, and seconds outside training steps."""
    import numpy as np

    trials = json.loads((out / "trials.json").read_text())["trials"]
    train_size = len(np.load(out / "trial_code" / "split.npz")["train"])
    per_patch, rows, start_and_end, validation = [], [], [], []
    for trial in trials:
        folder = out / "trials" / f"{trial['config_id']}-b{trial['budget']:03d}"
        history = json.loads((folder / "history.json").read_text())
        batch = trial["params"]["batch_size"]
        patches = train_size // batch * batch
        first = True
        for entry in history["epochs"]:
            if not first and entry.get("train_seconds"):
                per_patch.append(entry["train_seconds"] / patches)
            first = False
        attempts = history["attempts"]
        total = sum(a["ended"] - a["process_started"] for a in attempts if a.get("ended"))
        rows.append((total, len(history["epochs"]) * patches))
        start_and_end.append(total - sum(e.get("epoch_seconds") or 0.0 for e in history["epochs"]))
        timed = [e for e in history["epochs"] if e.get("epoch_seconds") and e.get("train_seconds")]
        validation += [e["epoch_seconds"] - e["train_seconds"] for e in timed]
    rate = statistics.median(per_patch)
    outside = [total - patches * rate for total, patches in rows]
    return {
        "trials": len(trials),
        "epochs": sum(t["epochs_trained"] for t in trials),
        "seconds_per_patch": rate,
        "outside_training_seconds": outside,
        "start_and_end_seconds": round(statistics.median(start_and_end), 2),
        "validation_seconds_per_epoch": round(statistics.median(validation), 2),
    }


def columns(out: Path) -> tuple:
    with open(out / "trials.csv") as handle:
        header = next(csv.reader(handle))
    fields = sorted(json.loads((out / "trials.json").read_text())["trials"][0])
    return tuple(header), tuple(fields)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    base = Path(args.out or tempfile.mkdtemp(prefix="bench_engines_"))
    result = {"profile": args.profile, "params": args.param, "seed": args.seed}
    for engine in ("nni", "local"):
        out = base / engine
        wall = run_engine(engine, out, args)
        costs = trial_costs(out)
        outside = costs.pop("outside_training_seconds")
        result[engine] = {
            "wall_seconds": round(wall, 1),
            **costs,
            "outside_training_seconds": {
                "median": round(statistics.median(outside), 2),
                "mean": round(statistics.mean(outside), 2),
                "max": round(max(outside), 2),
            },
        }
    result["local_over_nni_wall"] = round(result["local"]["wall_seconds"] / result["nni"]["wall_seconds"], 2)
    result["same_columns"] = columns(base / "nni") == columns(base / "local")
    result["same_trial_and_epoch_counts"] = all(result["nni"][k] == result["local"][k] for k in ("trials", "epochs"))
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
