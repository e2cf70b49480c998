"""The searches' common state machine: no NNI, no Keras, no clock, no I/O but its own JSON.

Implementation notes. Every search hands out *jobs*: one (configuration, budget) pair each,
trained to ``budget`` epochs (one budget unit = one epoch) and resuming from ``resume_from``,
the budget the same configuration reached on the rung below (warm start). Jobs sit on
*rungs* (budgets) inside *brackets*: HyperBand's brackets are successive-halving runs with
different start budgets; random search is one bracket of one rung; ASHA
(``seglib.hpo.asha``) is one bracket whose rungs fill asynchronously; BOHB
(``seglib.hpo.bohb``) is HyperBand's brackets with a model proposing new configurations.
A search's whole state is one JSON document (:meth:`Search.to_state`); what a search keeps
besides it (indexes by rung, queued jobs, epochs committed) is rebuilt from it on load, so a
decision costs the same at the 10,000th trial as at the first.

A simulator or a test drives a search through :meth:`Search.next_job`, :meth:`Search.report`
and :meth:`Search.fail` alone; the engines add :meth:`Search.requeue` and :meth:`Search.halt`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import ClassVar

from seglib.artifacts import (
    DIVERGED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    ArtifactError,
    Status,
    finite_or_none,
    read_json,
    write_json,
)
from seglib.hpo.space import check_search_space, grid, sample, search_space
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


def is_usable(job: Job) -> bool:
    """True for a job that may be promoted or modelled: SUCCEEDED with a finite loss."""
    return rank_key(job)[0] == 0


def charged_epochs(job: Job) -> int:
    """Epochs ``job`` counts against an epoch budget.

    Its increment (``budget - resume_from``) while handed out, or when its trial's epochs are
    unknown; once it ended, the epochs it trained, so a trial that diverged early gives back
    what it did not use; a failure counts at least one, so a space of failing configurations
    still ends.
    """
    if job.handed_out or job.epochs_trained is None:
        return job.budget - job.resume_from
    return max(1, int(job.epochs_trained))


class Search:
    """A search whose whole state is one JSON document (:meth:`to_state`).

    A job is one (configuration, budget) pair; each is handed out once, with ``resume_from``
    = the previous rung's budget so its trial trains only the increment. Callers (the
    engines) save the document after every change and continue exactly after a restart.
    Brackets run in parallel (a new bracket opens when the running ones have nothing to
    hand out), as NNI's own HyperBand in its default ``parallelism`` mode. A job handed out
    but never finished (its trial was interrupted) is put back in the queue with
    :meth:`requeue` and handed out before anything new; :meth:`halt` stops handing out jobs
    until :meth:`unhalt`. Change jobs only through these transitions: the indexes a decision
    reads are kept by them (and rebuilt by :meth:`from_state`).

    Each search joins the registry by subclassing with its name (``class X(Search,
    kind="x")``); the names themselves are ``seglib.settings.TUNERS``. ``title`` is how
    people read the name (the report, the notebook).
    """

    registry: ClassVar[dict[str, type[Search]]] = {}
    kind: ClassVar[str]
    title: ClassVar[str]
    # True where what the search hands out does not depend on results still to come (a
    # rung's configurations, random draws), so an engine may take all of it at once and
    # order it (``hand_out(search, None)``); False where later jobs are decided by earlier
    # results as they arrive (ASHA's promotions, BOHB's model).
    plans_ahead: ClassVar[bool] = False

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
        self._reindex()

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
        self._reindex()
        return self

    def to_state(self) -> dict:
        """The whole state as plain JSON values (jobs copied field by field: ``asdict`` deep-copies, 10x slower)."""
        return {**self.state, "jobs": [{**vars(job), "interruptions": list(job.interruptions)} for job in self.jobs]}

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
        return self._pairs.get((config_id, int(budget)))

    @property
    def committed(self) -> int:
        """Epochs handed out so far, as :func:`charged_epochs` counts them."""
        return self._committed

    @property
    def handed_out(self) -> int:
        """Jobs handed out and not ended (QUEUED or RUNNING)."""
        return self._out

    @property
    def finished(self) -> bool:
        """True when every bracket has run its last rung (or ran out of survivors) and no job is to run again."""
        return not self.handed_out and all(self._bracket_done(b) for b in self.state["brackets"])

    def counts(self) -> dict[Status, int]:
        """Jobs per schedule status (QUEUED, RUNNING, SUCCEEDED, DIVERGED, FAILED)."""
        result = dict.fromkeys((QUEUED, RUNNING, SUCCEEDED, DIVERGED, FAILED), 0)
        for job in self.jobs:
            result[job.status] += 1
        return result

    def best(self) -> Job | None:
        """The job with the lowest finite validation loss over all budgets, or None."""
        done = [job for job in self.jobs if is_usable(job)]
        return min(done, key=rank_key) if done else None

    def planned_trials(self) -> int:
        return sum(n for b in self.state["brackets"] for n, _ in b["rungs"])

    # -- transitions ------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """Hand out the next job (marked RUNNING), opening a new bracket if none has one to give.

        The lowest bracket with something to give goes first: a job handed out before and put
        back (:meth:`requeue`), else a queued one, else a new configuration it still has to
        propose; a job's parameter id is its place in that order within a bracket.
        """
        if self.halted:
            return None
        bracket = self._next_bracket()
        if bracket is None:
            return None
        queued = [pid for pid in self._queued if self.jobs[pid].bracket == bracket["index"]]
        if queued:
            job = self.jobs[min(queued)]
        else:
            bracket["to_propose"] -= 1
            config_id = self._new_config(bracket["index"])
            job = self._add_job(bracket, config_id, bracket["rungs"][0][1], resume_from=0)
        return self._hand_out(job)

    def report(
        self, parameter_id: int, value, diverged: bool = False, *, trial_id=None, epochs_trained=None
    ) -> list[Job]:
        """Record a trial's final result; finishes the job and may promote the rung's best."""
        job = self.job(parameter_id)
        if not job.handed_out:
            return []  # already settled: a late second word about it changes nothing
        job.trial_id, job.epochs_trained = trial_id, epochs_trained
        job.value = finite_or_none(value)
        if diverged or job.value is None:
            job.value = None
            return self._finish(job, DIVERGED)
        return self._finish(job, SUCCEEDED)

    def fail(self, parameter_id: int, error: str | None = None, *, epochs_trained=None) -> list[Job]:
        """Record a trial that ended without a result; its rung goes on with fewer survivors."""
        job = self.job(parameter_id)
        if not job.handed_out:
            return []
        job.error, job.epochs_trained = error, epochs_trained
        return self._finish(job, FAILED)

    def requeue(self, parameter_id: int, reason: str | None = None) -> None:
        """Hand a running job out again (its trial was interrupted before it finished)."""
        job = self.job(parameter_id)
        if job.status == RUNNING:
            job.status = QUEUED
            self._queued.add(job.parameter_id)
            if reason:
                job.interruptions.append(reason)

    def redo(self, parameter_id: int, reason: str) -> None:
        """Hand a finished or failed job out again (its record is gone, or a damaged file failed it).

        The decisions its rung already made stand: a rung that promoted does not promote again.
        """
        job = self.job(parameter_id)
        job.status, job.value, job.error = QUEUED, None, None
        job.interruptions.append(reason)
        self._reindex()  # the rankings, the queue and the epochs counted no longer hold it as ended

    def halt(self, reason: str) -> None:
        """Hand out nothing more (e.g. the disk is full) until :meth:`unhalt`."""
        self.state["halted"] = reason

    def unhalt(self) -> None:
        self.state["halted"] = None

    # -- internals --------------------------------------------------------------------------
    def _reindex(self) -> None:
        """Rebuild what decisions read besides the state: jobs by rung and by pair, the queue, epochs."""
        self._by_rung: dict[tuple[int, int], list[Job]] = {}
        self._pairs: dict[tuple[str, int], Job] = {}
        self._queued: set[int] = set()
        self._committed = 0
        self._out = 0
        for job in self.jobs:
            self._index(job)

    def _index(self, job: Job) -> None:
        self._by_rung.setdefault((job.bracket, job.rung), []).append(job)
        self._pairs[(job.config_id, job.budget)] = job
        if job.status == QUEUED:
            self._queued.add(job.parameter_id)
        self._out += job.handed_out
        self._committed += charged_epochs(job)

    def _next_bracket(self) -> dict | None:
        """The lowest bracket with a job to give (a new one opened if none has), or None."""
        busy = {self.jobs[pid].bracket for pid in self._queued}
        for bracket in self.state["brackets"]:
            if bracket["index"] in busy or bracket.get("to_propose", 0) > 0:
                return bracket
        bracket = next((b for b in self.state["brackets"] if b["rung"] < 0), None)
        if bracket is None:
            return None
        self._open_bracket(bracket)
        return bracket

    def _hand_out(self, job: Job) -> Job:
        self._queued.discard(job.parameter_id)
        job.status = RUNNING
        job.attempts += 1
        return job

    def _bracket_done(self, bracket: dict) -> bool:
        if bracket["rung"] < 0 or self._rung_open(bracket):
            return False
        return bracket["rung"] == len(bracket["rungs"]) - 1 or not self._survivors(bracket)

    def _rung_open(self, bracket: dict) -> bool:
        """True while the bracket's current rung has jobs to hand out or running."""
        if bracket.get("to_propose", 0) > 0:
            return True
        return any(job.handed_out for job in self._rung_jobs(bracket, bracket["rung"]))

    def _rung_jobs(self, bracket: dict, rung: int) -> list[Job]:
        return self._by_rung.get((bracket["index"], rung), [])

    def _survivors(self, bracket: dict) -> list[Job]:
        """The rung's best, at most the next rung's n_configs, finite results only."""
        rung = bracket["rung"]
        if rung + 1 >= len(bracket["rungs"]):
            return []
        ranked = sorted(self._rung_jobs(bracket, rung), key=rank_key)
        usable = [job for job in ranked if is_usable(job)]
        return usable[: bracket["rungs"][rung + 1][0]]

    def _open_bracket(self, bracket: dict) -> None:
        """Start the bracket's first rung: HyperBand draws all its configurations at once."""
        bracket["rung"] = 0
        n_configs, budget = bracket["rungs"][0]
        for _ in range(n_configs):
            config_id = self._new_config(bracket["index"])
            self._add_job(bracket, config_id, budget, resume_from=0)

    def _new_config(self, bracket_index: int) -> str:
        configs = self.state["configs"]
        config_id = f"c{len(configs):04d}"
        params = sample(self.state["search_space"], self._rng(config_id))
        configs[config_id] = {"bracket": bracket_index, "params": params}
        return config_id

    def _rng(self, config_id: str) -> random.Random:
        """The random stream of one configuration: seeded by the search's seed, its kind and the id.

        Each kind draws its own configurations (random search's c0000 is not HyperBand's), and
        a configuration's draws do not depend on when it was drawn, so a resumed search draws
        what an uninterrupted one would.
        """
        stream = "" if self.kind == "hyperband" else f"{self.kind}-"
        return random.Random(f"{self.state['seed']}-{stream}{config_id}")

    def _add_job(self, bracket: dict, config_id: str, budget: int, resume_from: int, rung: int | None = None) -> Job:
        """A new QUEUED job on ``rung`` of ``bracket`` (default: the bracket's current rung)."""
        job = Job(
            parameter_id=len(self.jobs),
            config_id=config_id,
            bracket=bracket["index"],
            s=bracket["s"],
            rung=bracket["rung"] if rung is None else rung,
            budget=budget,
            resume_from=resume_from,
        )
        self.jobs.append(job)
        self._index(job)
        return job

    def _finish(self, job: Job, status: Status) -> list[Job]:
        """Mark ``job`` ended; return it and the jobs its end created (promotions)."""
        self._committed -= charged_epochs(job)
        job.status = status
        self._committed += charged_epochs(job)
        self._queued.discard(job.parameter_id)
        self._out -= 1
        return [job, *self._on_finished(job)]

    def _on_finished(self, job: Job) -> list[Job]:
        """HyperBand's synchronous promotion: when a rung is done, its best go up with warm start."""
        bracket = self.state["brackets"][job.bracket]
        if job.rung != bracket["rung"] or self._rung_open(bracket):
            return []
        survivors = self._survivors(bracket)
        if not survivors:
            return []
        previous_budget = bracket["rungs"][bracket["rung"]][1]
        bracket["rung"] += 1
        budget = bracket["rungs"][bracket["rung"]][1]
        return [self._add_job(bracket, s.config_id, budget, previous_budget) for s in survivors]


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


