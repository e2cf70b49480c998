"""HyperBand (Li et al., 2018) and random search as one pure state machine: no NNI, no Keras.

The report draws the schedule from here and tests check it in microseconds. Budgets are in
epochs (one budget unit = one epoch) and are computed with integers,
``floor(R * eta**(i - s)) == R // eta**(s - i)``, so R = 60, η = 3 gives rungs of 2, 6, 20 and
60 epochs exactly as NNI's HyperBand handed them to the original's trials. Random search is
the same machine with one bracket of one rung: n configurations at R epochs each.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass, field
from typing import ClassVar

from seglib.artifacts import (
    DIVERGED,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ArtifactError,
    Status,
    finite_or_none,
    read_json,
    write_json,
)
from seglib.hpo.space import check_search_space, sample, search_space
from seglib.settings import TUNERS, Settings


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


def brackets(max_budget: int, eta: int) -> list[Bracket]:
    """Every bracket of one HyperBand pass, s = s_max first (most configs, smallest budgets)."""
    top = s_max(max_budget, eta)
    result = []
    for s in range(top, -1, -1):
        n = -(-(top + 1) * eta**s // (s + 1))  # ceil((s_max + 1) / (s + 1) * eta**s)
        rungs = tuple(Rung(n // eta**i, max_budget // eta ** (s - i)) for i in range(s + 1))
        result.append(Bracket(s, rungs))
    return result


def pass_epochs(max_budget: int, eta: int) -> dict[str, int]:
    """Epochs one full pass trains from scratch and with warm start, and its number of trials."""
    schedule = brackets(max_budget, eta)
    return {
        "from_scratch": sum(b.epochs(warm_start=False) for b in schedule),
        "warm_start": sum(b.epochs(warm_start=True) for b in schedule),
        "trials": sum(b.n_trials for b in schedule),
    }


# ---------------------------------------------------------------------------------------------
# The algorithm as a state machine whose whole state is one JSON document.

STATE_VERSION = 3
# Version 2 named a job's state in its own words; version 3 uses seglib.artifacts.Status.
_V2_STATUS = {"queued": QUEUED, "sent": RUNNING, "failed": FAILED}


@dataclass
class Job:
    """One (configuration, budget) pair of a search, as the schedule holds it.

    ``resume_from`` is the previous rung's budget: the pair's trial trains only the epochs
    above it. ``parameter_id`` is the order the search handed pairs out in.
    """

    parameter_id: int
    config_id: str
    bracket: int  # index into the search's brackets
    s: int  # HyperBand's s of that bracket
    rung: int
    budget: int
    resume_from: int
    status: Status = QUEUED
    value: float | None = None  # the trial's best validation loss (SUCCEEDED only)
    error: str | None = None
    attempts: int = 0  # times handed out
    lost: int = 0  # times its trial process died without a word
    epochs_trained: int | None = None
    trial_id: str | None = None
    interruptions: list[str] = field(default_factory=list)

    @property
    def handed_out(self) -> bool:
        return self.status in (QUEUED, RUNNING)

    @classmethod
    def from_dict(cls, values: dict) -> Job:
        return cls(**{**values, "status": Status(values["status"])})


def rank_key(job: Job) -> tuple:
    """Sort key: SUCCEEDED with a finite value, by value; diverged, failed and unfinished last."""
    value = finite_or_none(job.value)
    usable = job.status == SUCCEEDED and value is not None
    return (0, value, job.parameter_id) if usable else (1, 0.0, job.parameter_id)


class Search:
    """A search whose whole state is one JSON document (:meth:`to_state`).

    A job is one (configuration, budget) pair; each is handed out once, with ``resume_from``
    = the previous rung's budget so its trial trains only the increment. Callers (the
    engines) save the document after every change and continue exactly after a restart.
    Brackets run in parallel (a new bracket opens when the running ones have nothing to
    hand out), as NNI's own HyperBand in its default ``parallelism`` mode. A job handed out
    but never finished (its trial was interrupted) is put back in the queue with
    :meth:`requeue`; :meth:`halt` stops handing out jobs until :meth:`unhalt`.

    Each search joins the registry by subclassing with its name (``class X(Search,
    kind="x")``); the names themselves are ``seglib.settings.TUNERS``.
    """

    registry: ClassVar[dict[str, type[Search]]] = {}
    kind: ClassVar[str]

    def __init_subclass__(cls, kind: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if kind is not None:
            if kind not in TUNERS:
                raise ValueError(f"search kind {kind!r} is not in seglib.settings.TUNERS {TUNERS}: add it there")
            cls.kind = kind
            Search.registry[kind] = cls

    def __init__(self, schedule: list[Bracket], max_budget: int, eta: int | None, space: dict | None, seed: int):
        space = search_space() if space is None else space
        check_search_space(space)
        self.state = {
            "version": STATE_VERSION,
            "kind": self.kind,
            "max_budget": max_budget,
            "eta": eta,
            "seed": seed,
            "search_space": space,
            "brackets": [
                {"index": k, "s": b.s, "rung": -1, "rungs": [[r.n_configs, r.budget] for r in b.rungs]}
                for k, b in enumerate(schedule)
            ],
            "configs": {},
            "halted": None,
        }
        self.jobs: list[Job] = []

    # -- what a search of this kind plans, and how one is made from settings ------------------
    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        """(trials, epochs) a search of this kind plans under ``settings`` (``max_epochs``: a budget cap)."""
        raise NotImplementedError

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> Search:
        """A new search of this kind under ``settings``, planned to train ``epochs`` in all."""
        raise NotImplementedError

    # -- persistence ------------------------------------------------------------------------
    @classmethod
    def from_state(cls, state: dict, source: str = "search state") -> Search:
        version = state.get("version") if isinstance(state, dict) else type(state).__name__
        if version == 2 and isinstance(state, dict):
            state = _from_version_2(state)
        elif version != STATE_VERSION:
            raise ArtifactError(
                f"{source}: expected a seglib search state of version {STATE_VERSION}, "
                f"found version {version!r}; start the search in a new folder"
            )
        kind = state.get("kind")
        if kind not in cls.registry:
            raise ArtifactError(f"{source}: unknown search kind {kind!r}; expected one of {sorted(cls.registry)}")
        self = cls.registry[kind].__new__(cls.registry[kind])
        self.state = {k: v for k, v in state.items() if k != "jobs"}
        try:
            self.jobs = [Job.from_dict(job) for job in state.get("jobs", [])]
        except (TypeError, ValueError, KeyError) as error:
            raise ArtifactError(
                f"{source}: a job is not a seglib job record ({error}); restore the file or start in a new folder"
            ) from None
        return self

    def to_state(self) -> dict:
        """The whole state as plain JSON values."""
        return {**self.state, "jobs": [dataclasses.asdict(job) for job in self.jobs]}

    def save(self, path) -> None:
        """Write the state atomically, so a kill never leaves half a file."""
        write_json(path, self.to_state())

    @classmethod
    def load(cls, path) -> Search:
        return cls.from_state(read_json(path), str(path))

    # -- queries ----------------------------------------------------------------------------
    @property
    def halted(self) -> str | None:
        return self.state.get("halted")

    def job(self, parameter_id: int) -> Job:
        return self.jobs[int(parameter_id)]

    def params(self, job: Job) -> dict:
        """The hyperparameters of ``job``'s configuration."""
        return dict(self.state["configs"][job.config_id]["params"])

    def find(self, config_id: str, budget: int) -> Job | None:
        return next((j for j in self.jobs if j.config_id == config_id and j.budget == int(budget)), None)

    @property
    def finished(self) -> bool:
        """True when every bracket has run its last rung (or ran out of survivors) and no job is to run again."""
        return all(self._bracket_done(b) for b in self.state["brackets"]) and not any(j.handed_out for j in self.jobs)

    def counts(self) -> dict[Status, int]:
        """Jobs per schedule status (QUEUED, RUNNING, SUCCEEDED, DIVERGED, FAILED)."""
        result = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, DIVERGED, FAILED), 0)
        for job in self.jobs:
            result[job.status] += 1
        return result

    def best(self) -> Job | None:
        """The job with the lowest finite validation loss over all budgets, or None."""
        done = [job for job in self.jobs if rank_key(job)[0] == 0]
        return min(done, key=rank_key) if done else None

    def planned_trials(self) -> int:
        return sum(n for b in self.state["brackets"] for n, _ in b["rungs"])

    # -- transitions ------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """Hand out the next job (marked RUNNING), opening a new bracket if none has one queued."""
        if self.halted:
            return None
        queued = [job for job in self.jobs if job.status == QUEUED]
        if not queued:
            bracket = next((b for b in self.state["brackets"] if b["rung"] < 0), None)
            if bracket is None:
                return None
            self._open_bracket(bracket)
            queued = [job for job in self.jobs if job.status == QUEUED]
        job = min(queued, key=lambda j: (j.bracket, j.parameter_id))
        job.status = RUNNING
        job.attempts += 1
        return job

    def report(
        self, parameter_id: int, value, diverged: bool = False, *, trial_id=None, epochs_trained=None
    ) -> list[Job]:
        """Record a trial's final result; finishes the job and may promote the rung's best."""
        job = self.job(parameter_id)
        job.trial_id, job.epochs_trained = trial_id, epochs_trained
        job.value = finite_or_none(value)
        if diverged or job.value is None:
            job.value = None
            return self._finish(job, DIVERGED)
        return self._finish(job, SUCCEEDED)

    def fail(self, parameter_id: int, error: str | None = None, *, epochs_trained=None) -> list[Job]:
        """Record a trial that ended without a result; its rung goes on with fewer survivors."""
        job = self.job(parameter_id)
        if job.status in FINISHED:
            return []
        job.error, job.epochs_trained = error, epochs_trained
        return self._finish(job, FAILED)

    def requeue(self, parameter_id: int, reason: str | None = None) -> None:
        """Hand a running job out again (its trial was interrupted before it finished)."""
        job = self.job(parameter_id)
        if job.status == RUNNING:
            job.status = QUEUED
            if reason:
                job.interruptions.append(reason)

    def redo(self, parameter_id: int, reason: str) -> None:
        """Hand a finished or failed job out again (its record is gone, or a damaged file failed it).

        The decisions its rung already made stand: a rung that promoted does not promote again.
        """
        job = self.job(parameter_id)
        job.status, job.value, job.error = QUEUED, None, None
        job.interruptions.append(reason)

    def halt(self, reason: str) -> None:
        """Hand out nothing more (e.g. the disk is full) until :meth:`unhalt`."""
        self.state["halted"] = reason

    def unhalt(self) -> None:
        self.state["halted"] = None

    # -- internals --------------------------------------------------------------------------
    def _bracket_done(self, bracket: dict) -> bool:
        if bracket["rung"] < 0:
            return False
        jobs = self._rung_jobs(bracket, bracket["rung"])
        if any(job.handed_out for job in jobs):
            return False
        return bracket["rung"] == len(bracket["rungs"]) - 1 or not self._survivors(bracket)

    def _rung_jobs(self, bracket: dict, rung: int) -> list[Job]:
        return [j for j in self.jobs if j.bracket == bracket["index"] and j.rung == rung]

    def _survivors(self, bracket: dict) -> list[Job]:
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
        stream = "" if self.kind == "hyperband" else f"{self.kind}-"  # its own draws, not HyperBand's
        rng = random.Random(f"{self.state['seed']}-{stream}{config_id}")
        configs[config_id] = {"bracket": bracket_index, "params": sample(self.state["search_space"], rng)}
        return config_id

    def _add_job(self, bracket: dict, config_id: str, budget: int, resume_from: int) -> Job:
        job = Job(
            parameter_id=len(self.jobs),
            config_id=config_id,
            bracket=bracket["index"],
            s=bracket["s"],
            rung=bracket["rung"],
            budget=budget,
            resume_from=resume_from,
        )
        self.jobs.append(job)
        return job

    def _finish(self, job: Job, status: Status) -> list[Job]:
        job.status = status
        touched = [job]
        bracket = self.state["brackets"][job.bracket]
        if job.rung != bracket["rung"]:
            return touched
        if any(j.handed_out for j in self._rung_jobs(bracket, bracket["rung"])):
            return touched
        survivors = self._survivors(bracket)
        if survivors:
            previous_budget = bracket["rungs"][bracket["rung"]][1]
            bracket["rung"] += 1
            budget = bracket["rungs"][bracket["rung"]][1]
            for survivor in survivors:
                touched.append(self._add_job(bracket, survivor.config_id, budget, previous_budget))
        return touched


