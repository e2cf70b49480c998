"""One HPO trial, whichever engine runs it; and the trial process NNI starts.

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
* a diverged run reports the finite ``PENALTY_LOSS`` (NaN would break NNI's ranking and web
  UI); an error of the trial's own is FAILED with its traceback; an interruption (a signal,
  the manager or driver gone) is INTERRUPTED and the pair is handed out again; an error of
  the machine (disk full, out of memory, data missing) halts the search (see ``settle``).

``python -m seglib.hpo.trial --settings trial_code/settings.json`` is the process NNI starts;
outside an experiment ``python -m seglib.hpo.trial --out DIR`` trains the profile's defaults.
Keras is imported only after the backend, thread and GPU-memory settings are in the
environment, so several trials can share one GPU or two CPU cores.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from seglib.artifacts import (
    DIVERGED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    RUNNING,
    SUCCEEDED,
    ArtifactError,
    ExperimentPaths,
    finite_or_none,
    read_json,
    read_json_or,
    trial_key,
    write_json,
    write_text,
)
from seglib.hpo.hyperband import Search
from seglib.settings import HYPERPARAMETERS, SettingError, Settings

log = logging.getLogger("seglib.hpo.trial")

BUDGET_KEY = "TRIAL_BUDGET"  # NNI's HyperBand name for the budget; 1 unit = 1 epoch
CONFIG_KEY = "CONFIG_ID"  # which configuration (its checkpoint folder)
PARAMETER_KEY = "PARAMETER_ID"  # which job of the search state
PENALTY_LOSS = 100.0  # reported for a diverged trial: above any real Dice + focal loss
MAX_LOST = 3  # a pair whose trial process died this often without a word is FAILED
MANAGER_POLL_SECONDS = 2.0
LOST_GRACE_SECONDS = 20.0  # after its manager is gone, a trial records itself and exits within this
HOST_VARIABLE = "SEGLIB_HOST"  # names this machine in trial records when set
# Why a trial failed: its own configuration ("trial"), or the machine ("environment").
TRIAL_CAUSE, ENVIRONMENT_CAUSE = "trial", "environment"
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}


class Interrupted(Exception):
    """The trial was stopped from outside (a signal, its manager or driver gone)."""


# ---------------------------------------------------------------------------------------------
# What a trial is handed, and what it reads


@dataclass(frozen=True)
class Job:
    """One (configuration, budget) pair to train; ``parameter_id`` is its place in the search."""

    config_id: str
    budget: int
    params: dict
    parameter_id: int | None = None

    @classmethod
    def of(cls, search: Search, job: dict) -> Job:
        return cls(job["config_id"], int(job["budget"]), search.params(job), job["parameter_id"])

    def as_parameters(self) -> dict:
        """The parameters an engine hands the trial process (NNI's ``get_next_parameter``)."""
        return {**self.params, CONFIG_KEY: self.config_id, BUDGET_KEY: self.budget, PARAMETER_KEY: self.parameter_id}

    @classmethod
    def from_parameters(cls, parameters: dict, default_budget: int, trial_id: str) -> Job:
        budget = int(parameters.get(BUDGET_KEY) or default_budget)
        config_id = parameters.get(CONFIG_KEY) or ("standalone" if trial_id == "STANDALONE" else f"t-{trial_id}")
        params = {k: v for k, v in parameters.items() if k not in (CONFIG_KEY, BUDGET_KEY, PARAMETER_KEY)}
        return cls(str(config_id), budget, params, parameters.get(PARAMETER_KEY))


def write_trial_settings(
    paths: ExperimentPaths,
    settings: Settings,
    *,
    backend: str | None = None,
    concurrency: int = 1,
    cache_dir=None,
    compile_cache_dir=None,
) -> Path:
    """``trial_code/settings.json``: the run's settings plus how a trial process sets itself up.

    Threads default to the CPU cores shared by ``concurrency`` trials, the GPU memory cap to
    0.9 / concurrency; the JAX compilation cache is ``$SEGLIB_COMPILE_CACHE`` if set (shared
    by experiments), else ``OUT/compile_cache``.
    """
    cores = os.cpu_count() or 1
    return write_json(
        paths.settings_file,
        {
            "out_dir": str(paths.root),
            "settings": settings.to_dict(),
            "runtime": {
                "backend": backend,
                "threads": max(1, cores // max(1, concurrency)),
                "gpu_memory_fraction": round(0.9 / max(1, concurrency), 3),
                "cache_dir": None if cache_dir is None else str(cache_dir),
                "compile_cache_dir": str(
                    compile_cache_dir or os.environ.get("SEGLIB_COMPILE_CACHE") or paths.compile_cache
                ),
            },
        },
    )


def read_trial_settings(path) -> tuple[ExperimentPaths, Settings, dict]:
    """The experiment folder, run settings and runtime settings a trial process reads."""
    data = read_json(path, "seglib.hpo when it starts an experiment")
    try:
        return ExperimentPaths.of(data["out_dir"]), Settings.from_dict(data["settings"], str(path)), data["runtime"]
    except (KeyError, TypeError):
        raise ArtifactError(
            f"{path}: expected 'out_dir', 'settings' and 'runtime'; rebuild it by starting the "
            "experiment again in a new folder"
        ) from None


def configure_environment(runtime: dict) -> dict:
    """Backend, CPU threads and GPU memory sharing, set before Keras is imported; returns them."""
    env = {}
    if runtime.get("backend"):
        env["KERAS_BACKEND"] = runtime["backend"]
    threads = runtime.get("threads")
    if threads:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            eigen = str(threads > 1).lower()
            env["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={eigen} intra_op_parallelism_threads={threads}"
            env["XLA_FLAGS"] = env["XLA_FLAGS"].strip()
    # Several trials on one GPU: JAX allocates on demand up to its share; TF grows on demand.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    # With preallocation off, this trial's cap. One name only: jaxlib 0.11 refuses both together
    # and then falls back to the CPU (seen on an H200). The old name is honoured by every jaxlib.
    if runtime.get("gpu_memory_fraction") and not os.environ.get("XLA_CLIENT_MEM_FRACTION"):
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(runtime["gpu_memory_fraction"])
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    if runtime.get("compile_cache_dir"):
        env["SEGLIB_COMPILE_CACHE"] = runtime["compile_cache_dir"]
    os.environ.update(env)
    return env


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

    def arrays(self):
        """Training and validation arrays from the experiment's split (loaded once)."""
        if self._arrays is None:
            from seglib.data import load_split, model_inputs, prepare

            patches = prepare(self.settings.data, self.settings.patch_size, cache_dir=self.cache_dir)
            index = load_split(self.paths.split_file, "seglib.hpo when it starts an experiment")
            self._arrays = (*model_inputs(patches, index["train"]), *model_inputs(patches, index["val"]))
        return self._arrays


# ---------------------------------------------------------------------------------------------
# Trial folders


def read_result(trial_dir: Path) -> dict | None:
    """A pair's recorded result if it can be reused (SUCCEEDED or DIVERGED), else None."""
    result = read_json_or(Path(trial_dir) / "result.json", None)
    return result if result and result.get("status") in FINISHED else None


def read_history(trial_dir: Path) -> dict:
    return read_json_or(Path(trial_dir) / "history.json", None) or {"epochs": [], "attempts": []}


def attempt_ids(trial_dir: Path) -> set[str]:
    """Engine trial ids that ran (or re-reported) this pair, from its folder."""
    history = read_history(trial_dir)
    return {a.get("trial_id") for a in history.get("attempts", [])} | set(history.get("reused_by", []))


def machine() -> str:
    """This machine's name in trial records: ``$SEGLIB_HOST`` if set, else its host name.

    Machines can share a host name (containers, cloned VMs, SSH servers on one box); setting
    SEGLIB_HOST on each (sshd_config ``SetEnv``, or the login environment) tells them apart.
    """
    return os.environ.get(HOST_VARIABLE) or socket.gethostname()


def process_alive(attempt: dict) -> bool:
    """Whether an attempt's process still runs (only knowable on the machine that ran it)."""
    if attempt.get("host") not in (None, machine()):
        return True  # another machine's: its engine reports its end
    try:
        os.kill(int(attempt["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def close_dead_attempts(trial_dir: Path, reason: str = "its process is gone", trial_id: str | None = None) -> bool:
    """Mark attempts still RUNNING whose process is gone as INTERRUPTED; True if any was.

    ``trial_id``: an attempt its engine reported ended, on whatever machine it ran (another
    machine's process cannot be checked from here).
    """
    history = read_history(trial_dir)
    dead = [
        a
        for a in history.get("attempts", [])
        if a.get("status") == RUNNING and (a.get("trial_id") == trial_id or not process_alive(a))
    ]
    for attempt in dead:
        attempt.update(status=INTERRUPTED, error=attempt.get("error") or reason)
    if dead:
        write_json(Path(trial_dir) / "history.json", history)
    return bool(dead)


# ---------------------------------------------------------------------------------------------
# Running one trial


def run_job(context: TrialContext, job: Job, reporter) -> dict:
    """Train ``job`` (or return its recorded result), report to ``reporter``; return its record.

    ``reporter`` has ``trial_id``, ``intermediate(value)`` and ``final(result)``. An
    exception is recorded (result.json, error.txt) and raised again for the engine.
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
        "host": machine(),
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
        settings = context.settings.replace(**{k: job.params[k] for k in HYPERPARAMETERS if k in job.params})
        write_json(
            trial_dir / "params.json",
            {"config_id": job.config_id, "budget": job.budget, "params": job.params, "settings": settings.to_dict()},
        )
        x_train, y_train, x_val, y_val = context.arrays()
        attempt["data_seconds"] = time.perf_counter() - started
        from seglib.train import latest_checkpoint, train

        checkpoint_dir = paths.checkpoint_dir(job.config_id)
        attempt["initial_epoch"] = latest_checkpoint(checkpoint_dir, job.budget)
        write_json(history_file, history)
        result = train(
            x_train,
            y_train,
            x_val,
            y_val,
            settings=settings,
            epochs=job.budget,
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=on_epoch_end,
            verbose=2,
            compile_cache_dir=context.compile_cache_dir,
            pool=context.pool,
        )
        record.update(_finish(result, history, trial_dir, checkpoint_dir, x_val, y_val))
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
            error=_describe(error),
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


def _finish(result, history, trial_dir, checkpoint_dir, x_val, y_val) -> dict:
    """The pair's result: evaluation, model file, pruned checkpoints, the engine's final dict."""
    from seglib.metrics import evaluate
    from seglib.train import prune_checkpoints

    attempts = history["attempts"]
    record = {
        "epochs_trained": len(history["epochs"]),
        "resumed_from": next((a["initial_epoch"] for a in attempts if "initial_epoch" in a), result.initial_epoch),
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
    metrics = evaluate(result.model, x_val, y_val)
    checkpoint = Path(result.checkpoint) if result.checkpoint else None
    if checkpoint is not None and checkpoint.is_file():
        link_or_copy(checkpoint, trial_dir / "model.keras")
        prune_checkpoints(checkpoint_dir, result.epochs_trained)
    else:
        result.model.save(trial_dir / "model.keras")
    final = {"default": record["best_val_loss"], "diverged": 0, "epochs_trained": record["epochs_trained"]}
    for name in ("precision", "recall", "mean_iou", "loss", "accuracy"):
        value = finite_or_none(metrics.get(name))
        if value is not None:
            final["val_" + name if name == "loss" else name] = value
    record.update(status=SUCCEEDED, metrics=metrics, final=final, model=str(trial_dir / "model.keras"))
    return record


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (no second copy on disk), copying where links fail."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def classify(error: BaseException) -> tuple[str, str]:
    """(status, cause) of a trial that raised ``error``: whose fault, and is it worth a retry."""
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return INTERRUPTED, "interrupted"
    if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS):
        return FAILED, ENVIRONMENT_CAUSE
    from seglib.artifacts import ArtifactMissing
    from seglib.data import DataError

    if isinstance(error, (DataError, ArtifactMissing, ArtifactError)):
        return FAILED, ENVIRONMENT_CAUSE
    text = f"{type(error).__name__} {error}"
    if "RESOURCE_EXHAUSTED" in text or "ResourceExhausted" in text or "out of memory" in text.lower():
        return FAILED, ENVIRONMENT_CAUSE  # the framework's out-of-memory errors (GPU or host)
    return FAILED, TRIAL_CAUSE


def _describe(error: BaseException) -> str:
    """One line for people: the exception, with the errno's name where there is one."""
    name = errno.errorcode.get(getattr(error, "errno", None) or -1)
    return f"{type(error).__name__}: {error}" + (f" ({name})" if name and name not in str(error) else "")


# ---------------------------------------------------------------------------------------------
# A trial's outcome, applied to the search (the same rule for every engine)


def final_value(value) -> tuple[float | None, bool]:
    """(loss, diverged) from a trial's final metric: a dict with 'default' or a number."""
    if isinstance(value, dict):
        diverged = bool(value.get("diverged"))
        value = value.get("default")
    else:
        diverged = False
    value = finite_or_none(value)
    return (value, diverged) if value is not None else (None, True)


def settle(search: Search, parameter_id: int, record: dict | None, lost: str | None = None) -> str | None:
    """Apply one trial's outcome to ``search``; return a reason when the search must halt.

    SUCCEEDED/DIVERGED: reported. FAILED by its own configuration: failed (never retried;
    its rung goes on with fewer survivors). FAILED by the machine (disk full, out of memory,
    data missing): handed out again later, and the search halts until the cause is fixed and
    it is resumed. INTERRUPTED (stopped from outside): handed out again. No record at all
    (the process died without a word, ``lost`` says how): handed out again, up to
    :data:`MAX_LOST` times, then failed.
    """
    job = search.job(parameter_id)
    if job["status"] in ("done", "failed"):
        return None
    status = (record or {}).get("status")
    if status in FINISHED:
        metric, diverged = final_value(record.get("final"))
        search.report(
            parameter_id,
            metric,
            diverged,
            trial_id=(record.get("trial_ids") or [None])[-1],
            epochs_trained=record.get("epochs_trained"),
        )
        return None
    if status == FAILED and record.get("cause") == ENVIRONMENT_CAUSE:
        search.requeue(parameter_id, record["error"])
        search.halt(record["error"])
        return record["error"]
    if status == FAILED:
        search.fail(parameter_id, record.get("error"), epochs_trained=record.get("epochs_trained"))
        return None
    if status == INTERRUPTED:
        search.requeue(parameter_id, record.get("error"))
        return None
    job["lost"] = job.get("lost", 0) + 1
    if job["lost"] >= MAX_LOST:
        search.fail(parameter_id, f"the trial process died {job['lost']} times without a result ({lost})")
    else:
        search.requeue(parameter_id, lost or "the trial process died without a result")
    return None


# ---------------------------------------------------------------------------------------------
# The trial process (NNI's trial command, or on its own)


class NNIReporter:
    """Reports through NNI's trial API; on its own (no experiment) it reports to the log."""

    def __init__(self, process_start: float):
        self.process_start = process_start
        in_experiment = bool(os.environ.get("NNI_TRIAL_JOB_ID"))
        try:
            import nni
        except ImportError:
            if in_experiment:
                raise
            nni = None  # on its own (a benchmark on a machine without NNI) a trial needs no NNI
        self.nni = nni if in_experiment else None
        self.trial_id = nni.get_trial_id() if self.nni is not None else "STANDALONE"

    def parameters(self) -> dict:
        return dict(self.nni.get_next_parameter() or {}) if self.nni is not None else {}

    def intermediate(self, value: float) -> None:
        if self.nni is not None:
            self._send(self.nni.report_intermediate_result, value)

    def final(self, result: dict) -> None:
        if self.nni is not None:
            self._send(self.nni.report_final_result, result)
        else:
            log.info("final result: %s", result)

    def _send(self, report, value) -> None:
        try:
            report(value)
        except OSError as error:  # requests' ConnectionError is an OSError
            raise Interrupted(f"cannot report to the NNI manager ({error})") from error


def watch_manager(on_lost) -> threading.Thread | None:
    """Call ``on_lost()`` when the NNI manager that started this trial is gone.

    NNI's local training service starts a trial through a shell, so the manager is the
    shell's parent; if it is killed the trial would keep training as an orphan while a
    resumed search starts the same pair again.
    """
    if not os.environ.get("NNI_TRIAL_JOB_ID"):
        return None
    import psutil

    ancestors = [p for p in psutil.Process().parents() if p.pid > 1]
    manager = next((p for p in ancestors if "node" in p.name().lower()), ancestors[1] if len(ancestors) > 1 else None)
    if manager is None:
        return None

    def poll():
        while manager.is_running():
            time.sleep(MANAGER_POLL_SECONDS)
        on_lost()

    thread = threading.Thread(target=poll, name="seglib-manager-watch", daemon=True)
    thread.start()
    return thread


def _stop_on_signals() -> None:
    """SIGTERM and SIGHUP interrupt the trial as Ctrl-C does, so it records INTERRUPTED."""

    def interrupt(signum, frame):
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def standalone_context(out_dir, profile_name: str, data) -> tuple[TrialContext, dict]:
    """A context for a trial run on its own: the profile's settings and split, in ``out_dir``."""
    from seglib.data import make_split, prepare, save_split
    from seglib.settings import profile

    settings = profile(profile_name, **({} if data is None else {"data": str(data)}))
    paths = ExperimentPaths.of(out_dir)
    save_split(paths.split_file, make_split(prepare(settings.data, settings.patch_size), settings))
    write_trial_settings(paths, settings)
    _, settings, runtime = read_trial_settings(paths.settings_file)
    return TrialContext(paths, settings, compile_cache_dir=runtime["compile_cache_dir"]), runtime


def main(argv: list[str] | None = None) -> int:
    process_start = _process_start_time()
    parser = argparse.ArgumentParser(prog="python -m seglib.hpo.trial", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="the experiment's trial_code/settings.json (default: run on its own)")
    parser.add_argument("--out", default="runs/trial", help="output folder when run on its own")
    parser.add_argument("--profile", default="quick", help="profile when run on its own")
    parser.add_argument("--data", default=None, help="dataset folder when run on its own")
    parser.add_argument(
        "--params",
        default=None,
        help='JSON merged over the defaults when run on its own, e.g. \'{"TRIAL_BUDGET": 2, "CONFIG_ID": "mine"}\'',
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.settings:
        paths, settings, runtime = read_trial_settings(Path(args.settings).resolve())
        context = TrialContext(paths, settings, runtime.get("cache_dir"), runtime.get("compile_cache_dir"))
    else:
        context, runtime = standalone_context(args.out, args.profile, args.data)
    configure_environment(runtime)
    _stop_on_signals()
    reporter = NNIReporter(process_start)
    parameters = {**context.settings.hyperparameters(), **reporter.parameters()}
    if args.params:
        import json

        parameters.update(json.loads(args.params))
    job = Job.from_parameters(parameters, context.settings.max_budget, reporter.trial_id)
    watch_manager(_lost_manager)
    try:
        record = run_job(context, job, reporter)
    except SettingError as error:
        print(f"seglib trial: {error}", file=sys.stderr)
        return 1
    print(_summary_line(record))
    return 0


def _summary_line(record: dict) -> str:
    import json

    return json.dumps({k: record.get(k) for k in ("key", "status", "epochs_trained", "resumed_from", "final")})


def _lost_manager() -> None:
    """The manager died: stop the trial as Ctrl-C would, so it records itself INTERRUPTED (the
    resumed search reruns the pair from its last epoch's checkpoint); exit anyway after a grace
    period if the main thread is stuck in a long native call."""
    import _thread

    sys.stderr.write("seglib trial: the NNI manager is gone; stopping this trial\n")
    sys.stderr.flush()
    _thread.interrupt_main()
    timer = threading.Timer(LOST_GRACE_SECONDS, os._exit, args=(3,))
    timer.daemon = True
    timer.start()


def _process_start_time() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or restricted: time from here instead
        return time.time()


if __name__ == "__main__":
    raise SystemExit(main())