def hand_out(search: Search, count: int | None) -> list[Job]:
    """Up to ``count`` jobs (None: all) ``search`` hands out now (a rung gives several; one waiting, none)."""
    jobs = []
    while (count is None or len(jobs) < count) and (job := search.next_job()) is not None:
        jobs.append(job)
    return jobs


def coming(search: Search, handed: list[Job]) -> list[dict]:
    """Hyperparameters of the trainings to come, soonest first (what to compile ahead).

    The jobs handed out, then every configuration the search has drawn, then each combination
    of the search space's finite entries (``seglib.hpo.space.grid``): what later draws can give.
    """
    drawn = [config["params"] for config in search.state["configs"].values()]
    return [search.params(job) for job in handed] + drawn + grid(search.state["search_space"])


def packs(search: Search, jobs: list[Job], size: int) -> list[list[Job]]:
    """``jobs`` in packs of up to ``size`` trained together: the same epochs, like batch sizes.

    A pack (``seglib.train.packed``) trains from its members' lowest starting epoch to their
    highest budget, every step computing every slot, and an epoch has as many steps as its
    smallest batch needs, at its largest batch's padded size: so each pack holds jobs of one
    (resume_from, budget), ordered by batch size (the cost of other ways, predicted:
    docs/benchmarks.md).
    """
    if size == 1:
        return [[job] for job in jobs]
    epochs: dict[tuple[int, int], list[Job]] = {}
    for job in jobs:
        epochs.setdefault((job.resume_from, job.budget), []).append(job)
    grouped = []
    for same in epochs.values():
        # a space without a batch size trains every trial at the settings' one: nothing to order
        same.sort(key=lambda job: (int(search.params(job).get("batch_size", 0)), job.parameter_id))
        grouped += [same[start : start + size] for start in range(0, len(same), size)]
    return grouped


def check_epochs(kind: str, epochs: int) -> None:
    """Raise ValueError unless an epoch budget is an integer >= 1."""
    if int(epochs) != epochs or epochs < 1:
        raise ValueError(f"{kind} needs an epoch budget (epochs) that is an integer >= 1, got {epochs!r}")
