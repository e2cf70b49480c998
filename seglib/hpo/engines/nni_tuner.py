"""seglib's search as an NNI advisor (a ``MsgDispatcherBase``), run through CustomAlgorithmConfig.

NNI 3.0's own HyperBand crashes on the first metric, promotes NaN, raises IndexError when
trials fail, crashes on resume and restarts promoted trials from scratch; NNI has had no
release since 2023. So the algorithm is :class:`seglib.hpo.hyperband.Search` (HyperBand or
random search) and this class only translates NNI's commands to it:

* every state change is written to ``OUT/search_state.json`` before NNI hears of it, and a
  resumed experiment (``NNI_MODE=resume``) reloads it, reconciles it with what NNI re-runs
  and what the trials wrote to disk, and continues exactly;
* a trial's outcome goes through ``seglib.hpo.outcome.settle``, the rule every engine follows;
* all commands go through one queue (NNI splits them over two threads, so a trial's end
  could overtake its final metric);
* a heartbeat file and, on any exception, ``OUT/tuner_error.txt`` let the driver fail
  loudly instead of waiting on an experiment whose tuner is dead (NNI keeps it RUNNING);
* when the driver (``seglib.hpo.driver``) is gone, the tuner stops the manager, so no
  process of the experiment outlives it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import traceback

import nni
from nni.runtime.env_vars import dispatcher_env_vars
from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
from nni.runtime.tuner_command_channel import CommandType

from seglib.artifacts import FINISHED, RUNNING, ExperimentPaths, read_json_or, write_json, write_text
from seglib.hpo.driver import driver
from seglib.hpo.hyperband import Job, Search
from seglib.hpo.outcome import settle
from seglib.hpo.records import attempt_ids, close_dead_attempts
from seglib.hpo.trial import Assignment

log = logging.getLogger("seglib.hpo.nni_tuner")

HEARTBEAT_SECONDS = 2.0
DRIVER_POLL_SECONDS = 2.0


class SeglibTuner(MsgDispatcherBase):
    """NNI advisor running the search whose state is in ``out_dir`` (see seglib.artifacts)."""

    def __init__(self, out_dir: str, optimize_mode: str = "minimize"):
        if optimize_mode != "minimize":
            raise ValueError(f"seglib's search minimises validation loss; optimize_mode={optimize_mode!r}")
        super().__init__()
        self.paths = ExperimentPaths.of(out_dir)
        self.search = Search.load(self.paths.state_file)
        self.credit = 0
        self.resuming = dispatcher_env_vars.NNI_MODE == "resume"
        self.rerun_by_nni: set[int] = set()
        self.trial_jobs: dict[str, int] = {}  # NNI trial id -> the job its own final metric named
        self.no_more_sent = False
        self._last_beat = 0.0
        self._beat(force=True)
        threading.Thread(target=self._watch_driver, name="seglib-driver-watch", daemon=True).start()

    # -- plumbing -------------------------------------------------------------------------
    def enqueue_command(self, command, data):
        """One queue for everything, so commands are handled in the order NNI sent them."""
        self.default_command_queue.put((command, data))

    def process_command(self, command, data):
        try:
            super().process_command(command, data)
        except Exception:
            write_text(
                self.paths.tuner_error_file, f"seglib tuner crashed handling {command}:\n{traceback.format_exc()}"
            )
            raise

    def handle_ping(self, data):
        self._beat()

    def _beat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            write_json(self.paths.heartbeat_file, {"pid": os.getpid(), "time": now, "finished": self.search.finished})

    def _save(self) -> None:
        self.search.save(self.paths.state_file)
        self._beat(force=True)

    def _watch_driver(self) -> None:
        """Stop the experiment (its manager, hence its trials) once the driver is gone.

        NNI starts the tuner through a shell; the manager is the ``node`` process above it.
        """
        import psutil

        manager = next((p for p in psutil.Process().parents() if "node" in p.name().lower()), None)
        while True:
            time.sleep(DRIVER_POLL_SECONDS)
            self._beat()
            if manager is not None and not manager.is_running():
                os._exit(0)  # the manager is gone: nothing left to tune for
            if driver(self.paths) is None:
                log.warning("the driver of %s is gone: stopping the experiment", self.paths.root)
                if manager is not None:
                    manager.send_signal(signal.SIGTERM)
                os._exit(0)

    # -- NNI commands ---------------------------------------------------------------------
    def handle_initialize(self, data):
        if data and data != self.search.state["search_space"]:
            log.warning("search space from NNI differs from %s; keeping the saved one", self.paths.state_file)
        self.send(CommandType.Initialized, "")

    def handle_update_search_space(self, data):
        log.warning("search space updates are ignored: the search's space is in %s", self.paths.state_file)

    def handle_request_trial_jobs(self, data):
        if self.resuming:
            self._reconcile()
            self.resuming = False
        self.credit += int(data)
        self._send_jobs()

    def handle_import_data(self, data):
        """Resume: NNI hands back finished trials' parameters and final metrics; not used.

        NNI 3.0 pairs a trial id with whichever parameters were queued first when trials start
        together, so these pairs can be wrong; the trials' own result files (read in
        ``_reconcile``) are written before NNI hears of a result and are always right.
        """
        log.info("resume: NNI imported %d finished trials; using the trials' result files instead", len(data or []))

    def handle_add_customized_trial(self, data):
        """Resume: the trials NNI will run again (they were running when it stopped)."""
        items = nni.load(data) if isinstance(data, str) else data
        for item in items if isinstance(items, list) else [items]:
            item = nni.load(item) if isinstance(item, str) else item
            if isinstance(item.get("parameter_id"), int):
                self.rerun_by_nni.add(item["parameter_id"])

    def handle_report_metric_data(self, data):
        if data.get("type") == "REQUEST_PARAMETER":
            raise ValueError("seglib's search does not support NNI multi-phase trials")
        if data.get("type") != "FINAL" or not isinstance(data.get("parameter_id"), int):
            return
        self.trial_jobs[data.get("trial_job_id")] = data["parameter_id"]
        job = self.search.job(data["parameter_id"])
        record = self._record(job, data.get("trial_job_id"))
        if job.status == RUNNING and record is not None:
            settle(self.search, job.parameter_id, record)
            self._save()
        self._send_jobs()

    def handle_trial_end(self, data):
        hyper = nni.load(data["hyper_params"]) if isinstance(data.get("hyper_params"), str) else {}
        trial_id, event = data.get("trial_job_id"), data.get("event")
        job = self._job_of_trial(trial_id, hyper.get("parameter_id"))
        if job is not None and job.status == RUNNING:
            folder = self.paths.trial_dir(job.config_id, job.budget)
            close_dead_attempts(folder, f"its process ended ({event}) without a result", trial_id)
            settle(self.search, job.parameter_id, self._record(job, trial_id), f"NNI reported {event}")
            self._save()
        self._send_jobs()

    def _record(self, job: Job, trial_id: str | None) -> dict | None:
        """The job's result.json, if this trial wrote it (or it is a finished result to reuse)."""
        record = read_json_or(self.paths.trial_dir(job.config_id, job.budget) / "result.json", None)
        if record is None:
            return None
        if record.get("status") in FINISHED or trial_id in (record.get("trial_ids") or []):
            return record
        return None  # an earlier attempt's record: this trial ended without writing its own

    def _job_of_trial(self, trial_id: str | None, nni_parameter_id) -> Job | None:
        """The job a trial really ran.

        NNI 3.0's local training service hands queued parameters to whichever new trial asks
        first, so the parameters NNI pairs with a trial id (``hyper_params`` here) can be a
        sibling's. The trial's own final metric and its folder's attempt list are right; NNI's
        pairing is used only for a trial that died before writing anything.
        """
        if trial_id in self.trial_jobs:
            return self.search.job(self.trial_jobs[trial_id])
        for job in self.search.jobs:
            if job.status == RUNNING and trial_id in attempt_ids(self.paths.trial_dir(job.config_id, job.budget)):
                return job
        if isinstance(nni_parameter_id, int) and 0 <= nni_parameter_id < len(self.search.jobs):
            job = self.search.job(nni_parameter_id)
            if not attempt_ids(self.paths.trial_dir(job.config_id, job.budget)):
                return job
        return None  # another trial is running that job: its own end will settle it

    # -- internals ------------------------------------------------------------------------
    def _reconcile(self) -> None:
        """After a resume: a job sent before the stop is finished on disk, re-run by NNI, or handed out again."""
        self.search.unhalt()
        for job in self.search.jobs:
            if job.status != RUNNING:
                continue
            folder = self.paths.trial_dir(job.config_id, job.budget)
            close_dead_attempts(folder, "the experiment was stopped")
            record = read_json_or(folder / "result.json", None)
            if record is not None and record.get("status") in FINISHED:
                settle(self.search, job.parameter_id, record)
            elif job.parameter_id not in self.rerun_by_nni:
                self.search.requeue(job.parameter_id, "the experiment was stopped")
        self._save()

    def _send_jobs(self) -> None:
        sent = False
        while self.credit > 0:
            job = self.search.next_job()
            if job is None:
                break
            self._save()  # persisted before NNI hears of it
            self.send(
                CommandType.NewTrialJob,
                nni.dump(
                    {
                        "parameter_id": job.parameter_id,
                        "parameter_source": "algorithm",
                        "parameters": Assignment.of(self.search, job).as_parameters(),
                    }
                ),
            )
            self.credit -= 1
            sent = True
        if self.search.finished and not sent and not self.no_more_sent:
            self.no_more_sent = True
            self.send(
                CommandType.NoMoreTrialJobs,
                nni.dump(
                    {
                        "parameter_id": None,
                        "parameter_source": "algorithm",
                        "parameters": "",
                    }
                ),
            )