def _from_version_2(state: dict) -> dict:
    """A version-2 state in version 3's words (a search started by an earlier seglib goes on)."""
    jobs = []
    for job in state.get("jobs", []):
        job = dict(job)
        old, diverged = job.pop("status"), job.pop("diverged", False)
        job["status"] = (DIVERGED if diverged else SUCCEEDED) if old == "done" else _V2_STATUS[old]
        job.setdefault("interruptions", [])
        jobs.append(job)
    return {**state, "version": STATE_VERSION, "jobs": jobs}


class HyperBand(Search, kind="hyperband"):
    """One HyperBand pass at R = ``max_budget`` epochs and ``eta``, with warm start."""

    def __init__(self, max_budget: int, eta: int, space: dict | None = None, seed: int = 0):
        super().__init__(brackets(max_budget, eta), max_budget, eta, space, seed)

    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        totals = pass_epochs(settings.max_budget, settings.eta)
        cap = settings.max_trials
        return (totals["trials"] if cap is None else min(cap, totals["trials"])), totals["warm_start"]

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> HyperBand:
        return cls(settings.max_budget, settings.eta, space, settings.seed)


def random_trials(epochs: int, budget: int, cap: int | None) -> int:
    """Trials a random search of ``epochs`` in all at ``budget`` epochs each plans (at most ``cap``)."""
    planned = -(-int(epochs) // int(budget))
    return planned if cap is None else min(cap, planned)


class RandomSearch(Search, kind="random"):
    """Configurations drawn at random and trained ``budget`` epochs each, until ``epochs`` are spent.

    Trials are drawn one by one while epochs remain, the last one trained only what is left,
    so the total equals ``epochs`` exactly (what HyperBand spent, for an equal-budget
    comparison). A trial that stopped early (diverged) returns the epochs it did not use; a
    trial that failed counts one epoch, so a space of failing configurations still ends.
    """

    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        epochs = int(max_epochs or pass_epochs(settings.max_budget, settings.eta)["warm_start"])
        return random_trials(epochs, settings.max_budget, settings.max_trials), epochs

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> RandomSearch:
        return cls(epochs, settings.max_budget, space, settings.seed, settings.max_trials)

    def __init__(
        self, epochs: int, budget: int, space: dict | None = None, seed: int = 0, max_trials: int | None = None
    ):
        if int(epochs) != epochs or epochs < 1 or int(budget) != budget or budget < 1:
            raise ValueError(f"random search needs epochs >= 1 and a budget >= 1, got {epochs!r} and {budget!r}")
        super().__init__([], int(budget), None, space, seed)
        self.state.update(
            epochs=int(epochs),
            max_trials=max_trials,
            brackets=[{"index": 0, "s": 0, "rung": 0, "rungs": [[0, int(budget)]]}],
        )

    def _committed(self) -> int:
        """Epochs handed out: in full for jobs not finished, as trained (at least 1) for the rest."""

        def used(job: Job) -> int:
            return job.budget if job.epochs_trained is None else max(1, job.epochs_trained)

        return sum(job.budget if job.handed_out else used(job) for job in self.jobs)

    def _can_draw(self) -> bool:
        cap = self.state["max_trials"]
        return self.state["epochs"] - self._committed() >= 1 and (cap is None or len(self.jobs) < cap)

    def next_job(self) -> Job | None:
        if self.halted:
            return None
        if not any(job.status == QUEUED for job in self.jobs) and self._can_draw():
            bracket = self.state["brackets"][0]
            budget = min(self.state["max_budget"], self.state["epochs"] - self._committed())
            bracket["rungs"][0][0] += 1
            self._add_job(bracket, self._new_config(0), budget, resume_from=0)
        return super().next_job()

    @property
    def finished(self) -> bool:
        return not any(job.handed_out for job in self.jobs) and not self._can_draw()

    def planned_trials(self) -> int:
        planned = random_trials(self.state["epochs"], self.state["max_budget"], self.state["max_trials"])
        return max(len(self.jobs), planned)

    def _finish(self, job: Job, status: Status) -> list[Job]:
        job.status = status
        return [job]
