"""Any search run on a virtual clock: workers, a cost model and an objective instead of training.

A search (``seglib.hpo.hyperband.Search``) is a pure state machine, so its whole behaviour at
full scale — which trials it starts, when workers wait for a rung, what it finds — can be
worked out in seconds without a GPU. Use it to size a search (how long R, η and the number of
workers take on a given machine) and to compare tuners over many seeds.

Implementation notes. W workers pull jobs from the search (``next_job``), lowest worker
first. A job's *work* is the seconds it takes running alone, asked from the cost model once,
when it starts. While it runs it progresses at the *speed* the cost model gives for the set of
jobs running at that moment (1.0 each by default: workers that share nothing), so a model of
trials sharing one device can slow every job when another starts and speed them up when one
ends. The clock jumps from one event to the next: a job finishes, the objective gives its
value at the job's budget, and the search is told (``report``) at that virtual time; then every
idle worker asks for a job. A worker the search has nothing for (a synchronous rung waiting for
its slowest trial) stays idle until the next event. Ties finish in worker order, so a run is
deterministic. The CPU seconds the search's own calls take are measured on the side (CPU, not
wall, time: another process on the machine does not inflate them).

This module imports neither Keras nor NNI.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from seglib.hpo.schedule import Job, Search

# f(params, budget) -> the validation loss the trial would report (None or NaN: it diverged)
Objective = Callable[[dict, int], float | None]


@dataclass(frozen=True)
class Running:
    """A job on a worker, as a cost model sees it: what it trains, where, since when."""

    job: Job
    params: dict
    worker: int
    start: float  # virtual seconds


class CostModel:
    """How long jobs take. Subclass and override :meth:`work`, and :meth:`speeds` to share devices.

    The default speeds are 1.0 for every running job: each worker is a device of its own.
    """

    def work(self, job: Job, params: dict, worker: int) -> float:
        """Virtual seconds ``job`` takes when it runs alone (asked once, when it starts)."""
        raise NotImplementedError

    def speeds(self, running: Sequence[Running]) -> Sequence[float]:
        """Each running job's progress, in seconds of its work per virtual second, in the order given.

        Asked again whenever a job starts or ends; a speed of 0 pauses a job.
        """
        return [1.0] * len(running)


@dataclass
class TrainingCost(CostModel):
    """A trial's seconds: a fixed cost, a compile the first time its program is seen, then its epochs.

    One epoch is ``ceil(train_patches / batch_size)`` steps of ``step_seconds +
    patch_step_seconds * shape`` seconds, where ``shape`` is the batch size, or the size
    ``pad`` rounds it up to (the batch shape compiled). A promoted job trains only
    ``budget - resume_from`` epochs. A program is (activation, shape); compiled programs are
    remembered across workers (a shared compile cache or one process), so use one instance
    per simulation. The defaults are the full profile on one H200 (docs/benchmarks.md):
    ~7 ms + 0.19 ms per patch a step, 1,044 training patches, 35-41 s a cold compile;
    ``trial_seconds`` (start-up, validation, checkpoints) is an assumption, not a measurement.
    """

    train_patches: int = 1044
    step_seconds: float = 0.007
    patch_step_seconds: float = 0.00019
    compile_seconds: float = 38.0
    trial_seconds: float = 2.0
    pad: Callable[[int], int] | None = None
    compiled: set = field(default_factory=set, init=False, repr=False)

    def epoch_seconds(self, batch_size: int) -> float:
        shape = self.pad(batch_size) if self.pad else batch_size
        return math.ceil(self.train_patches / batch_size) * (self.step_seconds + self.patch_step_seconds * shape)

    def work(self, job: Job, params: dict, worker: int) -> float:
        batch_size = int(params["batch_size"])
        program = (params.get("activation"), self.pad(batch_size) if self.pad else batch_size)
        compile_seconds = 0.0 if program in self.compiled else self.compile_seconds
        self.compiled.add(program)
        epochs = job.budget - job.resume_from
        return self.trial_seconds + compile_seconds + epochs * self.epoch_seconds(batch_size)


@dataclass(frozen=True)
class TrialRecord:
    """One job as it ran on the virtual clock."""

    parameter_id: int
    config_id: str
    worker: int
    budget: int
    resume_from: int
    start: float
    end: float
    value: float | None  # None: diverged


@dataclass
class Simulation:
    """What a simulated search did: its trials in the order they ended, and each worker's time."""

    workers: int
    trials: list[TrialRecord]
    busy: list[float]  # virtual seconds each worker ran a job
    makespan: float  # virtual seconds from the first job handed out to the last one's end
    decisions: int  # calls to the search (next_job that handed a job out, report)
    decision_seconds: float  # CPU seconds inside those calls
    hook_seconds: float  # CPU seconds inside after_change (e.g. saving the state; its I/O waits not counted)

    @property
    def idle(self) -> list[float]:
        return [self.makespan - busy for busy in self.busy]

    @property
    def utilisation(self) -> float:
        """Busy worker-seconds over all worker-seconds until the last job ended."""
        return sum(self.busy) / (self.workers * self.makespan) if self.makespan > 0 else 1.0

    @property
    def epochs(self) -> int:
        """Epochs trained in all (a promoted job trains only its increment)."""
        return sum(t.budget - t.resume_from for t in self.trials)


