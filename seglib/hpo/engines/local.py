"""The in-process engine: the search's trials one after another in the driver's own process.

What a trial process pays every time — starting Python, importing Keras, loading the patches,
compiling the training program — is paid once here: the trials share the loaded arrays and,
on JAX, the data on the device and the compiled programs whose shapes match
(``seglib.train.jax_loop``). The same search state, trial folders, warm start and export as
the NNI engine; no web UI, no second machine, one trial at a time (on one GPU a single
stream of trials keeps it busy without the processes' fixed costs).

Interrupted (Ctrl-C, SIGTERM, a kill), it loses only the epochs after the running trial's
last checkpoint: run again, the search hands that pair out again and the trial resumes.
"""

from __future__ import annotations

import itertools
import logging
import os
import time

from seglib.artifacts import RUNNING, ExperimentPaths
from seglib.hpo.export import progress
from seglib.hpo.hyperband import Search
from seglib.hpo.outcome import Interrupted, settle
from seglib.hpo.records import close_dead_attempts
from seglib.hpo.runtime import read_trial_settings
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
    while (job := search.next_job()) is not None:
        search.save(paths.state_file)  # handed out: written before the trial starts
        try:
            record = run_job(context, Assignment.of(search, job), LocalReporter())
        except BaseException as error:
            settle(search, job.parameter_id, getattr(error, "seglib_record", None), f"{type(error).__name__}: {error}")
            search.save(paths.state_file)
            if isinstance(error, (KeyboardInterrupt, Interrupted)) or not isinstance(error, Exception):
                raise
            log.info("trial %s-b%03d failed: %s", job.config_id, job.budget, error)  # the progress line counts it
        else:
            settle(search, job.parameter_id, record)
            search.save(paths.state_file)
        if show is not None:
            show(progress(paths.root))
        if deadline is not None and time.time() > deadline:
            raise TimeoutError(
                f"the search in {paths.root} did not finish within {timeout} s; run it again to continue"
            )


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
