"""Every registered tuner on a virtual clock at the full profile's scale: regret, epochs to it, use, overhead.

Nothing is trained: each search runs under ``seglib.hpo.simulate`` against the synthetic loss
of ``benchmarks/synthetic.py`` (known optimum; low fidelities that rank well or badly), over
many seeds. Three sections, each printing one ``RESULT`` line (and a markdown table on stderr):

* ``regret``: final regret (the chosen configuration's true full-budget loss minus the
  optimum) per tuner, R = 60 and 81, η = 3, both rankings, on ``--workers`` workers; each tuner
  gets the epochs its own ``planned()`` gives (random search: HyperBand's, warm start counted);
  and each tuner's use of the workers: busy worker-seconds over all worker-seconds until the
  last trial ends;
* ``reach``: epochs until the incumbent's regret is at most a target, HyperBand (passes one
  after another, new configurations each) against random search, one worker; HyperBand's
  bound is (s_max + 1) times random search's epochs (Li et al., 2018);
* ``overhead``: CPU seconds the search's own calls take per trial (``next_job`` +
  ``report``) over ``--trials`` trials (BOHB: ``--bohb-trials``), and at that size with the
  state saved after each call as the engines do (CPU and wall). CPU time, because other
  processes share the machine.

The cost model is :class:`seglib.hpo.simulate.TrainingCost` with its defaults (the H200
figures measured for the full profile) and batches padded as the jax loop pads them on a GPU;
each worker is a device of its own.

    python benchmarks/bench_searches.py [--seeds 50 --workers 4 --trials 10000 --bohb-trials 2000
                                         --sections regret,reach,overhead]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from synthetic import Synthetic

from seglib.hpo.hyperband import HyperBand, RandomSearch, pass_epochs, s_max
from seglib.hpo.schedule import Search, rank_key
from seglib.hpo.simulate import TrainingCost, simulate
from seglib.hpo.space import search_space
from seglib.settings import profile

SCALES = (60, 81)
ETA = 3
RANKINGS = ("well", "badly")
REACH_TARGETS = (0.04, 0.02, 0.01, 0.005)
REACH_PASSES = 8  # random search gets this many HyperBand passes' epochs
OVERHEAD_REPEATS = 10  # trials timed one by one at the full size


def padding():
    """The jax loop's batch padding (imported late: seglib.train imports Keras)."""
    from seglib.train.jax_loop import padded_size

    return padded_size


def create(kind: str, max_budget: int, seed: int, epochs: int | None = None) -> Search:
    """A search of ``kind`` as seglib makes one; ``epochs``: for tuners that take a budget, other than planned()'s."""
    settings = profile("full", max_budget=max_budget, eta=ETA, seed=seed, max_trials=None)
    cls = Search.registry[kind]
    return cls.create(settings, search_space(), epochs or cls.planned(settings)[1])


def quartiles(values) -> dict:
    q1, median, q3 = np.percentile(np.asarray(values, dtype=float), [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3)}


# --- regret and workers' use ----------------------------------------------------------------


def regret_and_use(kinds: list[str], seeds: int, workers: int, pad) -> list[dict]:
    cells = []
    for max_budget in SCALES:
        for ranking in RANKINGS:
            for kind in kinds:
                regrets, use, hours, epochs = [], [], [], []
                for seed in range(seeds):
                    objective = Synthetic(max_budget, ranking, seed=seed)
                    search = create(kind, max_budget, seed)
                    result = simulate(search, objective, TrainingCost(pad=pad), workers)
                    regrets.append(objective.regret(search.params(search.best())))
                    use.append(result.utilisation)
                    hours.append(result.makespan / 3600)
                    epochs.append(result.epochs)
                cells.append(
                    {
                        "max_budget": max_budget,
                        "ranking": ranking,
                        "tuner": kind,
                        "seeds": seeds,
                        "regret": quartiles(regrets),
                        "utilisation": quartiles(use),
                        "hours": quartiles(hours),
                        "epochs": quartiles(epochs),
                        "trials": len(search.jobs),
                    }
                )
    return cells


