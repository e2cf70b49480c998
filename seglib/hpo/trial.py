"""One HPO trial, whichever engine runs it.

A trial trains one (configuration, budget) pair: the run's settings with the configuration's
hyperparameters, to ``budget`` epochs in all (one budget unit = one epoch), reporting the
validation loss after every epoch and, at the end, ``{"default": best validation loss,
"precision", "recall", "mean_iou", ...}``. Each pair owns ``trials/<config>-b<budget>/``
(params, per-epoch history, result, model, error) and each configuration owns
``checkpoints/<config>/``, so:

* warm start: a configuration promoted from budget 6 to 20 resumes from its epoch-6
  checkpoint and trains 14 epochs (``seglib.train`` resumes from the latest checkpoint at or
  below the budget); a trial interrupted after k epochs resumes from epoch k the same way;
* a pair whose ``result.json`` says SUCCEEDED or DIVERGED reports that result again without
  training, so a resumed search never trains a finished pair twice;
* a trial resumes only from epochs its pair's folder records (a pair whose folder was deleted
  trains its rung again), and a checkpoint that does not load is set aside as ``.damaged``
  and the trial resumes from the one before it;
* a diverged run reports the finite ``PENALTY_LOSS`` (NaN would break NNI's ranking and web
  UI); an error of the trial's own is FAILED with its traceback; an interruption (a signal,
  the manager or driver gone) is INTERRUPTED and the pair is handed out again; an error of
  the machine (disk full, out of memory, data missing) halts the search
  (``seglib.hpo.outcome.settle``).

NNI runs each trial in a process of its own (``seglib.hpo.trial_process``); the in-process
engine calls :func:`run_job` directly.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from seglib.artifacts import (
    DAMAGED_SUFFIX,
    DIVERGED,
    RUNNING,
    SUCCEEDED,
    ExperimentPaths,
    atomic_write,
    finite_or_none,
    trial_key,
    write_json,
    write_text,
)
from seglib.hpo.hyperband import Job, Search
from seglib.hpo.outcome import classify, describe
from seglib.hpo.records import read_history, read_result
from seglib.settings import HYPERPARAMETERS, Settings
from seglib.system import machine_name

log = logging.getLogger("seglib.hpo.trial")

BUDGET_KEY = "TRIAL_BUDGET"  # NNI's HyperBand name for the budget; 1 unit = 1 epoch
CONFIG_KEY = "CONFIG_ID"  # which configuration (its checkpoint folder)
PARAMETER_KEY = "PARAMETER_ID"  # which job of the search state
RESUME_KEY = "RESUME_FROM"  # the epoch its rung starts from (the previous rung's budget)
PENALTY_LOSS = 100.0  # reported for a diverged trial: above any real Dice + focal loss


@dataclass(frozen=True)
class Assignment:
    """What a trial is handed: one (configuration, budget) pair to train, and its place in the search."""

    config_id: str
    budget: int
    params: dict
    parameter_id: int | None = None
    resume_from: int | None = None  # None: from the latest checkpoint at or below the budget

    @classmethod
    def of(cls, search: Search, job: Job) -> Assignment:
        return cls(job.config_id, int(job.budget), search.params(job), job.parameter_id, int(job.resume_from))

    def as_parameters(self) -> dict:
        """The parameters an engine hands the trial process (NNI's ``get_next_parameter``)."""
        return {
            **self.params,
            CONFIG_KEY: self.config_id,
            BUDGET_KEY: self.budget,
            PARAMETER_KEY: self.parameter_id,
            RESUME_KEY: self.resume_from,
        }

    @classmethod
    def from_parameters(cls, parameters: dict, default_budget: int, trial_id: str) -> Assignment:
        budget = int(parameters.get(BUDGET_KEY) or default_budget)
        config_id = parameters.get(CONFIG_KEY) or ("standalone" if trial_id == "STANDALONE" else f"t-{trial_id}")
        keys = (CONFIG_KEY, BUDGET_KEY, PARAMETER_KEY, RESUME_KEY)
        params = {k: v for k, v in parameters.items() if k not in keys}
        resume_from = parameters.get(RESUME_KEY)
        return cls(
            str(config_id),
            budget,
            params,
            parameters.get(PARAMETER_KEY),
            None if resume_from is None else int(resume_from),
        )


class TrialContext:
    """What trials of one experiment share: its folder, the run's settings, the arrays.

    The in-process engine keeps one context for all its trials (``share_models``), so the
    patches are loaded (and, on JAX, put on the device) once and a compiled model is lent
    from one trial to the next of the same architecture (``seglib.train.ModelPool``); a
    trial process makes its own.
    """

    def __init__(
        self,
        paths: ExperimentPaths,
        settings: Settings,
        cache_dir=None,
        compile_cache_dir=None,
        share_models: bool = False,
    ):
        self.paths, self.settings = paths, settings
        self.cache_dir, self.compile_cache_dir = cache_dir, compile_cache_dir
        self.share_models = share_models
        self._arrays = None
        self._pool = None

    @property
    def pool(self):
        """The process's model pool when models are shared (made on first use: it needs Keras)."""
        if self.share_models and self._pool is None:
            from seglib.train import ModelPool

            self._pool = ModelPool()
        return self._pool

    def settings_for(self, params: dict) -> Settings:
        """The run's settings with a configuration's hyperparameters."""
        return self.settings.replace(**{k: params[k] for k in HYPERPARAMETERS if k in params})

    def train_options(self):
        """How a trial trains (``seglib.train.TrainOptions``): sharing the pool and the compile cache."""
        from seglib.train import TrainOptions

        return TrainOptions(verbose=2, compile_cache_dir=self.compile_cache_dir, pool=self.pool)

    def arrays(self):
        """Training and validation arrays from the experiment's split (loaded once)."""
        if self._arrays is None:
            from seglib.data import load_split, model_inputs, prepare

            patches = prepare(self.settings.data, self.settings.patch_size, cache_dir=self.cache_dir)
            index = load_split(self.paths.split_file, "seglib.hpo when it starts an experiment")
            self._arrays = (*model_inputs(patches, index["train"]), *model_inputs(patches, index["val"]))
        return self._arrays


def run_job(context: TrialContext, job: Assignment, reporter, train_with=None) -> dict:
    """Train ``job`` (or return its recorded result), report to ``reporter``; return its record.

    ``reporter`` has ``trial_id``, ``intermediate(value)`` and ``final(result)``. An
    exception is recorded (result.json, error.txt) and raised again for the engine.
    ``train_with`` replaces ``seglib.train.train`` (same arguments and result): the local
    engine's packer, which trains several trials' calls together.
    """
    paths = context.paths
    trial_dir = paths.trial_dir(job.config_id, job.budget)
    trial_dir.mkdir(parents=True, exist_ok=True)
    history_file, started = trial_dir / "history.json", time.perf_counter()
    recorded = read_result(trial_dir)
    if recorded is not None:
        log.info("%s was already trained (%s): reporting its recorded result", trial_dir.name, recorded["status"])
        history = read_history(trial_dir)
        history.setdefault("reused_by", []).append(reporter.trial_id)
        write_json(history_file, history)
        reporter.final(recorded["final"])
        return recorded

    history = read_history(trial_dir)
    attempt = {
        "trial_id": reporter.trial_id,
        "pid": os.getpid(),
        "host": machine_name(),
        "process_started": reporter.process_start,
        "started": time.time(),
        "status": RUNNING,
    }
    history["attempts"].append(attempt)
    write_json(history_file, history)
    record = {
        "key": trial_key(job.config_id, job.budget),
        "config_id": job.config_id,
        "budget": job.budget,
        "params": job.params,
        "parameter_id": job.parameter_id,
        "host": attempt["host"],
    }

    def on_epoch_end(epoch: int, logs: dict) -> None:
        entry = {
            "epoch": epoch + 1,
            "trial_id": reporter.trial_id,
            "ended": time.time(),
            **{k: finite_or_none(v) for k, v in logs.items()},
        }
        if "first_epoch_seconds" not in attempt:
            attempt["first_epoch_seconds"] = time.time() - attempt["process_started"]
        history["epochs"].append(entry)
        write_json(history_file, history)
        reporter.intermediate(entry["val_loss"] if entry.get("val_loss") is not None else PENALTY_LOSS)

    try:
        settings = context.settings_for(job.params)
        write_json(
            trial_dir / "params.json",
            {"config_id": job.config_id, "budget": job.budget, "params": job.params, "settings": settings.to_dict()},
        )
        x_train, y_train, x_val, y_val = context.arrays()
        attempt["data_seconds"] = time.perf_counter() - started
        from seglib.train import train

        checkpoint_dir = paths.checkpoint_dir(job.config_id)
        attempt.update(_resume_point(job, checkpoint_dir, history))
        write_json(history_file, history)
        result = (train_with or train)(
            x_train,
            y_train,
            x_val,
            y_val,
            settings=settings,
            epochs=job.budget,
            schedule_epochs=settings.max_budget,  # one schedule across rungs: warm start stays exact
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=on_epoch_end,
            options=context.train_options(),
        )
        record.update(_finish(result, history, trial_dir, checkpoint_dir))
    except BaseException as error:
        status, cause = classify(error)
        attempt.update(
            status=status,
            seconds=time.perf_counter() - started,
            ended=time.time(),
            error=f"{type(error).__name__}: {error}",
        )
        text = traceback.format_exc()
        record.update(
            status=status,
            cause=cause,
            error=describe(error),
            traceback=text,
            epochs_trained=len(history["epochs"]),
            trial_ids=[a["trial_id"] for a in history["attempts"]],
            seconds=sum(a.get("seconds", 0.0) for a in history["attempts"]),
        )
        try:  # the disk may be what failed: the engine still gets the record from the exception
            write_json(history_file, history)
            write_text(trial_dir / "error.txt", text)
            write_json(trial_dir / "result.json", record)
        except OSError as secondary:
            log.error("could not record the failure of %s in %s: %s", job, trial_dir, secondary)
        error.seglib_record = record
        raise
    attempt.update(status=record["status"], seconds=time.perf_counter() - started, ended=time.time())
    record["seconds"] = sum(a.get("seconds", 0.0) for a in history["attempts"])
    record["first_epoch_seconds"] = next(
        (a["first_epoch_seconds"] for a in history["attempts"] if "first_epoch_seconds" in a), None
    )
    write_json(history_file, history)
    if record.get("metrics"):
        write_json(trial_dir / "metrics.json", record["metrics"])
    write_json(trial_dir / "result.json", record)
    (trial_dir / "error.txt").unlink(missing_ok=True)
    reporter.final(record["final"])
    return record


def _resume_point(job: Assignment, checkpoint_dir: Path, history: dict) -> dict:
    """Where this attempt starts: the latest readable checkpoint its pair's records account for.

    Epochs above the rung's start that the pair's history does not hold (its folder was
    deleted, or the last attempt stopped between a checkpoint and its record) are trained
    again; a damaged checkpoint is set aside (``seglib.train.checkpoints``) and the epochs
    recorded after the one resumed from leave the history, to be trained and recorded again.
    """
    from seglib.train import forget_checkpoints, latest_checkpoint

    point = {}
    if job.resume_from is not None:
        recorded = max((e["epoch"] for e in history["epochs"]), default=job.resume_from)
        forgotten = forget_checkpoints(checkpoint_dir, max(recorded, job.resume_from), job.budget)
        if forgotten:
            point["unrecorded_epochs"] = forgotten
    before = {p.name for p in checkpoint_dir.glob(f"*{DAMAGED_SUFFIX}*")}
    point["initial_epoch"] = latest_checkpoint(checkpoint_dir, job.budget)
    set_aside = sorted(p.name for p in checkpoint_dir.glob(f"*{DAMAGED_SUFFIX}*") if p.name not in before)
    if set_aside:
        point["set_aside"] = [str(checkpoint_dir / name) for name in set_aside]
    history["epochs"] = [e for e in history["epochs"] if e["epoch"] <= point["initial_epoch"]]
    return point


def _finish(result, history, trial_dir, checkpoint_dir) -> dict:
    """The pair's result: its scores, model file, pruned checkpoints, the engine's final dict."""
    from seglib.data import write_recipe
    from seglib.train import prune_checkpoints

    attempts = history["attempts"]
    record = {
        "epochs_trained": len(history["epochs"]),
        # the epoch the recorded ones continue from (an attempt that lost epochs resumed lower)
        "resumed_from": min((e["epoch"] for e in history["epochs"]), default=result.initial_epoch + 1) - 1,
        "trial_ids": [a["trial_id"] for a in attempts],
        "backend": result.metadata["backend"],
        "loop": result.metadata["loop"],
        "best_val_loss": finite_or_none(result.best_val_loss),
        "message": result.message,
        "error": None,
        "cause": None,
    }
    if result.diverged or record["best_val_loss"] is None:
        record.update(status=DIVERGED, metrics=None, model=None)
        record["final"] = {"default": PENALTY_LOSS, "diverged": 1, "epochs_trained": record["epochs_trained"]}
        return record
    metrics = kept_scores(result)
    checkpoint = Path(result.checkpoint) if result.checkpoint else None
    atomic_write(trial_dir / "model.keras", result.model.save)
    write_recipe(trial_dir / "model.keras", result.metadata.get("recipe", {}))
    if checkpoint is not None and checkpoint.is_file():
        prune_checkpoints(checkpoint_dir, result.epochs_trained)
    final = {"default": record["best_val_loss"], "diverged": 0, "epochs_trained": record["epochs_trained"]}
    for name in ("precision", "recall", "mean_iou", "loss", "accuracy"):
        value = finite_or_none(metrics.get(name))
        if value is not None:
            final["val_" + name if name == "loss" else name] = value
    record.update(status=SUCCEEDED, metrics=metrics, final=final, model=str(trial_dir / "model.keras"))
    return record


def kept_scores(result) -> dict:
    """The validation scores of the epoch whose weights the trial's model holds.

    Training validated every epoch in the trial's batch size, so these are what a second pass
    over the validation set would give, without its cost to every trial. A trial's scores
    therefore have no per-class IoU (the baseline's and the tuned model's have).
    """
    epoch = result.kept_epoch or result.epochs_trained
    prefix = "val_"
    return {
        key[len(prefix) :]: values[epoch - 1]
        for key, values in result.history.items()
        if key.startswith(prefix) and len(values) >= epoch
    }
