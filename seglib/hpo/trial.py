"""One HPO trial: ``python -m seglib.hpo.trial [--settings trial_code/settings.json]``.

Defaults (the experiment's settings) -> updated with ``nni.get_next_parameter()`` (``{}``
outside an experiment, so the trial also runs on its own) -> train ``TRIAL_BUDGET`` epochs
(one budget unit = one epoch) -> report validation loss every epoch and, at the end,
``{"default": best validation loss, "precision", "recall", "mean_iou", ...}``.

Each (configuration, budget) pair owns ``trials/<config>-b<budget>/`` (params, per-epoch
history, result, model, error) and each configuration owns ``checkpoints/<config>/``, so:

* warm start: a configuration promoted from budget 6 to 20 resumes from its epoch-6
  checkpoint and trains 14 epochs (``seglib.train`` resumes from the latest checkpoint at or
  below the budget);
* idempotence: a pair whose ``result.json`` says SUCCEEDED or DIVERGED reports that result
  again without training, which is what keeps a resumed experiment from training any
  (configuration, budget) pair twice;
* a diverged run reports the finite ``PENALTY_LOSS`` (NaN would break NNI's web UI and
  ranking) and the bracket goes on; a crash leaves ``error.txt`` and a FAILED result.

Keras is imported only after the backend, thread and GPU-memory settings are in the
environment, so several trials can share one GPU or two CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import traceback
from pathlib import Path

from seglib.hpo.layout import SETTINGS_FILE, SPLIT_FILE, Layout, trial_key

log = logging.getLogger("seglib.hpo.trial")

BUDGET_KEY = "TRIAL_BUDGET"  # NNI's HyperBand name for the budget; 1 unit = 1 epoch
CONFIG_KEY = "CONFIG_ID"  # seglib's HyperBand: which configuration (checkpoint folder)
COMPILE_CACHE_ENV = "SEGLIB_COMPILE_CACHE"  # a JAX compilation cache shared by experiments
PENALTY_LOSS = 100.0  # reported for a diverged trial: above any real Dice + focal loss
MANAGER_POLL_SECONDS = 2.0
SUCCEEDED, DIVERGED, FAILED, INTERRUPTED = "SUCCEEDED", "DIVERGED", "FAILED", "INTERRUPTED"
REUSABLE = (SUCCEEDED, DIVERGED)
HYPERPARAMETERS = ("batch_size", "learning_rate", "activation_type")


class ManagerLost(RuntimeError):
    """The NNI manager went away: this trial stops so a resumed experiment can rerun it."""


# ---------------------------------------------------------------------------------------------
# Settings: written by the experiment, read by every trial.

def write_settings(out_dir, profile, *, split: dict, data=None, backend=None, concurrency=1,
                   budget=None, seed=0, mixed_precision=False, eval_batch_size=16,
                   cache_dir=None, gpu_memory_fraction=None, threads=None) -> Path:
    """Write ``trial_code/settings.json`` and ``split.npz`` for the trials of ``out_dir``.

    ``split`` maps "train"/"val" to patch indices; ``budget`` is the epochs a trial without a
    ``TRIAL_BUDGET`` trains (random search: R). Threads default to the CPU cores shared by
    ``concurrency`` trials; ``gpu_memory_fraction`` to 0.9 / concurrency. The JAX compilation
    cache is ``$SEGLIB_COMPILE_CACHE`` if set (shared by experiments), else ``OUT/compile_cache``.
    """
    import numpy as np

    layout = Layout.of(out_dir)
    layout.trial_code.mkdir(parents=True, exist_ok=True)
    np.savez(layout.trial_code / SPLIT_FILE, train=np.asarray(split["train"]), val=np.asarray(split["val"]))
    cores = os.cpu_count() or 1
    settings = {
        "out_dir": str(layout.root),
        "data": None if data is None else str(Path(data).expanduser().resolve()),
        "patch_size": profile.patch_size,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "base_filters": profile.base_filters,
        "depth": profile.depth,
        "defaults": {
            "batch_size": profile.batch_size,
            "learning_rate": profile.learning_rate,
            "activation_type": profile.activation,
            BUDGET_KEY: int(budget or profile.max_budget),
        },
        "seed": int(seed),
        "mixed_precision": mixed_precision,
        "eval_batch_size": int(eval_batch_size),
        "backend": backend,
        "threads": int(threads or max(1, cores // max(1, concurrency))),
        "gpu_memory_fraction": float(gpu_memory_fraction or round(0.9 / max(1, concurrency), 3)),
        "compile_cache_dir": os.environ.get(COMPILE_CACHE_ENV) or str(layout.compile_cache),
        "penalty_loss": PENALTY_LOSS,
    }
    layout.settings_file.write_text(json.dumps(settings, indent=1))
    return layout.settings_file


def read_settings(path) -> dict:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise FileNotFoundError(
            f"trial settings {path} unreadable ({error}); expected the settings.json that "
            "seglib.hpo writes into OUT/trial_code when it starts an experiment"
        ) from error


def configure_environment(settings: dict) -> dict:
    """Backend, CPU threads and GPU memory sharing, set before Keras is imported; returns them."""
    env = {}
    if settings.get("backend"):
        env["KERAS_BACKEND"] = settings["backend"]
    threads = settings.get("threads")
    if threads:
        for name in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            env["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={str(threads > 1).lower()} intra_op_parallelism_threads={threads}".strip()
    # Several trials on one GPU: JAX allocates on demand up to its share; TF grows on demand.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    if settings.get("gpu_memory_fraction"):  # with preallocation off: this trial's cap
        # One name only: jaxlib 0.11 refuses both together and then falls back to the CPU
        # (seen on an H200). The old name is honoured by every jaxlib, deprecated in new ones.
        if not os.environ.get("XLA_CLIENT_MEM_FRACTION"):
            env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(settings["gpu_memory_fraction"])
    env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    env["TF_CPP_MIN_LOG_LEVEL"] = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")
    if settings.get("compile_cache_dir"):
        env["SEGLIB_COMPILE_CACHE"] = settings["compile_cache_dir"]
    os.environ.update(env)
    return env


# ---------------------------------------------------------------------------------------------
# Records on disk (atomic writes: a kill never leaves half a JSON file).

def write_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value, indent=1, allow_nan=False, default=_plain))
    os.replace(tmp, path)


def _plain(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def sanitize(value):
    """``value`` with every non-finite float replaced by None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [sanitize(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default


def finite_or_none(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_result(trial_dir: Path) -> dict | None:
    """A pair's recorded result if it can be reused (SUCCEEDED or DIVERGED), else None."""
    result = read_json(Path(trial_dir) / "result.json")
    return result if result and result.get("status") in REUSABLE else None


# ---------------------------------------------------------------------------------------------
# Talking to NNI (or to nobody, when standalone).

class Reporter:
    """NNI reporting that turns a vanished manager into ``ManagerLost`` instead of a hang."""

    def __init__(self):
        self.in_experiment = bool(os.environ.get("NNI_TRIAL_COMMAND_CHANNEL") or os.environ.get("NNI_PLATFORM"))
        try:
            import nni
        except ImportError:
            if self.in_experiment:
                raise
            nni = None  # on its own, a trial (e.g. a benchmark on a machine without NNI) needs no NNI
        self.nni = nni
        self.trial_id = nni.get_trial_id() if nni is not None else "STANDALONE"

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
            raise ManagerLost(f"cannot report to the NNI manager ({error})") from error


def watch_manager(on_lost) -> threading.Thread | None:
    """Call ``on_lost()`` when a process that started this trial (parent, grandparent) dies.

    Inside an experiment the trial is a child of NNI's manager (through a shell); if the
    manager is killed the trial would otherwise keep training as an orphan while a resumed
    experiment starts the same pair again.
    """
    if not os.environ.get("NNI_TRIAL_JOB_ID"):
        return None
    import psutil

    me = psutil.Process()
    ancestors = [p for p in me.parents()[:2] if p.pid > 1]
    if not ancestors:
        return None

    def poll():
        while True:
            time.sleep(MANAGER_POLL_SECONDS)
            if any(not p.is_running() for p in ancestors):
                on_lost()
                return

    thread = threading.Thread(target=poll, name="seglib-manager-watch", daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------------------------------
# The trial.

def trial_identity(params: dict, settings: dict, trial_id: str) -> tuple[str, int]:
    """(configuration id, budget): seglib's HyperBand names them; otherwise the NNI trial does."""
    budget = int(params.get(BUDGET_KEY, settings["defaults"][BUDGET_KEY]))
    if budget < 1:
        raise ValueError(f"{BUDGET_KEY}={budget}: a trial needs a budget of at least 1 epoch")
    config_id = params.get(CONFIG_KEY) or ("standalone" if trial_id == "STANDALONE" else f"t-{trial_id}")
    return str(config_id), budget


def load_arrays(settings: dict, settings_dir: Path):
    """Train and validation arrays from seglib.data's cache (prepared once by the experiment)."""
    import numpy as np

    from seglib.data import prepare

    patches = prepare(settings["data"], settings["patch_size"], cache_dir=settings.get("cache_dir"))
    index = np.load(settings_dir / SPLIT_FILE)
    train, val = np.asarray(index["train"]), np.asarray(index["val"])
    return (patches.scaled(train), np.asarray(patches.labels[train]),
            patches.scaled(val), np.asarray(patches.labels[val]))


def prune_checkpoints(checkpoint_dir: Path, keep_epoch: int) -> None:
    """Delete every checkpoint but ``keep_epoch``'s: the next rung resumes from that one only."""
    from seglib.train import CHECKPOINT_PATTERN

    for path in checkpoint_dir.glob("epoch_*"):
        match = CHECKPOINT_PATTERN.match(path.name.replace(".json", ".keras"))
        if match and int(match.group(1)) != keep_epoch:
            path.unlink(missing_ok=True)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (no second copy on disk), copying where links fail."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def run_trial(settings: dict, settings_dir: Path, reporter: Reporter, process_start: float) -> dict:
    """Train one (configuration, budget) pair, or return its recorded result; report to NNI."""
    params = dict(settings["defaults"])
    params.update(reporter.parameters())
    config_id, budget = trial_identity(params, settings, reporter.trial_id)
    layout = Layout(Path(settings["out_dir"]))
    trial_dir = layout.trial_dir(config_id, budget)
    trial_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_dir = layout.checkpoint_dir(config_id)

    recorded = read_result(trial_dir)
    if recorded is not None:
        log.info("%s was already trained (%s): reporting its recorded result", trial_dir.name, recorded["status"])
        history = read_json(trial_dir / "history.json", {})
        history.setdefault("reused_by", []).append(reporter.trial_id)
        write_json(trial_dir / "history.json", history)
        reporter.final(recorded["final"])
        return recorded

    hyper = {k: params.get(k) for k in HYPERPARAMETERS}
    write_json(trial_dir / "params.json", {
        "config_id": config_id, "budget": budget, "params": hyper, "nni_parameters": params,
        "base_filters": settings["base_filters"], "depth": settings["depth"], "seed": settings["seed"],
    })
    history = read_json(trial_dir / "history.json", {"epochs": [], "attempts": []})
    attempt = {"trial_id": reporter.trial_id, "pid": os.getpid(), "started": time.time(), "status": "RUNNING"}
    history["attempts"].append(attempt)
    write_json(trial_dir / "history.json", history)
    error_file = trial_dir / "error.txt"
    penalty = float(settings.get("penalty_loss", PENALTY_LOSS))
    started = time.perf_counter()

    def on_epoch_end(epoch: int, logs: dict) -> None:
        entry = {"epoch": epoch + 1, "trial_id": reporter.trial_id, "ended": time.time(),
                 **{k: finite_or_none(v) for k, v in logs.items()}}
        if "first_epoch_seconds" not in attempt:
            attempt["first_epoch_seconds"] = time.time() - process_start
        history["epochs"].append(entry)
        write_json(trial_dir / "history.json", history)
        value = entry.get("val_loss")
        reporter.intermediate(value if value is not None else penalty)

    try:
        x_train, y_train, x_val, y_val = load_arrays(settings, settings_dir)
        attempt["data_seconds"] = time.perf_counter() - started
        from seglib.train import latest_checkpoint, train

        attempt["initial_epoch"] = latest_checkpoint(checkpoint_dir, budget)
        write_json(trial_dir / "history.json", history)

        result = train(
            x_train, y_train, x_val, y_val,
            epochs=budget,
            batch_size=int(hyper["batch_size"]),
            learning_rate=float(hyper["learning_rate"]),
            activation=hyper["activation_type"],
            base_filters=settings["base_filters"],
            depth=settings["depth"],
            checkpoint_dir=checkpoint_dir,
            on_epoch_end=on_epoch_end,
            seed=settings["seed"],
            mixed_precision=settings.get("mixed_precision", False),
            verbose=2,
            compile_cache_dir=settings.get("compile_cache_dir"),
        )
        record = finish(result, settings, trial_dir, checkpoint_dir, config_id, budget, hyper, history,
                        x_val, y_val, penalty)
    except BaseException as error:
        interrupted = isinstance(error, (KeyboardInterrupt, ManagerLost))
        attempt["status"] = INTERRUPTED if interrupted else FAILED
        attempt["seconds"] = time.perf_counter() - started
        attempt["ended"] = time.time()
        write_json(trial_dir / "history.json", history)
        text = traceback.format_exc()
        error_file.write_text(text)
        write_json(trial_dir / "result.json", {
            "key": trial_key(config_id, budget), "config_id": config_id, "budget": budget, "params": hyper,
            "status": attempt["status"], "error": f"{type(error).__name__}: {error}", "traceback": text,
            "epochs_trained": len(history["epochs"]), "trial_ids": [a["trial_id"] for a in history["attempts"]],
            "seconds": sum(a.get("seconds", 0.0) for a in history["attempts"]),
        })
        raise
    attempt["status"] = record["status"]
    attempt["seconds"] = time.perf_counter() - started
    attempt["ended"] = time.time()
    record["seconds"] = sum(a.get("seconds", 0.0) for a in history["attempts"])
    record["first_epoch_seconds"] = next((a["first_epoch_seconds"] for a in history["attempts"] if "first_epoch_seconds" in a), None)
    write_json(trial_dir / "history.json", history)
    if record.get("metrics"):
        write_json(trial_dir / "metrics.json", record["metrics"])
    write_json(trial_dir / "result.json", record)
    error_file.unlink(missing_ok=True)
    reporter.final(record["final"])
    return record


def finish(result, settings, trial_dir, checkpoint_dir, config_id, budget, hyper, history, x_val, y_val, penalty) -> dict:
    """The pair's result record: evaluation, model file, pruned checkpoints, NNI's final dict."""
    from seglib.metrics import evaluate

    attempts = history["attempts"]
    resumed_from = next((a["initial_epoch"] for a in attempts if "initial_epoch" in a), result.initial_epoch)
    record = {
        "key": trial_key(config_id, budget), "config_id": config_id, "budget": budget, "params": hyper,
        "epochs_trained": len(history["epochs"]), "resumed_from": resumed_from,
        "trial_ids": [a["trial_id"] for a in attempts], "backend": result.metadata.get("backend"),
        "engine": result.metadata.get("engine"),
        "best_val_loss": finite_or_none(result.best_val_loss),
        "val_loss_curve": [finite_or_none(v) for v in result.history.get("val_loss", [])],
        "message": result.message, "error": None,
    }
    if result.diverged or record["best_val_loss"] is None:
        record.update(status=DIVERGED, metrics=None, model=None)
        record["final"] = {"default": penalty, "diverged": 1, "epochs_trained": record["epochs_trained"]}
        return record
    metrics = evaluate(result.model, x_val, y_val, batch_size=settings.get("eval_batch_size", 16))
    metrics = sanitize(metrics)
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


def standalone_settings(out_dir, profile_name: str = "quick", data=None) -> tuple[dict, Path]:
    """Settings for a trial run on its own: the profile's defaults, its split, ``out_dir``."""
    from seglib.data import prepare, split
    from seglib.profiles import get_profile

    profile = get_profile(profile_name)
    patches = prepare(data if data is not None else profile.data, profile.patch_size)
    index = split(patches, profile.split)
    path = write_settings(out_dir, profile, split=index, data=data if data is not None else profile.data)
    return read_settings(path), path.parent


def main(argv: list[str] | None = None) -> int:
    process_start = _process_start_time()
    parser = argparse.ArgumentParser(prog="python -m seglib.hpo.trial", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help=f"the experiment's {SETTINGS_FILE} (default: run on its own)")
    parser.add_argument("--out", default="runs/trial", help="output folder when run on its own")
    parser.add_argument("--profile", default="quick", help="profile when run on its own")
    parser.add_argument("--data", default=None, help="dataset folder when run on its own")
    parser.add_argument("--params", default=None,
                        help='JSON merged over the defaults when run on its own, e.g. \'{"TRIAL_BUDGET": 2, "CONFIG_ID": "mine"}\'')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.settings:
        settings_path = Path(args.settings).resolve()
        settings, settings_dir = read_settings(settings_path), settings_path.parent
    else:
        settings, settings_dir = standalone_settings(args.out, args.profile, args.data)
    if args.params:
        settings["defaults"].update(json.loads(args.params))
    configure_environment(settings)
    reporter = Reporter()
    watch_manager(lambda: _lost_manager())
    record = run_trial(settings, settings_dir, reporter, process_start)
    print(json.dumps({k: record.get(k) for k in ("key", "status", "epochs_trained", "resumed_from", "final")}))
    return 0


def _lost_manager() -> None:
    """The manager died: exit now (the resumed experiment reruns this pair from its checkpoint)."""
    sys.stderr.write("seglib trial: the NNI manager is gone; stopping this trial\n")
    sys.stderr.flush()
    os._exit(3)


def _process_start_time() -> float:
    try:
        import psutil

        return psutil.Process().create_time()
    except Exception:  # psutil missing or restricted: time from here instead
        return time.time()


if __name__ == "__main__":
    raise SystemExit(main())