@dataclass
class _Slot:
    running: Running
    remaining: float  # seconds of work left at speed 1


def simulate(
    search: Search,
    objective: Objective,
    cost: CostModel,
    workers: int = 1,
    *,
    max_trials: int | None = None,
    after_change: Callable[[Search], None] | None = None,
) -> Simulation:
    """Run ``search`` to its end on ``workers`` virtual workers; the search's state is changed in place.

    ``max_trials`` stops handing out jobs after that many (the running ones still finish).
    ``after_change`` is called after every job handed out and every result told, as an engine
    saves the state (``lambda s: s.save(path)``); its CPU time is measured apart.
    """
    if workers < 1:
        raise ValueError(f"simulate needs at least 1 worker, got {workers!r}")
    clock, started = 0.0, 0
    free = list(range(workers))
    running: dict[int, _Slot] = {}
    trials: list[TrialRecord] = []
    busy = [0.0] * workers
    decisions, decision_seconds, hook_seconds = 0, 0.0, 0.0

    def changed() -> None:
        nonlocal hook_seconds
        if after_change is not None:
            begin = time.thread_time()
            after_change(search)
            hook_seconds += time.thread_time() - begin

    while True:
        while free and (max_trials is None or started < max_trials):
            begin = time.thread_time()
            job = search.next_job()
            params = search.params(job) if job is not None else None
            decision_seconds += time.thread_time() - begin
            if job is None:
                break
            decisions += 1
            started += 1
            changed()
            worker = free.pop(0)
            running[worker] = _Slot(Running(job, params, worker, clock), cost.work(job, params, worker))
        if not running:
            break
        clock, done = _advance(clock, running, cost)
        for worker in done:
            slot = running.pop(worker)
            job, params = slot.running.job, slot.running.params
            value = objective(params, job.budget)
            finite = value is not None and math.isfinite(value)
            begin = time.thread_time()
            search.report(
                job.parameter_id,
                value if finite else math.nan,
                diverged=not finite,
                epochs_trained=job.budget - job.resume_from,  # this trial's epochs, as a trial reports them
            )
            decision_seconds += time.thread_time() - begin
            decisions += 1
            changed()
            trials.append(
                TrialRecord(
                    job.parameter_id,
                    job.config_id,
                    worker,
                    job.budget,
                    job.resume_from,
                    slot.running.start,
                    clock,
                    value if finite else None,
                )
            )
            busy[worker] += clock - slot.running.start
        free = sorted(free + done)
    if not search.finished and (max_trials is None or started < max_trials) and not search.halted:
        raise RuntimeError(
            f"the {search.kind} search handed out no job with every worker idle, yet it is not finished "
            f"({search.counts()}); it would wait forever"
        )
    return Simulation(workers, trials, busy, clock, decisions, decision_seconds, hook_seconds)


def _advance(clock: float, running: dict[int, _Slot], cost: CostModel) -> tuple[float, list[int]]:
    """Move the clock to the next job's end; the workers whose jobs end then, in worker order."""
    order = sorted(running)
    speeds = list(cost.speeds([running[w].running for w in order]))
    if len(speeds) != len(order) or any(s < 0 or not math.isfinite(s) for s in speeds):
        raise ValueError(f"{type(cost).__name__}.speeds gave {speeds!r} for {len(order)} running jobs")
    left = [running[w].remaining / s if s > 0 else math.inf for w, s in zip(order, speeds)]
    step = min(left)
    if math.isinf(step):
        raise ValueError(f"{type(cost).__name__}.speeds paused every running job: the search would never end")
    done = []
    for worker, speed, seconds in zip(order, speeds, left):
        if seconds <= step:
            done.append(worker)
        else:
            running[worker].remaining -= speed * step
    return clock + step, done
