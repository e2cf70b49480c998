"""seglib's HyperBand as an NNI advisor (a ``MsgDispatcherBase``), run through CustomAlgorithmConfig.

NNI 3.0's own HyperBand crashes on the first metric, promotes NaN, raises IndexError when
trials fail, crashes on resume and restarts promoted trials from scratch; NNI has had no
release since 2023. So the algorithm is :class:`seglib.hpo.hyperband.HyperBand` and this
class only translates NNI's commands to it:

* every state change is written to ``OUT/hyperband_state.json`` before NNI hears of it, and a
  resumed experiment (``NNI_MODE=resume``) reloads it, reconciles it with what NNI re-runs,
  imports and what the trials wrote to disk, and continues exactly;
* all commands go through one queue (NNI splits them over two threads, so a trial's end
  could overtake its final metric);
* a heartbeat file and, on any exception, ``OUT/dispatcher_error.txt`` let the driver fail
  loudly instead of waiting on an experiment whose tuner is dead (NNI keeps it RUNNING).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from pathlib import Path

import nni
from nni.runtime.msg_dispatcher_base import MsgDispatcherBase
from nni.runtime.tuner_command_channel import CommandType
from nni.runtime.env_vars import dispatcher_env_vars

from seglib.hpo.hyperband import DONE, SENT, HyperBand
from seglib.hpo.layout import Layout
from seglib.hpo.trial import BUDGET_KEY, CONFIG_KEY, read_result

log = logging.getLogger("seglib.hpo.tuner")

HEARTBEAT_SECONDS = 2.0
CLASS_NAME = "seglib.hpo.tuner.SeglibHyperBand"


class SeglibHyperBand(MsgDispatcherBase):
    """NNI advisor running seglib's HyperBand; state in ``out_dir`` (see seglib.hpo.layout)."""

    def __init__(self, out_dir: str, R: int = 60, eta: int = 3, seed: int = 0, passes: int = 1,
                 optimize_mode: str = "minimize"):
        if optimize_mode != "minimize":
            raise ValueError(f"seglib's HyperBand minimises validation loss; optimize_mode={optimize_mode!r}")
        super().__init__()
        self.layout = Layout.of(out_dir)
        self.args = {"max_budget": int(R), "eta": int(eta), "seed": int(seed), "passes": int(passes)}
        self.hb: HyperBand | None = None
        if self.layout.state_file.is_file():
            self.hb = HyperBand.load(self.layout.state_file)
        self.credit = 0
        self.resuming = dispatcher_env_vars.NNI_MODE == "resume"
        self.rerun_by_nni: set[int] = set()
        self.trial_jobs: dict[str, int] = {}  # NNI trial id -> the job its own final metric named
        self.no_more_sent = False
        self._last_beat = 0.0
        self._beat(force=True)

    # -- plumbing -------------------------------------------------------------------------
    def enqueue_command(self, command, data):
        """One queue for everything, so commands are handled in the order NNI sent them."""
        self.default_command_queue.put((command, data))

    def process_command(self, command, data):
        try:
            super().process_command(command, data)
        except Exception:
            self.layout.dispatcher_error_file.write_text(
                f"seglib HyperBand tuner crashed handling {command}:\n{traceback.format_exc()}"
            )
            raise

    def handle_ping(self, data):
        self._beat()

    def _beat(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_beat >= HEARTBEAT_SECONDS:
            self._last_beat = now
            beat = {"pid": os.getpid(), "time": now, "finished": bool(self.hb and self.hb.finished)}
            tmp = self.layout.heartbeat_file.with_name(self.layout.heartbeat_file.name + ".tmp")
            tmp.write_text(json.dumps(beat))
            os.replace(tmp, self.layout.heartbeat_file)

    def _save(self) -> None:
        self.hb.save(self.layout.state_file)
        self._beat(force=True)

    # -- NNI commands ---------------------------------------------------------------------
    def handle_initialize(self, data):
        if self.hb is None:
            self.hb = HyperBand(space=data, **self.args)
            self._save()
        elif data and data != self.hb.state["search_space"]:
            log.warning("search space from NNI differs from %s; keeping the saved one", self.layout.state_file)
        self.send(CommandType.Initialized, "")

    def handle_update_search_space(self, data):
        if self.hb is not None and self.hb.jobs:
            log.warning("search space updates are ignored once HyperBand has sampled configurations")
        elif self.hb is not None:
            self.hb.state["search_space"] = data
            self._save()

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
            raise ValueError("seglib's HyperBand does not support NNI multi-phase trials")
        if data.get("type") != "FINAL" or not isinstance(data.get("parameter_id"), int):
            return
        value = nni.load(data["value"]) if isinstance(data.get("value"), str) else data.get("value")
        self.trial_jobs[data.get("trial_job_id")] = data["parameter_id"]
        self._record(data["parameter_id"], value, data.get("trial_job_id"))
        self._save()
        self._send_jobs()

    def handle_trial_end(self, data):
        hyper = nni.load(data["hyper_params"]) if isinstance(data.get("hyper_params"), str) else {}
        job = self._job_of_trial(data.get("trial_job_id"), hyper.get("parameter_id"))
        if job is not None and job["status"] == SENT:
            folder = self.layout.trial_dir(job["config_id"], job["budget"])
            recorded = read_result(folder)
            if recorded is not None:
                self._record(job["parameter_id"], recorded.get("final"), data.get("trial_job_id"))
            else:
                self.hb.fail(job["parameter_id"],
                             read_failure(folder) or f"trial ended {data.get('event')} without a final result",
                             trial_job_id=data.get("trial_job_id"), event=data.get("event"))
        self._save()
        self._send_jobs()

    def _job_of_trial(self, trial_id: str | None, nni_parameter_id) -> dict | None:
        """The job a trial really ran.

        NNI 3.0's local training service hands queued parameters to whichever new trial asks
        first, so the parameters NNI pairs with a trial id (``hyper_params`` here) can be a
        sibling's. The trial's own final metric and its folder's attempt list are right; NNI's
        pairing is used only for a trial that died before writing anything.
        """
        if trial_id in self.trial_jobs:
            return self.hb.job(self.trial_jobs[trial_id])
        for job in self.hb.jobs:
            if job["status"] == SENT and trial_id in attempt_ids(self.layout.trial_dir(job["config_id"], job["budget"])):
                return job
        if isinstance(nni_parameter_id, int) and 0 <= nni_parameter_id < len(self.hb.jobs):
            job = self.hb.job(nni_parameter_id)
            if not attempt_ids(self.layout.trial_dir(job["config_id"], job["budget"])):
                return job
        return None  # another trial is running that job: its own end will settle it

    # -- internals ------------------------------------------------------------------------
    def _record(self, parameter_id: int, value, trial_job_id=None) -> None:
        job = self.hb.job(parameter_id)
        if job["status"] == DONE:
            return
        metric, diverged = final_value(value)
        self.hb.report(parameter_id, metric, diverged, trial_job_id=trial_job_id)

    def _reconcile(self) -> None:
        """After a resume: a job sent before the stop is either finished on disk, re-run by NNI, or lost."""
        for job in self.hb.jobs:
            if job["status"] != SENT:
                continue
            recorded = read_result(self.layout.trial_dir(job["config_id"], job["budget"]))
            if recorded is not None:
                self._record(job["parameter_id"], recorded.get("final"))
            elif job["parameter_id"] not in self.rerun_by_nni:
                log.info("job %s (%s, budget %s) was lost in the stop: handing it out again",
                         job["parameter_id"], job["config_id"], job["budget"])
                self.hb.requeue(job["parameter_id"])
        self._save()

    def _send_jobs(self) -> None:
        sent = False
        while self.credit > 0:
            job = self.hb.next_job()
            if job is None:
                break
            self._save()  # persisted before NNI hears of it
            params = dict(self.hb.state["configs"][job["config_id"]]["params"])
            params.update({BUDGET_KEY: job["budget"], CONFIG_KEY: job["config_id"]})
            self.send(CommandType.NewTrialJob, nni.dump({
                "parameter_id": job["parameter_id"], "parameter_source": "algorithm", "parameters": params,
            }))
            self.credit -= 1
            sent = True
        if self.hb.finished and not sent and not self.no_more_sent:
            self.no_more_sent = True
            self.send(CommandType.NoMoreTrialJobs, nni.dump({
                "parameter_id": None, "parameter_source": "algorithm", "parameters": "",
            }))


def final_value(value) -> tuple[float | None, bool]:
    """(loss, diverged) from a trial's final metric: a dict with 'default' or a number."""
    if isinstance(value, dict):
        diverged = bool(value.get("diverged"))
        value = value.get("default")
    else:
        diverged = False
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None, True
    return (value, diverged) if math.isfinite(value) else (None, True)


def attempt_ids(trial_dir: Path) -> set[str]:
    """NNI trial ids that ran (or re-reported) this (configuration, budget) pair, from its folder."""
    try:
        history = json.loads((Path(trial_dir) / "history.json").read_text())
    except (OSError, json.JSONDecodeError):
        return set()
    return {a.get("trial_id") for a in history.get("attempts", [])} | set(history.get("reused_by", []))


def read_failure(trial_dir: Path) -> str | None:
    """The error a failed trial recorded in its folder, if any."""
    try:
        result = json.loads((Path(trial_dir) / "result.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return result.get("error")