def regret_table(cells: list[dict], workers: int) -> str:
    lines = [
        "| R | low fidelities rank | tuner | final regret, median [IQR] | epochs | "
        f"busy workers (median) | virtual hours on {workers} workers |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        r, u, h = c["regret"], c["utilisation"], c["hours"]
        lines.append(
            f"| {c['max_budget']} | {c['ranking']} | {c['tuner']} | {r['median']:.4f} [{r['q1']:.4f}–{r['q3']:.4f}] "
            f"| {c['epochs']['median']:.0f} | {100 * u['median']:.1f} % | {h['median']:.2f} |"
        )
    return "\n".join(lines)


# --- epochs to reach a regret ---------------------------------------------------------------


def trajectory(runs: list[tuple[Search, list]], objective: Synthetic) -> list[tuple[int, float]]:
    """(epochs trained so far, regret of the incumbent) after each trial, runs one after another."""
    points, epochs, incumbent = [], 0, None
    for search, trials in runs:
        for trial in trials:
            epochs += trial.budget - trial.resume_from
            job = search.job(trial.parameter_id)
            if rank_key(job)[0] == 0 and (incumbent is None or job.value < incumbent[0]):
                incumbent = (job.value, objective.regret(search.params(job)))
            points.append((epochs, math.inf if incumbent is None else incumbent[1]))
    return points


def epochs_to_reach(points: list[tuple[int, float]], target: float) -> float:
    return next((epochs for epochs, regret in points if regret <= target), math.inf)


def reach(seeds: int, pad) -> list[dict]:
    cells = []
    for max_budget in SCALES:
        per_pass = pass_epochs(max_budget, ETA)["warm_start"]
        cap = REACH_PASSES * per_pass
        for ranking in RANKINGS:
            found = {"hyperband": {t: [] for t in REACH_TARGETS}, "random": {t: [] for t in REACH_TARGETS}}
            for seed in range(seeds):
                objective = Synthetic(max_budget, ranking, seed=seed)
                passes = []
                for k in range(REACH_PASSES):
                    search = HyperBand(max_budget, ETA, seed=seed * 1000 + k)
                    passes.append((search, simulate(search, objective, TrainingCost(pad=pad)).trials))
                rs = RandomSearch(cap, max_budget, seed=seed)
                runs = {"hyperband": passes, "random": [(rs, simulate(rs, objective, TrainingCost(pad=pad)).trials)]}
                for kind, run in runs.items():
                    points = trajectory(run, objective)
                    for target in REACH_TARGETS:
                        found[kind][target].append(epochs_to_reach(points, target))
            bound = s_max(max_budget, ETA) + 1
            for target in REACH_TARGETS:
                hb = float(np.median(found["hyperband"][target]))
                rs = float(np.median(found["random"][target]))
                cells.append(
                    {
                        "max_budget": max_budget,
                        "ranking": ranking,
                        "target_regret": target,
                        "seeds": seeds,
                        "epochs_cap": cap,
                        "hyperband_median_epochs": hb,
                        "random_median_epochs": rs,
                        "ratio": hb / rs if math.isfinite(hb) and math.isfinite(rs) else None,
                        "bound": bound,
                        "hyperband_reached": sum(map(math.isfinite, found["hyperband"][target])),
                        "random_reached": sum(map(math.isfinite, found["random"][target])),
                        "met": bool(hb <= bound * rs) if math.isfinite(rs) else None,
                    }
                )
    return cells


def reach_table(cells: list[dict]) -> str:
    lines = [
        "| R | low fidelities rank | regret ≤ | random search: median epochs (seeds reached) | "
        "HyperBand: median epochs (seeds reached) | ratio | bound s_max + 1 | met |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def epochs(value, cap):
        return f"{value:.0f}" if math.isfinite(value) else f"> {cap}"

    for c in cells:
        ratio = "—" if c["ratio"] is None else f"{c['ratio']:.2f}"
        met = {True: "yes", False: "**no**", None: "—"}[c["met"]]
        random, hyperband = (epochs(c[f"{k}_median_epochs"], c["epochs_cap"]) for k in ("random", "hyperband"))
        lines.append(
            f"| {c['max_budget']} | {c['ranking']} | {c['target_regret']} | {random} "
            f"({c['random_reached']}/{c['seeds']}) | {hyperband} "
            f"({c['hyperband_reached']}/{c['seeds']}) | {ratio} | {c['bound']} | {met} |"
        )
    return "\n".join(lines)


# --- the scheduler's own time ---------------------------------------------------------------


def overhead(kinds: list[str], trials: int, bohb_trials: int, pad) -> list[dict]:
    """Per tuner: CPU ms per trial in the search's calls over ``trials``; then at that size, with and without saving.

    BOHB fits its density model on every observation for each new configuration, so its
    decisions grow with the trials: ``bohb_trials`` keeps its run within minutes.
    """
    cells = []
    for kind in kinds:
        count = bohb_trials if kind == "bohb" else trials
        max_budget = next(3**k for k in range(1, 20) if pass_epochs(3**k, ETA)["trials"] >= count)
        # epochs for more than `trials` trials of R epochs, for a tuner that spends a budget (random search)
        search = create(kind, max_budget, seed=0, epochs=(count + 100) * max_budget)
        objective = Synthetic(max_budget, "well")
        result = simulate(search, objective, TrainingCost(pad=pad), 4, max_trials=count)
        with tempfile.TemporaryDirectory() as folder:
            state = Path(folder) / "search_state.json"
            bare = [_one_trial(search, objective) for _ in range(OVERHEAD_REPEATS)]
            saved = [_one_trial(search, objective, state) for _ in range(OVERHEAD_REPEATS)]
            state_bytes = state.stat().st_size
        cells.append(
            {
                "tuner": kind,
                "max_budget": max_budget,
                "trials": len(result.trials),
                "cpu_ms_per_trial_over_run": 1000 * result.decision_seconds / len(result.trials),
                "cpu_ms_per_trial_at_size": 1000 * statistics.median(cpu for cpu, _ in bare),
                "cpu_ms_per_trial_at_size_saving": 1000 * statistics.median(cpu for cpu, _ in saved),
                "wall_ms_per_trial_at_size_saving": 1000 * statistics.median(wall for _, wall in saved),
                "state_bytes": state_bytes,
            }
        )
    return cells


def _one_trial(search: Search, objective: Synthetic, state: Path | None = None) -> tuple[float, float]:
    """(CPU, wall) seconds to hand one more job out and take its result, saving the state after each as engines do."""
    cpu, wall = time.thread_time(), time.perf_counter()
    job = search.next_job()
    if state:
        search.save(state)
    search.report(
        job.parameter_id,
        objective(search.params(job), job.budget),
        epochs_trained=job.budget - job.resume_from,
    )
    if state:
        search.save(state)
    return time.thread_time() - cpu, time.perf_counter() - wall


def overhead_table(cells: list[dict]) -> str:
    lines = [
        "| tuner | trials (R) | CPU ms per trial, mean over the run | CPU ms per trial at that size | "
        "the same, state saved twice per trial: CPU / wall ms | state file |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        lines.append(
            f"| {c['tuner']} | {c['trials']:,} (R = {c['max_budget']}) | {c['cpu_ms_per_trial_over_run']:.2f} | "
            f"{c['cpu_ms_per_trial_at_size']:.2f} | {c['cpu_ms_per_trial_at_size_saving']:.0f} / "
            f"{c['wall_ms_per_trial_at_size_saving']:.0f} | {c['state_bytes'] / 2**20:.1f} MiB |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--bohb-trials", type=int, default=2_000)
    parser.add_argument("--sections", default="regret,reach,overhead")
    parser.add_argument("--tuners", default=",".join(sorted(Search.registry)), help="for regret and overhead")
    args = parser.parse_args(argv)
    sections = set(args.sections.split(","))
    kinds = args.tuners.split(",")
    pad = padding()
    tables = []
    if "regret" in sections:
        started = time.perf_counter()
        cells = regret_and_use(kinds, args.seeds, args.workers, pad)
        seconds = time.perf_counter() - started
        print(
            "RESULT " + json.dumps({"section": "regret", "workers": args.workers, "seconds": seconds, "cells": cells})
        )
        tables.append(regret_table(cells, args.workers))
    if "reach" in sections:
        cells = reach(args.seeds, pad)
        print("RESULT " + json.dumps({"section": "reach", "cells": cells}))
        tables.append(reach_table(cells))
    if "overhead" in sections:
        cells = overhead(kinds, args.trials, args.bohb_trials, pad)
        print("RESULT " + json.dumps({"section": "overhead", "cells": cells}))
        tables.append(overhead_table(cells))
    print("\n\n".join(tables), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
