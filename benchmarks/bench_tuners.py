"""What one decision of each search costs, with thousands of trials behind it (no training).

    python benchmarks/bench_tuners.py [--trials 10000]

Drives the pure searches through ``next_job``/``report`` with made-up losses, one trial at a
time: ASHA and random search until ``--trials`` trials (an epoch budget large enough), then
times the next 200 decisions (hand out + report); HyperBand and BOHB over one pass at R = 60,
η = 3 (69 trials), BOHB's proposals timed on their own (each rebuilds Optuna's study from the
state). Also a save and a load of the ASHA state at ``--trials``. The last line is
``RESULT trials=<n> asha_ms=<f> random_ms=<f> hyperband_ms=<f> bohb_proposal_ms=<f>
asha_save_ms=<f> asha_load_ms=<f>`` (milliseconds per decision, mean).
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from seglib.hpo.asha import Asha
from seglib.hpo.bohb import BOHB
from seglib.hpo.hyperband import HyperBand, RandomSearch
from seglib.hpo.schedule import Search


def step(search: Search, rng: random.Random) -> bool:
    job = search.next_job()
    if job is None:
        return False
    search.report(job.parameter_id, rng.random() + 1 / job.budget, epochs_trained=job.budget - job.resume_from)
    return True


def per_decision_ms(search: Search, warm: int, timed: int, rng: random.Random) -> float:
    """Run ``warm`` trials, then the mean milliseconds of the next ``timed`` decisions."""
    for _ in range(warm):
        step(search, rng)
    start, done = time.perf_counter(), 0
    while done < timed and step(search, rng):
        done += 1
    return (time.perf_counter() - start) / max(done, 1) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    rng = random.Random(0)
    asha = Asha(60, 3, epochs=10**9, seed=0)
    result = {"trials": args.trials, "asha_ms": per_decision_ms(asha, args.trials, 200, rng)}
    result["random_ms"] = per_decision_ms(RandomSearch(10**9, 60, seed=0), args.trials, 200, rng)
    result["hyperband_ms"] = per_decision_ms(HyperBand(60, 3, seed=0), 0, 69, rng)
    bohb = BOHB(60, 3, seed=0)
    proposals = []
    while True:
        start = time.perf_counter()
        job = bohb.next_job()
        if job is None:
            break
        if job.rung == 0 and bohb.state["configs"][job.config_id]["model_budget"] is not None:
            proposals.append(time.perf_counter() - start)
        bohb.report(job.parameter_id, rng.random(), epochs_trained=job.budget - job.resume_from)
    result["bohb_proposal_ms"] = sum(proposals) / len(proposals) * 1e3
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "search_state.json"
        start = time.perf_counter()
        asha.save(path)
        result["asha_save_ms"] = (time.perf_counter() - start) * 1e3
        start = time.perf_counter()
        Search.load(path)
        result["asha_load_ms"] = (time.perf_counter() - start) * 1e3
    print(f"ASHA after {len(asha.jobs)} trials; BOHB: {len(proposals)} model proposals")
    print("RESULT " + " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
