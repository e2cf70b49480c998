"""HyperBand (Li et al., 2018) as pure Python: the schedule, its epoch totals, the search space.

Nothing here imports NNI or Keras, so the report can draw the schedule and tests can check it
in microseconds. Budgets are in epochs (one budget unit = one epoch) and are computed with
integers, ``floor(R * eta**(i - s)) == R // eta**(s - i)``, so R = 60, η = 3 gives rungs of
2, 6, 20 and 60 epochs exactly as NNI's HyperBand handed them to the original's trials.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MAX_BUDGET = 60  # R, in epochs (the original's NNI default)
DEFAULT_ETA = 3  # η (the original's NNI default)

# The original's search space, in NNI's format (randint's upper bound is exclusive in NNI).
DEFAULT_SEARCH_SPACE: dict = {
    "batch_size": {"_type": "randint", "_value": [1, 32]},
    "learning_rate": {"_type": "loguniform", "_value": [1e-4, 0.1]},
    "activation_type": {"_type": "choice", "_value": ["relu", "tanh", "swish", None]},
}


@dataclass(frozen=True)
class Rung:
    """One rung of a bracket: ``n_configs`` configurations each trained to ``budget`` epochs."""

    n_configs: int
    budget: int


@dataclass(frozen=True)
class Bracket:
    """One HyperBand bracket ``s``: successive halving over its rungs, smallest budget first."""

    s: int
    rungs: tuple[Rung, ...]

    @property
    def n_trials(self) -> int:
        return sum(rung.n_configs for rung in self.rungs)

    def epochs(self, warm_start: bool) -> int:
        """Epochs the bracket trains; with warm start a promoted config trains only the increment."""
        total, previous = 0, 0
        for rung in self.rungs:
            total += rung.n_configs * (rung.budget - (previous if warm_start else 0))
            previous = rung.budget
        return total


def search_space(overrides: dict | None = None) -> dict:
    """The default search space with ``overrides`` merged in (a value of None drops a key)."""
    space = copy.deepcopy(DEFAULT_SEARCH_SPACE)
    for name, spec in (overrides or {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = copy.deepcopy(spec)
    return space


def s_max(max_budget: int, eta: int) -> int:
    """The largest s with eta**s <= R (integer arithmetic: log() rounds 243 / 3**5 the wrong way)."""
    check_schedule_args(max_budget, eta)
    s = 0
    while eta ** (s + 1) <= max_budget:
        s += 1
    return s


def check_schedule_args(max_budget: int, eta: int) -> None:
    """Raise ValueError unless R >= 1 and eta >= 2 are integers."""
    if int(max_budget) != max_budget or max_budget < 1:
        raise ValueError(f"HyperBand max_budget (R) must be an integer >= 1 epoch, got {max_budget!r}")
    if int(eta) != eta or eta < 2:
        raise ValueError(f"HyperBand eta must be an integer >= 2, got {eta!r}")


def brackets(max_budget: int = DEFAULT_MAX_BUDGET, eta: int = DEFAULT_ETA) -> list[Bracket]:
    """Every bracket of one HyperBand pass, s = s_max first (most configs, smallest budgets)."""
    top = s_max(max_budget, eta)
    result = []
    for s in range(top, -1, -1):
        n = -(-(top + 1) * eta**s // (s + 1))  # ceil((s_max + 1) / (s + 1) * eta**s)
        rungs = tuple(Rung(n // eta**i, max_budget // eta ** (s - i)) for i in range(s + 1))
        result.append(Bracket(s, rungs))
    return result


def pass_epochs(max_budget: int = DEFAULT_MAX_BUDGET, eta: int = DEFAULT_ETA) -> dict[str, int]:
    """Epochs one full pass trains from scratch and with warm start, and its number of trials."""
    schedule = brackets(max_budget, eta)
    return {
        "from_scratch": sum(b.epochs(warm_start=False) for b in schedule),
        "warm_start": sum(b.epochs(warm_start=True) for b in schedule),
        "trials": sum(b.n_trials for b in schedule),
    }


# ---------------------------------------------------------------------------------------------
# Sampling: the NNI search-space types seglib uses, without importing NNI.

def sample(space: dict, rng: random.Random) -> dict:
    """One configuration drawn from an NNI-format search space (NNI's semantics per type)."""
    return {name: _sample_one(name, spec, rng) for name, spec in space.items()}


def _sample_one(name: str, spec: dict, rng: random.Random):
    kind, value = spec.get("_type"), spec.get("_value")
    if kind == "choice":
        return value[rng.randrange(len(value))]
    if kind == "randint":  # NNI: lower inclusive, upper exclusive
        return rng.randrange(int(value[0]), int(value[1]))
    if kind in ("uniform", "quniform"):
        x = rng.uniform(value[0], value[1])
    elif kind in ("loguniform", "qloguniform"):
        x = math.exp(rng.uniform(math.log(value[0]), math.log(value[1])))
    elif kind in ("normal", "qnormal"):
        x = rng.gauss(value[0], value[1])
    elif kind in ("lognormal", "qlognormal"):
        x = math.exp(rng.gauss(value[0], value[1]))
    else:
        raise ValueError(
            f"search space entry {name!r}: unsupported _type {kind!r}; expected choice, randint, "
            "(q)uniform, (q)loguniform, (q)normal or (q)lognormal"
        )
    if kind.startswith("q"):
        q = value[-1]
        x = round(x / q) * q
        if kind in ("quniform", "qloguniform"):
            x = min(max(x, value[0]), value[1])
    return x


def check_search_space(space: dict) -> None:
    """Raise ValueError naming the entry when a search space entry cannot be sampled."""
    rng = random.Random(0)
    for name, spec in space.items():
        if not isinstance(spec, dict) or "_type" not in spec or "_value" not in spec:
            raise ValueError(f"search space entry {name!r} must be {{'_type': ..., '_value': [...]}}, got {spec!r}")
        _sample_one(name, spec, rng)


# ---------------------------------------------------------------------------------------------
# The algorithm as a state machine whose whole state is one JSON document.

QUEUED, SENT, DONE, FAILED = "queued", "sent", "done", "failed"


def rank_key(job: dict) -> tuple:
    """Sort key: finite, non-diverged results by value; NaN, missing, diverged and failed last."""
    value = job.get("value")
    usable = job["status"] == DONE and not job.get("diverged") and _is_finite(value)
    return (0, value, job["parameter_id"]) if usable else (1, 0.0, job["parameter_id"])


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class HyperBand:
    """HyperBand with warm start whose whole state is one JSON document (``self.state``).

    Every call that changes the state returns the jobs it touched, so a caller (the NNI
    dispatcher) can persist the document after each change and continue exactly after a
    restart. A job is one (configuration, budget) pair; each is issued once, with
    ``resume_from`` = the previous rung's budget so the trial trains only the increment.
    Brackets run in parallel (a new bracket starts when the running ones have nothing to
    hand out), as NNI's own HyperBand in its default ``parallelism`` mode.
    """

    def __init__(
        self,
        max_budget: int = DEFAULT_MAX_BUDGET,
        eta: int = DEFAULT_ETA,
        space: dict | None = None,
        seed: int = 0,
        passes: int = 1,
    ):
        space = search_space() if space is None else space
        check_search_space(space)
        schedule = brackets(max_budget, eta) * passes
        self.state = {
            "version": 1,
            "max_budget": max_budget,
            "eta": eta,
            "seed": seed,
            "search_space": space,
            "brackets": [
                {"index": k, "s": b.s, "rung": -1, "rungs": [[r.n_configs, r.budget] for r in b.rungs]}
                for k, b in enumerate(schedule)
            ],
            "configs": {},
            "jobs": [],
        }

    # -- persistence ------------------------------------------------------------------------
    @classmethod
    def from_state(cls, state: dict) -> "HyperBand":
        if state.get("version") != 1:
            raise ValueError(f"HyperBand state version {state.get('version')!r} is not 1")
        self = cls.__new__(cls)
        self.state = state
        return self

    def save(self, path: str | os.PathLike) -> None:
        """Write the state atomically (tmp file + rename), so a kill never leaves half a file."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.state, indent=1, allow_nan=False))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "HyperBand":
        path = Path(path)
        try:
            return cls.from_state(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read HyperBand state {path}: {error}") from error

    # -- queries ----------------------------------------------------------------------------
    @property
    def jobs(self) -> list[dict]:
        return self.state["jobs"]

    def job(self, parameter_id: int) -> dict:
        return self.jobs[int(parameter_id)]

    def find(self, config_id: str, budget: int) -> dict | None:
        for job in self.jobs:
            if job["config_id"] == config_id and job["budget"] == int(budget):
                return job
        return None

    @property
    def finished(self) -> bool:
        """True when every bracket has run its last rung (or ran out of survivors)."""
        return all(self._bracket_done(b) for b in self.state["brackets"])

    def counts(self) -> dict[str, int]:
        result = {QUEUED: 0, SENT: 0, DONE: 0, FAILED: 0}
        for job in self.jobs:
            result[job["status"]] += 1
        return result

    def best(self) -> dict | None:
        """The job with the lowest finite validation loss over all budgets, or None."""
        done = [job for job in self.jobs if rank_key(job)[0] == 0]
        return min(done, key=rank_key) if done else None

    # -- transitions ------------------------------------------------------------------------
    def next_job(self) -> dict | None:
        """Hand out the next job (marked sent), opening a new bracket if none has one queued."""
        queued = [job for job in self.jobs if job["status"] == QUEUED]
        if not queued:
            bracket = next((b for b in self.state["brackets"] if b["rung"] < 0), None)
            if bracket is None:
                return None
            self._open_bracket(bracket)
            queued = [job for job in self.jobs if job["status"] == QUEUED]
        job = min(queued, key=lambda j: (j["bracket"], j["parameter_id"]))
        job["status"] = SENT
        return job

    def report(self, parameter_id: int, value, diverged: bool = False, **extra) -> list[dict]:
        """Record a trial's final result; finishes the job and may promote the rung's best."""
        job = self.job(parameter_id)
        job.update(extra)
        job["value"] = value if _is_finite(value) else None
        job["diverged"] = bool(diverged) or not _is_finite(value)
        return self._finish(job, DONE)

    def fail(self, parameter_id: int, error: str | None = None, **extra) -> list[dict]:
        """Record a trial that ended without a result; its rung goes on with fewer survivors."""
        job = self.job(parameter_id)
        if job["status"] == DONE:
            return []
        job.update(extra)
        job["error"] = error
        return self._finish(job, FAILED)

    def requeue(self, parameter_id: int) -> None:
        """Hand a sent job out again (its trial was lost before NNI recorded it)."""
        job = self.job(parameter_id)
        if job["status"] == SENT:
            job["status"] = QUEUED

    # -- internals --------------------------------------------------------------------------
    def _bracket_done(self, bracket: dict) -> bool:
        if bracket["rung"] < 0:
            return False
        jobs = self._rung_jobs(bracket, bracket["rung"])
        if any(job["status"] in (QUEUED, SENT) for job in jobs):
            return False
        return bracket["rung"] == len(bracket["rungs"]) - 1 or not self._survivors(bracket)

    def _rung_jobs(self, bracket: dict, rung: int) -> list[dict]:
        return [j for j in self.jobs if j["bracket"] == bracket["index"] and j["rung"] == rung]

    def _survivors(self, bracket: dict) -> list[dict]:
        """The rung's best, at most the next rung's n_configs, finite results only."""
        rung = bracket["rung"]
        if rung + 1 >= len(bracket["rungs"]):
            return []
        ranked = sorted(self._rung_jobs(bracket, rung), key=rank_key)
        usable = [job for job in ranked if rank_key(job)[0] == 0]
        return usable[: bracket["rungs"][rung + 1][0]]

    def _open_bracket(self, bracket: dict) -> None:
        bracket["rung"] = 0
        n_configs, budget = bracket["rungs"][0]
        for _ in range(n_configs):
            config_id = self._new_config(bracket["index"])
            self._add_job(bracket, config_id, budget, resume_from=0)

    def _new_config(self, bracket_index: int) -> str:
        configs = self.state["configs"]
        config_id = f"c{len(configs):04d}"
        rng = random.Random(f"{self.state['seed']}-{config_id}")
        configs[config_id] = {"bracket": bracket_index, "params": sample(self.state["search_space"], rng)}
        return config_id

    def _add_job(self, bracket: dict, config_id: str, budget: int, resume_from: int) -> dict:
        job = {
            "parameter_id": len(self.jobs),
            "config_id": config_id,
            "bracket": bracket["index"],
            "s": bracket["s"],
            "rung": bracket["rung"],
            "budget": budget,
            "resume_from": resume_from,
            "status": QUEUED,
            "value": None,
            "diverged": False,
            "error": None,
        }
        self.jobs.append(job)
        return job

    def _finish(self, job: dict, status: str) -> list[dict]:
        job["status"] = status
        touched = [job]
        bracket = self.state["brackets"][job["bracket"]]
        if job["rung"] != bracket["rung"]:
            return touched
        jobs = self._rung_jobs(bracket, bracket["rung"])
        if any(j["status"] in (QUEUED, SENT) for j in jobs):
            return touched
        survivors = self._survivors(bracket)
        if survivors:
            previous_budget = bracket["rungs"][bracket["rung"]][1]
            bracket["rung"] += 1
            budget = bracket["rungs"][bracket["rung"]][1]
            for survivor in survivors:
                touched.append(self._add_job(bracket, survivor["config_id"], budget, previous_budget))
        return touched
