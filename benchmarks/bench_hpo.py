"""Trials side by side: seconds from a trial's start to the end of its first epoch, and patches/s.

Runs ``--concurrency`` HPO trial processes at once (``python -m seglib.hpo.trial_process``, the
command NNI runs, here without NNI so only the trials are measured), each with its own
configuration folder, after one warm-up trial that fills the shared compilation cache. Prints
one JSON line: per-trial first-epoch seconds (cold and warm) and steady-state patches/s, and
what the trials deliver together: all later epochs' patches over the wall span they cover
(``patches_per_second_over_span``; the sum of the trials' own rates overstates it when
their epochs do not overlap, so ``overlap_seconds`` is printed beside it).

    .venv/bin/python benchmarks/bench_hpo.py                                   # CPU, quick profile
    KERAS_BACKEND=jax .venv/bin/python benchmarks/bench_hpo.py --profile full --data "$DATA" \\
        --concurrency 4 --batch-size 24 --epochs 3 --precision bf16   # one GPU
    ... --mps   # the same under NVIDIA MPS, which runs the trials' kernels side by side

Without MPS, processes sharing a GPU take turns on it (time-slicing); with MPS their kernels
can run at the same time. ``--mps`` starts a private MPS control daemon (pipe
and log folders under the working folder), runs the trials as its clients, records the MPS
server it started, and quits it. It needs ``nvidia-cuda-mps-control`` and a GPU not in
exclusive-process mode; whether it pays for seglib's trials is what this measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglib.artifacts import ExperimentPaths
from seglib.data import make_split, prepare, save_split
from seglib.hpo.runtime import write_trial_settings
from seglib.settings import PRECISIONS, profile


def run_trials(settings: Path, configs: list[str], epochs: int, batch_size: int, env: dict) -> float:
    """Start one trial process per configuration at once; wait for all; return the wall time."""
    started = time.perf_counter()
    procs = []
    for config in configs:
        params = json.dumps({"CONFIG_ID": config, "TRIAL_BUDGET": epochs, "batch_size": batch_size})
        command = [sys.executable, "-m", "seglib.hpo.trial_process", "--settings", str(settings), "--params", params]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode:
            raise RuntimeError(f"trial failed ({proc.returncode}):\n{err[-3000:]}")
    return time.perf_counter() - started


@contextlib.contextmanager
def mps_daemon(folder: Path, env: dict):
    """Run an NVIDIA MPS control daemon private to ``folder``; yield its environment and server list."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        raise SystemExit("bench_hpo.py --mps: nvidia-cuda-mps-control is not on PATH (it ships with the NVIDIA driver)")
    pipe, log = folder / "mps" / "pipe", folder / "mps" / "log"
    pipe.mkdir(parents=True, exist_ok=True)
    log.mkdir(parents=True, exist_ok=True)
    env = env | {"CUDA_MPS_PIPE_DIRECTORY": str(pipe), "CUDA_MPS_LOG_DIRECTORY": str(log)}
    subprocess.run([control, "-d"], env=env, check=True)
    servers: list[str] = []
    try:
        yield env, servers
        listed = subprocess.run([control], input="get_server_list\n", env=env, capture_output=True, text=True)
        servers.extend(listed.stdout.split())
    finally:
        subprocess.run([control], input="quit\n", env=env, capture_output=True, text=True)
    if not servers:
        raise SystemExit(f"bench_hpo.py --mps: no MPS server was started; the trials ran without MPS (see {log})")


def trial_history(out: Path, config: str, epochs: int) -> dict:
    return json.loads((out / "trials" / f"{config}-b{epochs:03d}" / "history.json").read_text())


def trial_figures(out: Path, config: str, epochs: int, trained: int) -> dict:
    result = json.loads((out / "trials" / f"{config}-b{epochs:03d}" / "result.json").read_text())
    steady = [e["epoch_seconds"] for e in trial_history(out, config, epochs)["epochs"][1:] if e.get("epoch_seconds")]
    return {
        "first_epoch_seconds": round(result["first_epoch_seconds"], 2),
        "patches_per_second": round(trained / statistics.median(steady), 1) if steady else None,
    }


def together(out: Path, configs: list[str], epochs: int, trained: int) -> dict:
    """Patches/s of all trials' later epochs over the wall span they cover, and their overlap.

    Summing each trial's own rate overstates what the trials deliver together when their
    steady epochs do not run at the same time (staggered starts, short epochs); dividing
    all the work by the span from the first trial's first epoch end to the last trial's
    last epoch end cannot. The overlap says how much of that span every trial was busy in.
    """
    spans = [[e["ended"] for e in trial_history(out, c, epochs)["epochs"]] for c in configs]
    start, end = min(s[0] for s in spans), max(s[-1] for s in spans)
    overlap = min(s[-1] for s in spans) - max(s[0] for s in spans)
    work = sum(trained * (len(s) - 1) for s in spans)
    return {
        "patches_per_second_over_span": round(work / (end - start), 1) if end > start else None,
        "span_seconds": round(end - start, 2),
        "overlap_seconds": round(max(0.0, overlap), 2),
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--data", default=None)
    parser.add_argument("--patch-size", type=int, default=None)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (>= 2: the first compiles)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    parser.add_argument("--out", default=None, help="working folder (default: a temporary one)")
    parser.add_argument("--mps", action="store_true", help="run the trials as clients of an NVIDIA MPS daemon")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = {"data": args.data, "patch_size": args.patch_size, "precision": args.precision}
    settings_used = profile(args.profile, **{k: v for k, v in overrides.items() if v is not None})
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_hpo_"))
    paths = ExperimentPaths.of(out)
    split = make_split(prepare(settings_used.data, settings_used.patch_size), settings_used)
    save_split(paths.split_file, split)
    settings = write_trial_settings(paths, settings_used, concurrency=args.concurrency)
    configs = [f"bench{k}" for k in range(args.concurrency)]
    with (
        mps_daemon(out, dict(os.environ)) if args.mps else contextlib.nullcontext((dict(os.environ), [])) as (
            env,
            servers,
        )
    ):
        warmup_seconds = run_trials(settings, ["warmup"], args.epochs, args.batch_size, env)
        wall = run_trials(settings, configs, args.epochs, args.batch_size, env)
    train_size = len(split["train"])
    trained = train_size // args.batch_size * args.batch_size  # the last partial batch is dropped
    per_trial = [trial_figures(out, c, args.epochs, trained) for c in configs]
    rates = [t["patches_per_second"] for t in per_trial if t["patches_per_second"]]
    print(
        json.dumps(
            {
                "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
                "profile": args.profile,
                "patch_size": settings_used.patch_size,
                "train_patches": train_size,
                "batch_size": args.batch_size,
                "precision": args.precision,
                "concurrency": args.concurrency,
                "epochs": args.epochs,
                "cold_first_epoch_seconds": trial_figures(out, "warmup", args.epochs, trained)["first_epoch_seconds"],
                "warmup_wall_seconds": round(warmup_seconds, 1),
                "wall_seconds": round(wall, 1),
                "trials": per_trial,
                "sum_of_trial_rates": round(sum(rates), 1),
                **together(out, configs, args.epochs, trained),
                "mps_servers": servers if args.mps else None,
                "load_average": os.getloadavg()[0],
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
