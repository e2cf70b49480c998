"""The in-process engine: the search's trials one after another in the driver's own process.

What a trial process pays every time — starting Python, importing Keras, loading the patches,
compiling the training program — is paid once here: the trials share the loaded arrays and,
on JAX, the data on the device and the compiled programs whose shapes match
(``seglib.train.jax_loop``). The same search state, trial folders, warm start and export as
the NNI engine; no web UI, no second machine, one trial at a time, or on JAX up to
``pack_trials`` trained together in one program (``seglib.train.packed``), like batch sizes
together (``seglib.hpo.schedule.packs``): on a GPU a small-batch trial alone keeps the device a
few per cent busy.

Interrupted (Ctrl-C, SIGTERM, a kill), it loses only the epochs after the running trial's
last checkpoint: run again, the search hands that pair out again and the trial resumes.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time

from seglib.artifacts import RUNNING, ExperimentPaths
from seglib.hpo.export import progress
from seglib.hpo.hyperband import Search
from seglib.hpo.outcome import Interrupted, settle
from seglib.hpo.records import close_dead_attempts
from seglib.hpo.runtime import read_trial_settings
from seglib.hpo.schedule import coming, hand_out, packs
from seglib.hpo.trial import Assignment, TrialContext, run_job

log = logging.getLogger("seglib.hpo.local")


class LocalReporter:
    """A trial's reports in-process: the trial folder's history is the record, nothing to send."""

    _numbers = itertools.count(1)

    def __init__(self):
        self.trial_id = f"local-{os.getpid()}-{next(self._numbers)}"
        self.process_start = time.time()  # the trial's start: in-process, nothing starts before it

    def intermediate(self, value: float) -> None:
        pass

    def final(self, result: dict) -> None:
        pass


def run_trials(paths: ExperimentPaths, record: dict, show=None, timeout: float | None = None) -> None:
    """Run the search in ``paths`` until it is finished or halted (the caller holds the driver lock)."""
    search = Search.load(paths.state_file)
    reconcile(paths, search)
    _, settings, runtime = read_trial_settings(paths.settings_file)
    context = TrialContext(
        paths, settings, runtime.get("cache_dir"), runtime.get("compile_cache_dir"), share_models=True
    )
    deadline = None if timeout is None else time.time() + timeout
    pack = settings.pack_trials if _on_jax() else 1
    # Packing takes all a search can plan ahead, so that like batch sizes share packs.
    ahead = pack > 1 and search.plans_ahead
    compiler = _compile_ahead(settings, pack)
    try:
        for number in itertools.count():
            handed = hand_out(search, None if ahead else pack)
            if not handed:
                break
            search.save(paths.state_file)  # handed out: written before the trials start
            _train_handed(context, search, handed, pack, show, deadline, timeout, compiler, first=number == 0)
    finally:
        if compiler is not None:
            compiler.close()


def _train_handed(
    context: TrialContext, search: Search, handed: list, pack: int, show, deadline, timeout, compiler, first: bool
) -> None:
    """Train what was handed out, pack by pack; put back in the queue what never started.

    With ``compiler`` (a ``CompileAhead``), the programs of what comes are queued first: on the
    ``first`` hand-out all the search can bring, later those of the jobs handed out.
    """
    paths = context.paths
    waiting = list(handed)
    try:
        if compiler is not None:
            _queue(compiler, context, lambda: coming(search, handed) if first else map(search.params, handed))
        for jobs in packs(search, handed, pack):
            if search.halted:  # the machine stopped the search: start nothing more
                break
            started = {job.parameter_id for job in jobs}
            waiting = [job for job in waiting if job.parameter_id not in started]
            _train(context, search, jobs)
            if show is not None:
                show(progress(paths.root))
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(
                    f"the search in {paths.root} did not finish within {timeout} s; run it again to continue"
                )
    finally:
        # Handed out but never started: back in the queue as they were, no interruption to tell.
        for job in waiting:
            search.requeue(job.parameter_id)
        if waiting:
            search.save(paths.state_file)


def _train(context: TrialContext, search: Search, jobs: list) -> None:
    """One trial, or a pack of them; each result settled and saved, then what must stop the search raised."""
    paths = context.paths
    outcomes = [_run(context, search, jobs[0])] if len(jobs) == 1 else _run_packed(context, search, jobs)
    for job, (record, error) in zip(jobs, outcomes):
        if error is None:
            settle(search, job.parameter_id, record)
        else:
            settle(search, job.parameter_id, record, f"{type(error).__name__}: {error}")
        search.save(paths.state_file)
    for job, (_, error) in zip(jobs, outcomes):
        if error is None:
            continue
        if isinstance(error, (KeyboardInterrupt, Interrupted)) or not isinstance(error, Exception):
            raise error
        log.info("trial %s-b%03d failed: %s", job.config_id, job.budget, error)  # the progress line counts it


def _compile_ahead(settings, pack: int):
    """A ``CompileAhead`` of ``settings.compile_ahead`` threads (JAX, one trial at a time), or None."""
    if not settings.compile_ahead:
        return None
    if not _on_jax() or pack > 1:
        why = "the backend is not JAX" if not _on_jax() else f"pack_trials={pack} trains packs of its own"
        log.warning("compile_ahead=%d is off: %s", settings.compile_ahead, why)
        return None
    from seglib.train.ahead import CompileAhead

    return CompileAhead(settings.compile_ahead)


def _queue(compiler, context: TrialContext, params) -> None:
    """Queue the programs of trainings of the hyperparameters ``params()`` gives, soonest first.

    A failure stops only the compiling ahead (logged once): a trial meets the same cause where
    its outcome is recorded.
    """
    failed = None
    try:
        x_train, y_train, x_val, y_val = context.arrays()
        options = context.train_options()
        for one in params():
            try:
                compiler.add(x_train, y_train, (x_val, y_val), context.settings_for(one), options)
            except Exception as error:  # e.g. a configuration the settings refuse: its trial will say so
                failed = failed or f"{one}: {type(error).__name__}: {error}"
    except Exception as error:
        failed = f"{type(error).__name__}: {error}"
    if failed:
        log.warning("compiling ahead skipped what it could not prepare, first %s", failed)


def _on_jax() -> bool:
    import keras

    return keras.backend.backend() == "jax"


def _run(context: TrialContext, search: Search, job, train_with=None) -> tuple[dict | None, BaseException | None]:
    """One trial: (its record, None), or (the record its failure left, the exception)."""
    try:
        return run_job(context, Assignment.of(search, job), LocalReporter(), train_with), None
    except BaseException as error:  # the caller settles the search, then re-raises what must stop it
        return getattr(error, "seglib_record", None), error


def _run_packed(context: TrialContext, search: Search, jobs: list) -> list:
    """Several trials, each in its own thread as far as its training, trained together by a Packer."""
    packer = Packer(len(jobs))
    outcomes: list = [None] * len(jobs)
    context.arrays(), context.pool  # loaded once, here, not by several threads at once

    def one(index: int, job) -> None:
        try:
            outcomes[index] = _run(context, search, job, packer.train)
        finally:
            packer.leave()

    threads = [threading.Thread(target=one, args=(i, job), name=f"trial-{job.config_id}") for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


class Packer:
    """Collects the ``train`` calls of ``expected`` trial threads and trains them together.

    Each thread's call waits until every thread has either called or left (a trial already
    recorded, or one that failed before training); then one of them trains the calls, packed
    by architecture, whatever their activations (``seglib.train.packed``), and every call
    returns its own result.
    """

    def __init__(self, expected: int):
        self._expected, self._calls, self._results = expected, {}, {}
        self._started = False
        self._condition = threading.Condition()

    def train(self, x_train, y_train, x_val=None, y_val=None, **call):
        me = threading.get_ident()
        with self._condition:
            self._calls[me] = call
            runs = False
            while me not in self._results:
                if not self._started and len(self._calls) == self._expected:
                    self._started = runs = True
                    break
                self._condition.wait()
        if runs:
            results = self._train_all(x_train, y_train, x_val, y_val)
            with self._condition:
                self._results.update(results)
                self._condition.notify_all()
        with self._condition:
            result = self._results[me]
        if isinstance(result, BaseException):
            raise result
        return result

    def leave(self) -> None:
        """The calling thread will not (or no longer) call ``train``."""
        with self._condition:
            if threading.get_ident() not in self._calls:
                self._expected -= 1
                self._condition.notify_all()

    def _train_all(self, x_train, y_train, x_val, y_val) -> dict:
        from seglib.train.packed import ARCHITECTURE, PackedTrial, train_packed

        groups: dict[tuple, list] = {}
        for thread, call in self._calls.items():
            groups.setdefault(tuple(getattr(call["settings"], n) for n in ARCHITECTURE), []).append(thread)
        results = {}
        for threads in groups.values():
            calls = [self._calls[t] for t in threads]
            trials = [PackedTrial(c["settings"], c["epochs"], c["checkpoint_dir"]) for c in calls]
            try:
                trained = train_packed(
                    x_train,
                    y_train,
                    x_val,
                    y_val,
                    trials=trials,
                    on_epoch_end=lambda index, epoch, logs, calls=calls: calls[index]["on_epoch_end"](epoch, logs),
                    options=calls[0]["options"],
                    slots=calls[0]["settings"].pack_trials,
                )
            except BaseException as error:  # every trial of the pack fails with it
                trained = [error] * len(threads)
            results.update(zip(threads, trained))
        return results


def reconcile(paths: ExperimentPaths, search: Search) -> None:
    """After an interruption: jobs handed out before it go back in the queue.

    The caller holds the folder's driver lock, so no trial of this search can still be
    running; attempts left RUNNING by a killed process are closed as INTERRUPTED.
    """
    for job in search.jobs:
        folder = paths.trial_dir(job.config_id, job.budget)
        close_dead_attempts(folder, "the search's process was stopped")
        if job.status == RUNNING:
            search.requeue(job.parameter_id, "the search's process was stopped")
    search.unhalt()
    search.save(paths.state_file)
