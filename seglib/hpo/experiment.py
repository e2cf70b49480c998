"""An HPO experiment's lifecycle on NNI: start, watch, stop, resume, view, export.

Everything lives in one output folder (``seglib.hpo.layout``), NNI's own records included
(``OUT/nni``, not ``~/nni-experiments``), so a folder on Google Drive can be resumed from a
new Colab runtime. NNI is the engine (manager, trial processes, web UI); seglib drives it
through NNI's Python ``Experiment`` API and watches it: NNI leaves an experiment RUNNING
forever when its tuner process dies, so :meth:`HPOExperiment.check` fails loudly instead.

The web UI/REST API has no authentication and can change a running experiment. For the
local platform seglib binds NNI's manager to 127.0.0.1 only (a Node preload that adds the
host to ``listen()``); reach it through Colab's proxy (:func:`show_web_ui`) or an SSH tunnel
(``ssh -L 8080:localhost:8080 host``). Never expose it publicly.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from seglib.hpo.hyperband import HyperBand, brackets, pass_epochs, search_space
from seglib.hpo.layout import Layout
from seglib.hpo.trial import BUDGET_KEY, CONFIG_KEY, HYPERPARAMETERS, read_json, sanitize, write_json, write_settings

log = logging.getLogger("seglib.hpo")

TUNERS = ("hyperband", "random")
DEFAULT_PORT = 8080
POLL_SECONDS = 5.0
STALE_HEARTBEAT_SECONDS = 120.0  # the tuner writes one every 2 s while NNI pings it
# Preloaded into NNI's manager (NODE_OPTIONS=--require) for local experiments: NNI 3.0 calls
# listen(port) without a host, i.e. on every interface; adding the host binds the loopback only.
# Written into OUT/nni at launch rather than shipped as package data.
LOOPBACK_JS = """'use strict';
const net = require('net');
const host = process.env.SEGLIB_NNI_HOST || '127.0.0.1';
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, host);
  } else if (args[0] && typeof args[0] === 'object' && args[0].port !== undefined && !args[0].host && !args[0].path) {
    args[0] = Object.assign({}, args[0], { host });
  }
  return listen.apply(this, args);
};
"""
TRIAL_FIELDS = (
    "trial_id", "config_id", "parameter_id", "bracket", "rung", "budget", "resumed_from",
    "epochs_trained", "status", "value", "precision", "recall", "mean_iou", "seconds",
    "first_epoch_seconds", "batch_size", "learning_rate", "activation_type", "curve", "error",
    "trial_ids", "sequence", "start_time", "end_time",
)


class ExperimentFailed(RuntimeError):
    """The experiment cannot finish: its tuner or manager died, or NNI reported an error."""


# ---------------------------------------------------------------------------------------------
# Planning: what an experiment will do, decided once and written to OUT/experiment.json.

def plan(profile, tuner: str = "hyperband", *, max_budget=None, eta=None, max_trials=None,
         concurrency=None, max_epochs=None, seed: int = 0) -> dict:
    """R, η, trials, budget per trial and concurrency for ``tuner`` under ``profile``.

    HyperBand runs one full pass (all brackets), capped at ``max_trials``. Random search gets
    the same number of epochs as that pass trains with warm start (or ``max_epochs``, e.g. what
    HyperBand really spent) as ``epochs // R`` trials of R epochs each: equal budget, no warm
    start, which is the comparison the report draws.
    """
    if tuner not in TUNERS:
        raise ValueError(f"unknown tuner {tuner!r}; expected one of {TUNERS}")
    R = int(max_budget or profile.max_budget)
    eta = int(eta or profile.eta)
    totals = pass_epochs(R, eta)
    cap = max_trials if max_trials is not None else profile.max_trials
    if tuner == "hyperband":
        trials = totals["trials"] if cap is None else min(int(cap), totals["trials"])
        epochs = totals["warm_start"]
    else:
        epochs = int(max_epochs or totals["warm_start"])
        trials = max(1, epochs // R) if cap is None else min(int(cap), max(1, epochs // R))
    return {
        "tuner": tuner, "max_budget": R, "eta": eta, "max_trials": trials, "planned_epochs": epochs,
        "trial_budget": R if tuner == "random" else None, "concurrency": int(concurrency or profile.concurrency),
        "seed": int(seed), "pass": totals, "brackets": [[(r.n_configs, r.budget) for r in b.rungs] for b in brackets(R, eta)],
    }


def prepare_split(profile, data=None, split_file=None) -> dict:
    """Prepare the patches once (seglib.data's cache, which trials then hit) and pick train/val."""
    from seglib.data import prepare, split

    patches = prepare(data if data is not None else profile.data, profile.patch_size)
    if split_file is not None:
        index = dict(np.load(split_file))
        missing = {"train", "val"} - set(index)
        if missing:
            raise ValueError(f"{split_file}: expected arrays 'train' and 'val', missing {sorted(missing)}")
        return {"train": index["train"], "val": index["val"]}
    chosen = np.arange(len(patches))
    if profile.max_patches is not None and profile.max_patches < len(patches):
        chosen = np.sort(np.random.default_rng(0).choice(len(patches), profile.max_patches, replace=False))
    local = split(patches.subset(chosen), profile.split)
    return {name: chosen[np.sort(local[name])] for name in ("train", "val")}


def free_port(start: int = DEFAULT_PORT, tries: int = 200) -> int:
    """The first port from ``start`` that is free together with the next one (NNI may use both)."""
    for port in range(start, start + tries):
        if all(_port_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError(f"no free port pair in {start}..{start + tries}; pass --port")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# ---------------------------------------------------------------------------------------------
# NNI configuration.

def build_config(layout: Layout, the_plan: dict, space: dict, training_service=None, nni_manager_ip=None):
    """The NNI ``ExperimentConfig`` for a plan: seglib's HyperBand or NNI's Random tuner."""
    from nni.experiment import AlgorithmConfig, CustomAlgorithmConfig, ExperimentConfig

    from seglib.hpo.tuner import CLASS_NAME

    platform = "local" if training_service is None else training_service.platform
    config = ExperimentConfig(platform)
    if training_service is not None:
        config.training_service = training_service
    python = "python3" if platform != "local" else shlex.quote(sys.executable)
    config.experiment_name = f"seglib-{the_plan['tuner']}"
    config.trial_command = f"{python} -m seglib.hpo.trial --settings settings.json"
    config.trial_code_directory = str(layout.trial_code)
    config.experiment_working_directory = str(layout.nni_dir)
    config.search_space = space
    config.trial_concurrency = the_plan["concurrency"]
    config.max_trial_number = the_plan["max_trials"]
    if nni_manager_ip:
        config.nni_manager_ip = nni_manager_ip
    if the_plan["tuner"] == "hyperband":
        config.tuner = CustomAlgorithmConfig(
            class_name=CLASS_NAME,
            code_directory=str(Path(__file__).resolve().parents[2]),
            class_args={"out_dir": str(layout.root), "R": the_plan["max_budget"], "eta": the_plan["eta"],
                        "seed": the_plan["seed"], "optimize_mode": "minimize"},
        )
    else:
        config.tuner = AlgorithmConfig(name="Random", class_args={"seed": the_plan["seed"]})
    return config


# ---------------------------------------------------------------------------------------------
# The experiment.

@dataclass
class HPOExperiment:
    """A started, resumed or viewed experiment: its folder, plan and NNI handle."""

    layout: Layout
    record: dict
    nni: object = None
    port: int | None = None
    started: float = field(default_factory=time.time)
    _dispatcher_pid: int | None = None

    @property
    def id(self) -> str:
        return self.record["experiment_id"]

    @property
    def url(self) -> str | None:
        return f"http://localhost:{self.port}" if self.port else None

    # -- watching -----------------------------------------------------------------------------
    def status(self) -> str:
        """NNI's status (RUNNING, DONE, ERROR, ...), or STOPPED when no manager is running."""
        if self.nni is None or self.port is None:
            return "STOPPED"
        from nni.experiment import rest

        return rest.get(self.port, "/check-status")["status"]

    def check(self) -> None:
        """Raise ExperimentFailed if the manager or the tuner died, or NNI reported an error."""
        error_file = self.layout.dispatcher_error_file
        if error_file.is_file():
            raise ExperimentFailed(f"the tuner crashed ({error_file}):\n{error_file.read_text()}")
        proc = getattr(self.nni, "_proc", None)
        if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
            raise ExperimentFailed(
                f"the NNI manager exited with code {proc.returncode}; its log: {self.nni_log('nnimanager.log')}")
        from nni.experiment import rest

        check = rest.get(self.port, "/check-status")
        if check.get("status") == "ERROR":
            raise ExperimentFailed(f"NNI reports ERROR: {check.get('errors')}; log: {self.nni_log('nnimanager.log')}")
        if self.record["plan"]["tuner"] == "hyperband":
            self._check_heartbeat()
        self._check_dispatcher_process()

    def _check_heartbeat(self) -> None:
        """seglib's tuner writes a heartbeat while NNI pings it; a stale or dead one is fatal."""
        import psutil

        beat = read_json(self.layout.heartbeat_file)
        now = time.time()
        if beat is None or beat["time"] < self.started - 1:  # none yet, or the previous session's
            if now - self.started > STALE_HEARTBEAT_SECONDS:
                raise ExperimentFailed(f"the tuner never started ({self.layout.heartbeat_file} not written in "
                                       f"{STALE_HEARTBEAT_SECONDS:.0f} s); see {self.nni_log('dispatcher.log')}")
            return
        if not psutil.pid_exists(beat["pid"]) or now - beat["time"] > STALE_HEARTBEAT_SECONDS:
            raise ExperimentFailed(
                f"the tuner process {beat['pid']} is gone (last heartbeat {now - beat['time']:.0f} s ago); "
                f"NNI would wait forever. See {self.nni_log('dispatcher.log')} and {self.nni_log('nnimanager.log')}")

    def _check_dispatcher_process(self) -> None:
        """Any tuner (NNI's Random too): its process, a child of the manager, must stay alive."""
        import psutil

        proc = getattr(self.nni, "_proc", None)
        if proc is None:
            return
        if self._dispatcher_pid is None:
            try:
                children = psutil.Process(proc.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            found = [c.pid for c in children if "--exp_params" in " ".join(_cmdline(c))]
            self._dispatcher_pid = found[0] if found else None
        elif not psutil.pid_exists(self._dispatcher_pid):
            raise ExperimentFailed(
                f"the tuner process {self._dispatcher_pid} exited while the experiment was running; "
                f"NNI would wait forever. See {self.nni_log('dispatcher.log')}")

    def nni_log(self, name: str) -> Path:
        return self.layout.nni_dir / self.id / "log" / name

    def finished(self) -> bool:
        """True when the search has nothing left to run (HyperBand: every bracket done)."""
        status = self.status()
        if status in ("DONE", "STOPPED"):
            return True
        if self.record["plan"]["tuner"] != "hyperband":
            return False
        beat = read_json(self.layout.heartbeat_file) or {}
        if not beat.get("finished"):
            return False
        from nni.experiment import rest

        stats = {s["trialJobStatus"]: s["trialJobNumber"] for s in rest.get(self.port, "/job-statistics")}
        return not any(stats.get(s) for s in ("RUNNING", "WAITING", "UNKNOWN"))

    def progress(self) -> dict:
        """Trials done / running / failed, epochs trained and the best so far."""
        return progress(self.layout.root, experiment=self)

    def wait(self, every: float = POLL_SECONDS, timeout: float | None = None, show=None) -> dict:
        """Block until the search finishes (checking the tuner is alive); return the progress.

        ``show(progress)`` is called whenever the progress changes (:func:`watch` prints it).
        """
        deadline = None if timeout is None else time.time() + timeout
        last = None
        while True:
            self.check()
            done = self.finished()
            now = self.progress()
            summary = {k: now[k] for k in ("succeeded", "running", "failed", "diverged", "best_value")}
            if show is not None and summary != last:
                show(now)
            last = summary
            if done:
                return now
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(f"experiment {self.id} in {self.layout.root} not finished after {timeout} s")
            time.sleep(every)

    def stop(self) -> None:
        """Stop NNI's manager, tuner and running trials (the folder stays resumable)."""
        if self.nni is not None:
            proc = getattr(self.nni, "_proc", None)
            if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
                atexit.unregister(self.nni.stop)  # the manager is already gone (crashed/killed)
                self.nni._proc = None
            self.nni.stop()
        self.nni, self.port = None, None

    def export(self) -> dict:
        return export(self.layout.root)


def start(out_dir, *, profile="quick", data=None, split_file=None, tuner: str = "hyperband",
          max_budget=None, eta=None, max_trials=None, concurrency=None, max_epochs=None,
          space: dict | None = None, port: int | None = None, seed: int = 0, backend: str | None = None,
          training_service=None, nni_manager_ip: str | None = None, mixed_precision=None) -> HPOExperiment:
    """Start a new experiment in ``out_dir`` (non-blocking); see :func:`run_experiment`.

    ``mixed_precision`` None takes the profile's precision.
    """
    from seglib.profiles import get_profile

    profile = get_profile(profile) if isinstance(profile, str) else profile
    mixed_precision = profile.precision if mixed_precision is None else mixed_precision
    layout = Layout.of(out_dir)
    if layout.experiment_file.is_file():
        raise FileExistsError(
            f"{layout.experiment_file} exists: {layout.root} already holds an experiment; "
            "resume it (seglib hpo --resume / hpo.resume) or choose a new output folder")
    layout.root.mkdir(parents=True, exist_ok=True)
    the_plan = plan(profile, tuner, max_budget=max_budget, eta=eta, max_trials=max_trials,
                    concurrency=concurrency, max_epochs=max_epochs, seed=seed)
    space = search_space() if space is None else space
    index = prepare_split(profile, data, split_file)
    write_settings(layout.root, profile, split=index, data=data if data is not None else profile.data,
                   backend=backend, concurrency=the_plan["concurrency"], budget=the_plan["max_budget"],
                   seed=seed, mixed_precision=mixed_precision)
    config = build_config(layout, the_plan, space, training_service, nni_manager_ip)
    from nni.experiment import Experiment

    nni_experiment = Experiment(config)
    port = port or free_port()
    record = {
        "experiment_id": nni_experiment.id, "port": port, "plan": the_plan, "profile": profile.to_dict(),
        "data": None if data is None else str(data), "search_space": space, "created": time.time(),
        "platform": config.training_service.platform, "sessions": [],
    }
    experiment = HPOExperiment(layout, record)
    _launch(experiment, nni_experiment, port, action="create")
    return experiment


def resume(out_dir, port: int | None = None) -> HPOExperiment:
    """Resume the stopped or interrupted experiment in ``out_dir`` (same absolute path)."""
    return _reopen(out_dir, port, action="resume")


def view(out_dir, port: int | None = None) -> HPOExperiment:
    """Open a finished experiment's web UI read-only (stop it with ``.stop()``)."""
    return _reopen(out_dir, port, action="view")


def connect(out_dir) -> HPOExperiment:
    """The experiment of ``out_dir`` whose NNI manager is still running (e.g. after a kernel restart)."""
    from nni.experiment import Experiment

    layout = Layout.of(out_dir)
    record = _record(layout, "connect to")
    if not _manager_running(record):
        raise RuntimeError(f"no NNI manager is running experiment {record['experiment_id']} "
                           f"(port {record.get('port')}); resume it with hpo.resume({str(layout.root)!r})")
    experiment = HPOExperiment(layout, record, nni=Experiment.connect(record["port"]), port=record["port"])
    return experiment


def stop(out_dir) -> None:
    """Stop the running experiment of ``out_dir`` from any process (no-op when none runs)."""
    layout = Layout.of(out_dir)
    if _manager_running(_record(layout, "stop")):
        connect(out_dir).stop()


def _record(layout: Layout, action: str) -> dict:
    record = read_json(layout.experiment_file)
    if record is None:
        raise FileNotFoundError(f"{layout.experiment_file} not found: {layout.root} holds no seglib experiment to {action}")
    return record


def _manager_running(record: dict) -> bool:
    """True when a manager answers on the recorded port for this very experiment."""
    import requests

    port = record.get("port")
    if not port:
        return False
    try:
        profile = requests.get(f"http://localhost:{port}/api/v1/nni/experiment", timeout=5).json()
    except (requests.RequestException, ValueError):
        return False
    return profile.get("id") == record["experiment_id"]


def _reopen(out_dir, port, action: str) -> HPOExperiment:
    from nni.experiment import Experiment
    from nni.experiment.launcher import get_stopped_experiment_config

    layout = Layout.of(out_dir)
    record = _record(layout, action)
    if _manager_running(record):
        raise RuntimeError(
            f"experiment {record['experiment_id']} in {layout.root} is still running (port {record['port']}): "
            f"watch it with hpo.connect(out_dir), or stop it with hpo.stop(out_dir) before you {action} it")
    db = layout.nni_dir / record["experiment_id"] / "db"
    if not db.is_dir():
        raise FileNotFoundError(f"NNI's records for experiment {record['experiment_id']} are missing: expected {db}")
    config = get_stopped_experiment_config(record["experiment_id"], str(layout.nni_dir))
    saved_root = (config.tuner.class_args or {}).get("out_dir") if record["plan"]["tuner"] == "hyperband" else None
    if saved_root and Path(saved_root) != layout.root:
        raise ValueError(
            f"experiment {record['experiment_id']} was started in {saved_root} but is now at {layout.root}; "
            "NNI keeps absolute paths, so mount or link the folder at its original path and resume from there")
    nni_experiment = Experiment(config, id=record["experiment_id"])
    experiment = HPOExperiment(layout, record)
    layout.dispatcher_error_file.unlink(missing_ok=True)
    _launch(experiment, nni_experiment, port or free_port(record.get("port") or DEFAULT_PORT), action=action)
    return experiment


def _launch(experiment: HPOExperiment, nni_experiment, port: int, action: str) -> None:
    """Start NNI's manager for ``action`` (create/resume/view), bound to localhost when local."""
    nni_experiment._action = action
    experiment.started = time.time()
    local = experiment.record.get("platform", "local") == "local"
    previous = os.environ.get("NODE_OPTIONS")
    if local:
        preload = experiment.layout.nni_dir / "seglib_loopback.js"
        preload.parent.mkdir(parents=True, exist_ok=True)
        preload.write_text(LOOPBACK_JS)
        os.environ["NODE_OPTIONS"] = f'{previous or ""} --require "{preload}"'.strip()
    try:
        nni_experiment.start(port)
    finally:
        if local:
            if previous is None:
                os.environ.pop("NODE_OPTIONS", None)
            else:
                os.environ["NODE_OPTIONS"] = previous
    experiment.nni, experiment.port, experiment._dispatcher_pid = nni_experiment, port, None
    experiment.record["port"] = port
    experiment.record["sessions"].append({"action": action, "time": experiment.started, "port": port})
    write_json(experiment.layout.experiment_file, experiment.record)
    log.info("NNI %s: experiment %s, web UI on %s (localhost only: see docs/hpo.md)", action, experiment.id, experiment.url)


def run_experiment(out_dir, *, resume_existing: bool = False, timeout: float | None = None, show=None,
                   **start_args) -> dict:
    """Start (or resume) an experiment, wait for it to finish, stop it, export it; return the export."""
    layout = Layout.of(out_dir)
    if resume_existing and layout.experiment_file.is_file():
        experiment = resume(out_dir, port=start_args.get("port"))
    else:
        experiment = start(out_dir, **start_args)
    try:
        experiment.wait(timeout=timeout, show=show)
    finally:
        experiment.stop()
    return export(out_dir)


def watch(experiment: HPOExperiment, every: float = POLL_SECONDS, timeout: float | None = None) -> dict:
    """Live progress in a notebook or terminal until the experiment finishes; returns the last."""
    display = _progress_display()
    return experiment.wait(every=every, timeout=timeout, show=display)


def _progress_display():
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            handle = display(format_progress({}), display_id=True)
            return lambda p: handle.update(format_progress(p))
    except ImportError:
        pass
    return lambda p: print(format_progress(p), flush=True)


def format_progress(p: dict) -> str:
    if not p:
        return "starting..."
    best = "none yet" if p.get("best_value") is None else (
        f"{p['best_value']:.4f} ({p['best']['config_id']} at {p['best']['budget']} epochs, {p['best']['params']})")
    return (f"[{time.strftime('%H:%M:%S')}] {p['succeeded']} done, {p['running']} running, {p['failed']} failed, "
            f"{p['diverged']} diverged of {p['planned']} planned; {p['epochs']} epochs trained; best val loss {best}")


def show_web_ui(port: int, height: int = 800, window: bool = False) -> str:
    """Show NNI's web UI safely: through Colab's authenticated proxy, else say how to tunnel.

    Colab serves the port only to the signed-in notebook user; nothing is opened to the
    internet (the original used a public ngrok tunnel: anyone with the URL could change the
    experiment through its unauthenticated REST API).
    """
    try:
        from google.colab import output  # only importable inside Colab
    except ImportError:
        message = (f"NNI web UI: http://localhost:{port} on this machine only. From elsewhere, forward it over "
                   f"SSH: ssh -L {port}:localhost:{port} you@this-host, then open http://localhost:{port}. "
                   "Never expose this port publicly (no authentication).")
        print(message)
        return message
    if window:
        output.serve_kernel_port_as_window(port)
    else:
        output.serve_kernel_port_as_iframe(port, height=str(height))
    return f"colab-proxy:{port}"


# ---------------------------------------------------------------------------------------------
# Progress and export: from the trial folders and the tuner state (work without NNI running).

def progress(out_dir, experiment: HPOExperiment | None = None) -> dict:
    """Counts and best so far from the trial folders (plus NNI's live statuses when running)."""
    layout = Layout.of(out_dir)
    record = read_json(layout.experiment_file) or {}
    rows = collect_trials(layout, live=experiment)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("SUCCEEDED", "DIVERGED", "FAILED", "RUNNING", "WAITING", "INTERRUPTED")}
    best = best_row(rows)
    return {
        "succeeded": counts["SUCCEEDED"], "diverged": counts["DIVERGED"], "failed": counts["FAILED"] + counts["INTERRUPTED"],
        "running": counts["RUNNING"] + counts["WAITING"], "trials": len(rows),
        "planned": (record.get("plan") or {}).get("max_trials"),
        "epochs": sum(r["epochs_trained"] or 0 for r in rows),
        "best_value": None if best is None else best["value"],
        "best": None if best is None else {k: best[k] for k in ("config_id", "budget", "params", "value")},
        "status": experiment.status() if experiment is not None else "STOPPED",
    }


def collect_trials(layout: Layout, live: HPOExperiment | None = None) -> list[dict]:
    """One row per (configuration, budget) trial folder, joined with NNI's trial jobs.

    The trial folders are the truth: NNI 3.0 hands parameters to concurrently starting trials
    first-come-first-served, so its own records (database, web UI, ``export_data``) can pair
    a trial id with a sibling's parameters. A trial folder holds the parameters the trial
    really trained with and the NNI trial ids that ran it. NNI jobs that never wrote a folder
    (waiting, or crashed before starting) get a row from NNI's records alone.
    """
    state = read_json(layout.state_file)
    jobs = {(j["config_id"], j["budget"]): j for j in (state or {}).get("jobs", [])}
    nni_jobs = {t["trialJobId"]: t for t in nni_trial_jobs(layout, live)}
    rows, claimed = [], set()
    if layout.trials.is_dir():
        for folder in sorted(layout.trials.iterdir()):
            params = read_json(folder / "params.json")
            if params is None:
                continue
            key = (params["config_id"], int(params["budget"]))
            history = read_json(folder / "history.json") or {}
            ids = [a["trial_id"] for a in history.get("attempts", [])] + history.get("reused_by", [])
            mine = [nni_jobs[i] for i in dict.fromkeys(ids) if i in nni_jobs]
            claimed.update(t["trialJobId"] for t in mine)
            rows.append(trial_row(layout, key, mine, jobs.get(key)))
    budget = _settings_budget(layout)
    for trial_id, trial in nni_jobs.items():
        if trial_id not in claimed:
            params = trial.get("parameters") or {}
            key = (params.get(CONFIG_KEY) or f"t-{trial_id}", int(params.get(BUDGET_KEY) or budget))
            row = trial_row(layout, key, [trial], None, from_folder=False)
            row["params_source"] = "nni"
            rows.append(row)
    return sorted(rows, key=lambda r: (r["start_time"] is None, r["start_time"] or 0, r["config_id"], r["budget"]))


def _settings_budget(layout: Layout) -> int:
    settings = read_json(layout.settings_file) or {}
    return int((settings.get("defaults") or {}).get(BUDGET_KEY, 0))


def trial_row(layout: Layout, key: tuple, nni_jobs: list[dict], job: dict | None, from_folder: bool = True) -> dict:
    """Everything known about one (configuration, budget) pair, as plain JSON values."""
    config_id, budget = key
    folder = layout.trial_dir(config_id, budget)
    result = (read_json(folder / "result.json") if from_folder else None) or {}
    history = (read_json(folder / "history.json") if from_folder else None) or {"epochs": [], "attempts": []}
    params_file = (read_json(folder / "params.json") if from_folder else None) or {}
    last = nni_jobs[-1] if nni_jobs else {}
    nni_params = last.get("parameters") or {}
    params = result.get("params") or params_file.get("params") or {k: nni_params.get(k) for k in HYPERPARAMETERS}
    attempts = history.get("attempts", [])
    status = result.get("status")
    if status is None:
        nni_status = last.get("status")
        if nni_status in ("RUNNING", "WAITING") or (not nni_jobs and attempts):
            status = nni_status or "INTERRUPTED"
        else:
            status = "FAILED" if nni_status in ("SUCCEEDED", "FAILED", None) else nni_status
    error = result.get("error")
    if error is None and status in ("FAILED", "SYS_CANCELED", "USER_CANCELED"):
        error = _stderr_tail(layout, last) or f"NNI status {last.get('status')} and no result in {folder}"
    final = result.get("final") or {}
    metrics = result.get("metrics") or {}
    started = attempts[0]["started"] if attempts else (last.get("startTime") or 0) / 1000 or None
    ended = attempts[-1].get("ended") if attempts else (last.get("endTime") or 0) / 1000 or None
    row = {
        "trial_id": attempts[-1]["trial_id"] if attempts else last.get("trialJobId"),
        "trial_ids": list(dict.fromkeys([a["trial_id"] for a in attempts] + [t["trialJobId"] for t in nni_jobs])),
        "config_id": config_id, "budget": budget,
        "parameter_id": None if job is None else job["parameter_id"],
        "bracket": None if job is None else job["s"], "rung": None if job is None else job["rung"],
        "params": params,
        "resumed_from": result.get("resumed_from", next((a["initial_epoch"] for a in attempts if "initial_epoch" in a), None)),
        "epochs_trained": result.get("epochs_trained", len(history.get("epochs", []))),
        "status": status,
        "value": final.get("default") if status == "SUCCEEDED" else None,
        "final": final,
        "precision": metrics.get("precision"), "recall": metrics.get("recall"), "mean_iou": metrics.get("mean_iou"),
        "metrics": {k: v for k, v in metrics.items() if k != "confusion"},
        "curve": [e.get("val_loss") for e in history.get("epochs", [])],
        "train_curve": [e.get("loss") for e in history.get("epochs", [])],
        "seconds": result.get("seconds", sum(a.get("seconds", 0.0) for a in attempts)),
        "first_epoch_seconds": result.get("first_epoch_seconds"),
        "error": error,
        "attempts": len(attempts),
        "reused_by": history.get("reused_by", []),
        "start_time": started,
        "end_time": ended if status not in ("RUNNING", "WAITING") else None,
        "sequence": None if job is None else job["parameter_id"],
        "nni_status": last.get("status"),
        "model": result.get("model"),
    }
    return sanitize(row)


def _cmdline(process) -> list[str]:
    try:
        return process.cmdline()
    except Exception:  # psutil.NoSuchProcess / AccessDenied: not ours to watch
        return []


def _stderr_tail(layout: Layout, nni_job: dict, lines: int = 30) -> str | None:
    if not nni_job:
        return None
    record = read_json(layout.experiment_file) or {}
    path = layout.nni_dir / record.get("experiment_id", "?") / "environments" / "local-env" / "trials" / nni_job["trialJobId"] / "trial.stderr"
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or None
    except OSError:
        return None


def nni_trial_jobs(layout: Layout, live: HPOExperiment | None = None) -> list[dict]:
    """NNI's trial jobs: from the running manager's REST API, else from its SQLite database.

    ``Experiment.list_trial_jobs()`` raises TypeError in NNI 3.0, so the raw records are read.
    """
    if live is not None and live.port is not None:
        from nni.experiment import rest

        jobs = rest.get(live.port, "/trial-jobs")
    else:
        jobs = _jobs_from_db(layout)
    out = []
    for job in jobs:
        hyper = job.get("hyperParameters") or []
        packed = json.loads(hyper[-1]) if hyper else {}
        finals = job.get("finalMetricData") or []
        final = None
        if finals:
            final = json.loads(finals[-1]["data"])
            final = json.loads(final) if isinstance(final, str) else final
        out.append({
            "trialJobId": job.get("trialJobId") or job.get("id"), "status": job.get("status"),
            "parameter_id": packed.get("parameter_id"), "parameters": packed.get("parameters") or {},
            "sequenceId": job.get("sequenceId"), "startTime": job.get("startTime"), "endTime": job.get("endTime"),
            "final": final if isinstance(final, dict) else ({"default": final} if final is not None else None),
        })
    return out


def _jobs_from_db(layout: Layout) -> list[dict]:
    """Trial jobs rebuilt from NNI's TrialJobEvent/MetricData tables (manager not running)."""
    import sqlite3

    record = read_json(layout.experiment_file) or {}
    db = layout.nni_dir / record.get("experiment_id", "?") / "db" / "nni.sqlite"
    if not db.is_file():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        events = conn.execute("SELECT timestamp, trialJobId, event, data, sequenceId FROM TrialJobEvent ORDER BY timestamp").fetchall()
        metrics = conn.execute("SELECT trialJobId, type, data FROM MetricData WHERE type = 'FINAL'").fetchall()
    jobs: dict[str, dict] = {}
    for timestamp, trial_id, event, data, sequence in events:
        if not trial_id:
            continue
        job = jobs.setdefault(trial_id, {"trialJobId": trial_id, "hyperParameters": [], "finalMetricData": []})
        if event in ("WAITING", "RUNNING") and data:
            job["hyperParameters"] = [data]
            job["sequenceId"] = sequence
        if event == "RUNNING":
            job.setdefault("startTime", timestamp)
        if event in ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"):
            job["endTime"] = timestamp
        if event in ("WAITING", "RUNNING", "SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED"):
            job["status"] = event
    for trial_id, _type, data in metrics:
        if trial_id in jobs:
            jobs[trial_id]["finalMetricData"] = [{"data": data}]
    return list(jobs.values())


def best_row(rows: list[dict]) -> dict | None:
    scored = [r for r in rows if r["status"] == "SUCCEEDED" and r["value"] is not None]
    return min(scored, key=lambda r: (r["value"], -r["budget"])) if scored else None


def _finished(state: dict | None, rows: list[dict], the_plan: dict) -> bool:
    """HyperBand: every bracket done; random search: as many trials ended as were planned."""
    if state is not None:
        return HyperBand.from_state(state).finished and not any(r["status"] in ("RUNNING", "WAITING") for r in rows)
    ended = sum(r["status"] in ("SUCCEEDED", "DIVERGED", "FAILED") for r in rows)
    return bool(the_plan) and ended >= the_plan.get("max_trials", 0)


def export(out_dir) -> dict:
    """Write ``trials.json``, ``trials.csv`` and ``best.json`` into ``out_dir``; return them."""
    layout = Layout.of(out_dir)
    record = read_json(layout.experiment_file) or {}
    rows = collect_trials(layout)
    the_plan = record.get("plan") or {}
    state = read_json(layout.state_file)
    summary = {
        "tuner": the_plan.get("tuner"), "max_budget": the_plan.get("max_budget"), "eta": the_plan.get("eta"),
        "trials": len(rows), "epochs_trained": sum(r["epochs_trained"] or 0 for r in rows),
        "epochs_planned": the_plan.get("planned_epochs"), "pass": the_plan.get("pass"),
        "statuses": {s: sum(r["status"] == s for r in rows) for s in sorted({r["status"] for r in rows})},
        "finished": _finished(state, rows, the_plan),
        "experiment_id": record.get("experiment_id"),
    }
    write_json(layout.root / "trials.json", {"summary": summary, "trials": rows})
    with open(layout.root / "trials.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=TRIAL_FIELDS)
        writer.writeheader()
        for row in rows:
            flat = {k: row.get(k) for k in TRIAL_FIELDS}
            flat.update({k: (row["params"] or {}).get(k) for k in HYPERPARAMETERS})
            flat["curve"] = json.dumps(row["curve"])
            flat["trial_ids"] = " ".join(row["trial_ids"])
            writer.writerow(flat)
    best = best_row(rows)
    best_record = {
        "params": None if best is None else best["params"], "value": None if best is None else best["value"],
        "config_id": None if best is None else best["config_id"], "budget": None if best is None else best["budget"],
        "trial_id": None if best is None else best["trial_id"],
        "metrics": None if best is None else best["metrics"], "model": None if best is None else best["model"],
        "search_space": record.get("search_space"), "summary": summary,
    }
    write_json(layout.root / "best.json", best_record)
    return {"trials": rows, "best": best_record, "summary": summary}
