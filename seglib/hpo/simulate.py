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
wall, time: another process on the machine does not inflate them). A time limit (``until``)
stops the clock as a limit stops an engine: the jobs still running are handed back to the
search (``requeue``) and listed as interrupted.

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
    ``validation_patches`` (0: validation is in ``trial_seconds``) are evaluated after every
    epoch in batches of the trial's own batch size and a last, smaller one, each costing
    ``validation_step_fraction`` of a training step of its shape (a forward pass only: an
    assumption); each (activation, validation batch shape) compiles a forward program in
    ``validation_compile_seconds`` the first time it is met. With ``pad_validation`` (the jax
    loop's padded evaluation, ``seglib.train.jax_loop.evaluate``) every batch has the padded
    training shape, so the shapes are the training program's.
    """

    train_patches: int = 1044
    step_seconds: float = 0.007
    patch_step_seconds: float = 0.00019
    compile_seconds: float = 38.0
    trial_seconds: float = 2.0
    pad: Callable[[int], int] | None = None
    validation_patches: int = 0
    validation_step_fraction: float = 1 / 3
    validation_compile_seconds: float = 0.0
    pad_validation: bool = False
    compiled: set = field(default_factory=set, init=False, repr=False)

    def shape(self, batch_size: int) -> int:
        """The batch shape compiled for ``batch_size``."""
        return self.pad(batch_size) if self.pad else batch_size

    def train_seconds(self, batch_size: int) -> float:
        """Seconds of one epoch's training steps."""
        step = self.step_seconds + self.patch_step_seconds * self.shape(batch_size)
        return math.ceil(self.train_patches / batch_size) * step

    def validation_shapes(self, batch_size: int) -> set[int]:
        """The batch shapes of one validation: full batches and the rest."""
        patches = self.validation_patches
        if not patches:
            return set()
        if self.pad_validation:
            return {self.shape(batch_size)}
        return {min(batch_size, patches)} | ({patches % batch_size} if patches % batch_size else set())

    def validation_seconds(self, batch_size: int) -> float:
        """Seconds of one epoch's validation: its batches, forward only."""
        full, rest = divmod(self.validation_patches, batch_size)
        fraction = self.validation_step_fraction
        if self.pad_validation:
            full, rest, batch_size = full + (rest > 0), 0, self.shape(batch_size)
        seconds = full * fraction * (self.step_seconds + self.patch_step_seconds * batch_size)
        return seconds + (fraction * (self.step_seconds + self.patch_step_seconds * rest) if rest else 0.0)

    def epoch_seconds(self, batch_size: int) -> float:
        return self.train_seconds(batch_size) + self.validation_seconds(batch_size)

    def programs(self, params: dict) -> set[tuple]:
        """The programs a trial of ``params`` runs: its training program and its validation ones."""
        batch_size, activation = int(params["batch_size"]), params.get("activation")
        needed = {("train", activation, self.shape(batch_size))}
        return needed | {("validation", activation, shape) for shape in self.validation_shapes(batch_size)}

    def new_programs(self, params: dict) -> float:
        """Compile seconds of the programs ``params`` needs that are not compiled yet (then they are)."""
        new = self.programs(params) - self.compiled
        self.compiled |= new
        return self.compile_seconds_of(new)

    def compile_seconds_of(self, programs) -> float:
        """Seconds to compile ``programs`` (keys of ``compiled``) one after another."""
        seconds = {"train": self.compile_seconds, "validation": self.validation_compile_seconds}
        return sum(seconds[kind] for kind, *_ in programs)

    def work(self, job: Job, params: dict, worker: int) -> float:
        epochs = job.budget - job.resume_from
        compile_seconds = self.new_programs(params)
        return self.trial_seconds + compile_seconds + epochs * self.epoch_seconds(int(params["batch_size"]))


@dataclass
class PackedCost(TrainingCost):
    """Trials packed into shared programs on one device: a step of a pack trains every member once.

    A program is (activation, batch shape), or the shape alone with ``shared_activation``
    (the activation an input of the program, costing ``shared_activation_cost`` times the
    per-patch time). It trains ``slots`` members side by side (with ``pack_patches``:
    ``pack_patches // shape`` of them, at least 1, so small batches share a step with more
    trials): a pack's step costs ``step_seconds + patch_step_seconds * slots * shape`` whether
    or not every slot holds a trial (an empty slot is computed and masked). With
    ``concatenate`` (a design, not built: each patch computed with its own trial's weights and
    each trial's gradient summed over its own patches) trials are not padded: every running
    trial's batch goes into packs of ``pack_patches`` patches, as many packs as their sum
    needs. Running trials fill their program's packs; the device runs each pack's step in
    turn, so every running trial advances one step per round. A job's work is counted in
    training steps, its speed in steps per second. Compiling is not in a job's work: a packed
    run compiles every program it can need before training, so the caller counts it. Each
    trial's validation runs alone after each of its epochs (``seglib.train.packed`` evaluates
    every trial's own model) and ``host_seconds`` per trial (weights in and out of a slot, its
    checkpoint): both stall the device, counted by the caller (``validation_seconds``).
    """

    slots: int = 4
    pack_patches: int | None = None
    shared_activation: bool = False
    shared_activation_cost: float = 1.15
    concatenate: bool = False
    host_seconds: float = 0.5

    def program(self, params: dict) -> tuple:
        if self.concatenate:
            return (None, self.pack_patches)
        shape = self.shape(int(params["batch_size"]))
        return (None, shape) if self.shared_activation else (params.get("activation"), shape)

    def slots_of(self, program: tuple) -> int:
        """Members a pack of ``program`` holds."""
        if self.concatenate:
            return 1
        return max(1, self.pack_patches // program[1]) if self.pack_patches else self.slots

    def pack_seconds(self, program: tuple) -> float:
        """Seconds of one step of a pack of ``program``."""
        per_patch = self.patch_step_seconds * (self.shared_activation_cost if self.shared_activation else 1.0)
        return self.step_seconds + per_patch * self.slots_of(program) * program[1]

    def work(self, job: Job, params: dict, worker: int) -> float:
        return (job.budget - job.resume_from) * math.ceil(self.train_patches / int(params["batch_size"]))

    def shares(self, running: Sequence[Running]) -> tuple[float, list[float]]:
        """Seconds of one round of every pack, and each running trial's part of it (summing to the round)."""
        if self.concatenate:
            batches = [int(run.params["batch_size"]) for run in running]
            round_seconds = math.ceil(sum(batches) / self.pack_patches) * self.pack_seconds((None, self.pack_patches))
            return round_seconds, [round_seconds * b / sum(batches) for b in batches]
        members: dict[tuple, int] = {}
        for run in running:
            members[self.program(run.params)] = members.get(self.program(run.params), 0) + 1
        packs = {p: math.ceil(n / self.slots_of(p)) * self.pack_seconds(p) for p, n in members.items()}
        parts = [packs[self.program(run.params)] / members[self.program(run.params)] for run in running]
        return sum(packs.values()), parts

    def speeds(self, running: Sequence[Running]) -> Sequence[float]:
        round_seconds, _ = self.shares(running)
        return [1.0 / round_seconds] * len(running)


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
    makespan: float  # virtual seconds from the first job handed out to the last one's end, or to the limit
    decisions: int  # calls to the search (next_job that handed a job out, report)
    decision_seconds: float  # CPU seconds inside those calls
    hook_seconds: float  # CPU seconds inside after_change (e.g. saving the state; its I/O waits not counted)
    interrupted: list[TrialRecord] = field(default_factory=list)  # cut by ``until``, handed back (value None)

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
    until: float | None = None,
) -> Simulation:
    """Run ``search`` to its end on ``workers`` virtual workers; the search's state is changed in place.

    ``max_trials`` stops handing out jobs after that many (the running ones still finish).
    ``after_change`` is called after every job handed out and every result told, as an engine
    saves the state (``lambda s: s.save(path)``); its CPU time is measured apart. ``until``
    stops the clock at that virtual second: the jobs running then are handed back to the
    search (``requeue``), as an engine stopped by a time limit does, and the search is left
    unfinished.
    """
    if workers < 1:
        raise ValueError(f"simulate needs at least 1 worker, got {workers!r}")
    clock, started = 0.0, 0
    free = list(range(workers))
    running: dict[int, _Slot] = {}
    trials: list[TrialRecord] = []
    interrupted: list[TrialRecord] = []
    busy = [0.0] * workers
    decisions, decision_seconds, hook_seconds = 0, 0.0, 0.0

    def changed() -> None:
        nonlocal hook_seconds
        if after_change is not None:
            begin = time.thread_time()
            after_change(search)
            hook_seconds += time.thread_time() - begin

    while until is None or clock < until:
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
        clock, done = _advance(clock, running, cost, until)
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
            trials.append(_record(slot, clock, value if finite else None))
            busy[worker] += clock - slot.running.start
        free = sorted(free + done)
        if until is not None and clock >= until:  # the jobs that did not end by then are handed back
            for worker in sorted(running):
                slot = running.pop(worker)
                job = slot.running.job
                search.requeue(job.parameter_id, f"stopped at {until:g} s")
                changed()
                interrupted.append(_record(slot, clock, None))
                busy[worker] += clock - slot.running.start
    stopped = until is not None and clock >= until
    if not search.finished and (max_trials is None or started < max_trials) and not search.halted and not stopped:
        raise RuntimeError(
            f"the {search.kind} search handed out no job with every worker idle, yet it is not finished "
            f"({search.counts()}); it would wait forever"
        )
    return Simulation(workers, trials, busy, clock, decisions, decision_seconds, hook_seconds, interrupted)


def _record(slot: _Slot, clock: float, value: float | None) -> TrialRecord:
    """The record of the job in ``slot``, ended (or cut) at ``clock``."""
    run, job = slot.running, slot.running.job
    return TrialRecord(
        job.parameter_id, job.config_id, run.worker, job.budget, job.resume_from, run.start, clock, value
    )


def _advance(
    clock: float, running: dict[int, _Slot], cost: CostModel, until: float | None = None
) -> tuple[float, list[int]]:
    """Move the clock to the next job's end, or to ``until`` if that comes first; the workers whose jobs end."""
    order = sorted(running)
    speeds = list(cost.speeds([running[w].running for w in order]))
    if len(speeds) != len(order) or any(s < 0 or not math.isfinite(s) for s in speeds):
        raise ValueError(f"{type(cost).__name__}.speeds gave {speeds!r} for {len(order)} running jobs")
    left = [running[w].remaining / s if s > 0 else math.inf for w, s in zip(order, speeds)]
    step = min(left)
    if math.isinf(step):
        raise ValueError(f"{type(cost).__name__}.speeds paused every running job: the search would never end")
    if until is not None and clock + step > until:
        step = until - clock
        for worker, speed in zip(order, speeds):
            running[worker].remaining -= speed * step
        return until, []
    done = []
    for worker, speed, seconds in zip(order, speeds, left):
        if seconds <= step:
            done.append(worker)
        else:
            running[worker].remaining -= speed * step
    return clock + step, done
