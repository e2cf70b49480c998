"""Helpers for tests that run searches as a user would: ``seglib hpo`` processes on tiny data."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import psutil

from seglib.hpo.engines.nni import free_port

# A tiny U-Net on 32x32 patches of the embedded dataset: seconds per trial on a 2-core CPU.
TINY_OVERRIDES = {
    "patch_size": 32,
    "max_patches": 240,
    "base_filters": 4,
    "depth": 2,
    "batch_size": 16,
    "concurrency": 2,
}
ONE_BATCH_SIZE = {"batch_size": {"_type": "choice", "_value": [16]}}


def spare_port() -> int:
    """A free port pair for a server a test starts (an NNI manager, an SSH server), at random below
    Linux's ephemeral range (32768 up).

    Ports in that range are handed to outgoing connections (trials, SSH, the other test worker's
    NNI) between the check and the server's listen, which then fails with EADDRINUSE. Drawn from
    the system's randomness: training seeds Python's ``random`` (``keras.utils.set_random_seed``),
    so two test workers that trained with one seed would draw the same port from it.
    """
    return free_port(random.SystemRandom().randrange(20000, 32000, 2))


def cli_args(
    data,
    *,
    max_budget: int = 3,
    eta: int = 3,
    seed: int = 3,
    engine: str = "nni",
    port: int | None = None,
    backend: str | None = None,
    concurrency: int | None = None,
    resume: bool = False,
    space: Path | None = None,
    tuner: str | None = None,
) -> list[str]:
    """``seglib hpo`` options for a tiny search on ``data`` (the embedded dataset's folder)."""
    overrides = {**TINY_OVERRIDES, **({"concurrency": concurrency} if concurrency else {})}
    args = [
        "--profile",
        "quick",
        "--data",
        str(data),
        "--max-budget",
        str(max_budget),
        "--eta",
        str(eta),
        "--seed",
        str(seed),
        "--engine",
        engine,
    ]
    for key, value in overrides.items():
        args += ["-p", f"{key}={value}"]
    if port:
        args += ["--port", str(port)]
    if backend:
        args += ["--backend", backend]
    if space:
        args += ["--space", str(space)]
    if tuner:
        args += ["--tuner", tuner]
    if resume:
        args.append("--resume")
    return args


def start_driver(out: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    """``seglib hpo --out OUT ARGS`` as its own process (stdout/stderr captured as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "seglib.cli", "hpo", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(condition, timeout: float, process: subprocess.Popen | None = None, every: float = 0.25):
    """Poll ``condition()`` until it is true; fail early if ``process`` ended first."""
    deadline = time.time() + timeout
    while True:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(
                f"the driver ended (exit {process.returncode}) before the condition held:\n{out[-3000:]}\n{err[-3000:]}"
            )
        if time.time() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(every)


def processes_of(out: Path) -> list[psutil.Process]:
    """Live processes that belong to the search in ``out`` (by command line or working folder)."""
    marker = str(Path(out).resolve())
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd", "status"]):
        try:
            text = " ".join(process.info["cmdline"] or []) + " " + (process.info["cwd"] or "")
        except (psutil.Error, TypeError):
            continue
        if marker in text and process.pid != os.getpid() and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def epochs_in_history(out: Path, row) -> list[int]:
    """The epochs a trial's folder recorded, in order (warm start: from resumed_from + 1)."""
    folder = Path(out) / "trials" / f"{row.config_id}-b{row.budget:03d}"
    return [entry["epoch"] for entry in json.loads((folder / "history.json").read_text())["epochs"]]


def replayed(settings, space: dict, rows) -> list[tuple]:
    """The pairs (and parameters) the pure search hands out, one at a time, fed the trials' own losses.

    Equal to a real search's trials in the order it handed them out when the engine ran that
    search's decisions and nothing else (one trial at a time).
    """
    from seglib.hpo.schedule import Search
    from seglib.hpo.search import plan

    values = {(r.config_id, r.budget): r.value for r in rows}
    search = Search.registry[settings.tuner].create(settings, space, plan(settings)["planned_epochs"])
    order = []
    while (job := search.next_job()) is not None:
        order.append((job.config_id, job.budget, search.params(job)))
        search.report(
            job.parameter_id, values[(job.config_id, job.budget)], epochs_trained=job.budget - job.resume_from
        )
    return order


def handed_out(rows) -> list[tuple]:
    return [(r.config_id, r.budget, r.params) for r in sorted(rows, key=lambda r: r.parameter_id)]
