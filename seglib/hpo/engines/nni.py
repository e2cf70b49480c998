"""The NNI engine: NNI's manager starts the trial processes and serves the web UI; seglib's
tuner (``seglib.hpo.engines.nni_tuner``) runs the search inside NNI's dispatcher.

NNI's records live in the experiment folder (``OUT/nni``, not ``~/nni-experiments``), so a
folder on Google Drive can be resumed from a new Colab runtime. NNI leaves an experiment
RUNNING forever when its tuner dies, so the driver watches the tuner and the manager and
fails loudly instead; the tuner in turn stops the experiment when its driver is gone. Either
way nothing of the experiment outlives its driver, and a resumed search hands the trials
that were running out again.

The web UI/REST API has no authentication and can change a running experiment. For local
experiments, and remote ones whose trial machines reach the manager at 127.0.0.1 (SSH servers
on this machine), seglib binds NNI's manager to 127.0.0.1 only (a Node preload that adds the
host to ``listen()``); reach it through Colab's proxy (:func:`show_web_ui`) or an SSH tunnel
(``ssh -L 8080:localhost:8080 host``). Never expose it publicly.
"""

from __future__ import annotations

import atexit
import logging
import os
import shlex
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seglib.artifacts import ExperimentPaths, read_json_or, write_json
from seglib.hpo.export import progress

log = logging.getLogger("seglib.hpo.nni")

DEFAULT_PORT = 8080  # the web UI's first choice; $SEGLIB_NNI_PORT moves it (several sessions on one host)
POLL_SECONDS = 2.0
STALE_HEARTBEAT_SECONDS = 120.0  # the tuner writes one every 2 s
TUNER_CLASS = "seglib.hpo.engines.nni_tuner.SeglibTuner"
LOW_DISK_BYTES = 16 << 20  # below this, a failure is reported with the folder's free space
# Preloaded into NNI's manager (NODE_OPTIONS=--require) unless other machines must reach it: NNI 3.0 calls
# listen(port) without a host, i.e. on every interface; adding the host binds the loopback only.
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
# Preloaded into NNI's manager of a remote experiment: NNI 3.0 waits for an SSH connection's 'ready' with
# events.once, whose error listener goes after the first error. A machine lost mid-connection emits a second
# one ('Connection lost before handshake' after ECONNRESET), which Node throws when nothing listens, and the
# manager dies with every machine's trials. Unheard, the error is reported instead; NNI's own check of the
# trial keeper then finds the machine gone and hands its trial out again.
SSH_GUARD_JS = """'use strict';
const Module = require('module');
const load = Module._load;
Module._load = function (request, ...rest) {
  const loaded = load.call(this, request, ...rest);
  if (request === 'ssh2' && loaded && loaded.Client && !loaded.Client.prototype.seglibGuarded) {
    const emit = loaded.Client.prototype.emit;
    loaded.Client.prototype.emit = function (event, ...args) {
      if (event === 'error' && this.listenerCount('error') === 0) {
        const where = this.config ? `${this.config.username}@${this.config.host}:${this.config.port}` : 'a machine';
        console.error(`seglib: lost the SSH connection to ${where}: ${args[0] && args[0].message}`);
        return false;
      }
      return emit.call(this, event, ...args);
    };
    loaded.Client.prototype.seglibGuarded = true;
  }
  return loaded;
};
"""


class ExperimentFailed(RuntimeError):
    """The experiment cannot finish: its tuner or manager died, or NNI reported an error."""


# ---------------------------------------------------------------------------------------------
# Running a search on NNI


def run_experiment(
    paths: ExperimentPaths,
    record: dict,
    show=None,
    timeout: float | None = None,
    port: int | None = None,
    training_service=None,
    nni_manager_ip: str | None = None,
    on_web_ui=None,
) -> None:
    """Start (or resume) the NNI experiment of ``paths`` and wait for its search to end."""
    quiet_nni_logger()
    if record.get("nni"):
        experiment = _reopen(paths, record, port, action="resume")
    else:
        experiment = _create(paths, record, port, training_service, nni_manager_ip)
    try:
        (on_web_ui or show_web_ui)(experiment.port)
        experiment.wait(timeout=timeout, show=show)
    finally:
        experiment.stop()


def view(out_dir, port: int | None = None) -> NNIExperiment:
    """Open a stopped or finished experiment's web UI read-only (stop it with ``.stop()``)."""
    paths = ExperimentPaths.of(out_dir)
    record = read_json_or(paths.experiment_file, None)
    if not record or not record.get("nni"):
        raise FileNotFoundError(f"{paths.root} holds no NNI experiment to view")
    quiet_nni_logger()
    check_port(port, paths.root)
    return _reopen(paths, record, port, action="view")


def quiet_nni_logger() -> None:
    """NNI's own start/stop chatter, and its "Web portal URLs" line that lists addresses the
    manager does not listen on, off: seglib's progress line and show_web_ui say what matters.

    NNI's logging is set up on its first import (the "nni" logger back to INFO), so that
    import comes first.
    """
    import nni.runtime.log  # noqa: F401

    logging.getLogger("nni").setLevel(logging.WARNING)


def build_config(paths: ExperimentPaths, record: dict, training_service=None, nni_manager_ip: str | None = None):
    """The NNI ``ExperimentConfig`` of a prepared search folder: seglib's tuner, seglib's trials."""
    from nni.experiment import CustomAlgorithmConfig, ExperimentConfig

    plan = record["plan"]
    platform = "local" if training_service is None else training_service.platform
    config = ExperimentConfig(platform)
    if training_service is not None:
        config.training_service = training_service
    python = shlex.quote(sys.executable if training_service is None else _remote_python(training_service))
    config.experiment_name = f"seglib-{plan['tuner']}"
    config.trial_command = f"{python} -m seglib.hpo.trial_process --settings settings.json"
    config.trial_code_directory = str(paths.trial_code)
    config.experiment_working_directory = str(paths.nni_dir)
    config.search_space = record["search_space"]
    config.trial_concurrency = plan["concurrency"]
    # NNI counts every trial process; seglib's tuner decides when the search is done (a pair
    # handed out again after an interruption is a second NNI trial), so NNI gets no cap.
    config.max_trial_number = None
    if nni_manager_ip:
        config.nni_manager_ip = nni_manager_ip
    config.tuner = CustomAlgorithmConfig(
        class_name=TUNER_CLASS,
        code_directory=str(Path(__file__).resolve().parents[3]),
        class_args={"out_dir": str(paths.root)},
    )
    return config


def _remote_python(service) -> str:
    """The interpreter of remote trials: ``python`` in the one ``python_path`` of every machine.

    NNI runs one trial command everywhere, from a login shell whose PATH may find another
    Python first (pyenv shims in ~/.bashrc), so the command names the interpreter in full; it
    is ``python``, the name NNI itself runs from ``python_path`` (to install and check nni).
    """
    folders = {machine.python_path for machine in service.machine_list}
    if len(folders) != 1 or None in folders:
        raise ValueError(
            f"remote machines' python_path: expected one folder for all, found {sorted(map(str, folders))}; "
            "NNI runs one trial command on every machine: install seglib's environment at the same path on each"
        )
    return str(PurePosixPath(folders.pop()) / "python")


def _create(paths, record, port, training_service, nni_manager_ip) -> NNIExperiment:
    require_nni()
    from nni.experiment import Experiment

    config = build_config(paths, record, training_service, nni_manager_ip)
    nni_experiment = Experiment(config)
    record["nni"] = {"experiment_id": nni_experiment.id, "platform": config.training_service.platform}
    experiment = NNIExperiment(paths, record)
    _launch(experiment, nni_experiment, port or free_port(), action="create")
    return experiment


def _reopen(paths, record, port, action: str) -> NNIExperiment:
    from nni.experiment import Experiment
    from nni.experiment.launcher import get_stopped_experiment_config

    experiment_id = record["nni"]["experiment_id"]
    if not (paths.nni_dir / experiment_id / "db").is_dir():
        raise FileNotFoundError(
            f"NNI's records for experiment {experiment_id} are missing: expected "
            f"{paths.nni_dir / experiment_id / 'db'}; start the search in a new folder"
        )
    config = get_stopped_experiment_config(experiment_id, str(paths.nni_dir))
    saved_root = (config.tuner.class_args or {}).get("out_dir")
    if saved_root and Path(saved_root) != paths.root:
        raise ValueError(
            f"experiment {experiment_id} was started in {saved_root} but is now at {paths.root}; NNI keeps "
            "absolute paths, so mount or link the folder at its original path and resume from there"
        )
    nni_experiment = Experiment(config, id=experiment_id)
    experiment = NNIExperiment(paths, record)
    paths.tuner_error_file.unlink(missing_ok=True)
    _launch(experiment, nni_experiment, port or free_port(record.get("port")), action=action)
    return experiment


def _launch(experiment: NNIExperiment, nni_experiment, port: int, action: str) -> None:
    """Start NNI's manager for ``action`` (create/resume/view).

    Bound to 127.0.0.1 unless other machines must reach it; with SSH machines, their lost
    connections reported rather than fatal.
    """
    from seglib.hpo.engines.nni_compat import patch_nni_file_lock, patch_nni_manager_wait

    patch_nni_file_lock()  # NNI 3.0's experiment-list lock hangs with filelock >= 3.12
    patch_nni_manager_wait()  # NNI 3.0 gives its manager 3 s to start
    nni_experiment._action = action
    experiment.started = time.time()
    platform = experiment.record["nni"]["platform"]
    loopback = _loopback_only(platform, nni_experiment.config.nni_manager_ip, action)
    script = manager_preload(platform, loopback)
    previous = os.environ.get("NODE_OPTIONS")
    if script:
        preload = experiment.paths.nni_dir / "seglib_preload.js"
        preload.parent.mkdir(parents=True, exist_ok=True)
        preload.write_text(script)
        os.environ["NODE_OPTIONS"] = f'{previous or ""} --require "{preload}"'.strip()
    try:
        nni_experiment.start(port)
    finally:
        if script:
            if previous is None:
                os.environ.pop("NODE_OPTIONS", None)
            else:
                os.environ["NODE_OPTIONS"] = previous
    experiment.nni, experiment.port = nni_experiment, port
    experiment.record["port"] = port
    experiment.record["sessions"].append({"action": action, "time": experiment.started, "port": port, "engine": "nni"})
    write_json(experiment.paths.experiment_file, experiment.record)
    log.info(
        "NNI %s: experiment %s, web UI on %s (%s: see docs/hpo.md)",
        action,
        experiment.id,
        experiment.url,
        "localhost only" if loopback else "open to the trial machines: firewall it",
    )


def manager_preload(platform: str, loopback: bool) -> str:
    """The Node script preloaded into NNI's manager ('' for none): each part in a scope of its own."""
    scripts = [LOOPBACK_JS] * loopback + [SSH_GUARD_JS] * (platform == "remote")
    return "".join(f"(() => {{\n{script}}})();\n" for script in scripts)


def _loopback_only(platform: str, manager_ip: str | None, action: str) -> bool:
    """Whether NNI's manager can listen on 127.0.0.1 only: no other machine has to reach it.

    Trial machines of a remote experiment connect to the manager at ``nni_manager_ip``; it
    stays on the loopback only when that is 127.0.0.1 (SSH servers on this machine). A viewed
    experiment runs no trials.
    """
    return platform == "local" or action == "view" or manager_ip == "127.0.0.1"


def require_nni() -> None:
    """NNI, or a message saying how to get it (it is installed apart: see pyproject.toml)."""
    try:
        import nni  # noqa: F401
    except ImportError:
        raise ImportError(
            "the nni engine needs NNI 3.0: `pip install --no-deps nni==3.0` (its requirements come "
            "with seglib), or use the in-process engine: --engine local / -p engine=local"
        ) from None


def free_port(start: int | None = None, tries: int = 200) -> int:
    """The first port from ``start`` (default ``$SEGLIB_NNI_PORT`` or 8080) that is free together
    with the next one (NNI may use both)."""
    if start is None:
        start = int(os.environ.get("SEGLIB_NNI_PORT") or DEFAULT_PORT)
    for port in range(start, start + tries):
        if all(_port_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError(f"no free port pair in {start}..{start + tries}; pass --port")


def check_port(port: int | None, root) -> None:
    """Refuse a port given by the user that something already listens on, naming it (NNI would
    say only "Port N is not idle", after the search folder was prepared)."""
    if port is not None and not _port_free(port):
        raise RuntimeError(
            f"cannot use port {port} for the search in {root}: it is in use (another NNI experiment, or a "
            "manager of this search still stopping); pass another --port, or none to take a free one"
        )


def _port_free(port: int) -> bool:
    """Whether NNI's manager could listen on ``port``: nothing listens there and no connection holds
    it (an outgoing connection's port is invisible to a connect test, yet makes the listen fail)."""
    with socket.socket() as probe:  # also on BSD/macOS, where a wildcard bind may share a listener's port
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            return False
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Node listens: TIME_WAIT is no obstacle
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# A started experiment


@dataclass
class NNIExperiment:
    """A started, resumed or viewed experiment: its folder, its record and NNI's handle."""

    paths: ExperimentPaths
    record: dict
    nni: object = None
    port: int | None = None
    started: float = field(default_factory=time.time)
    _dispatcher_pid: int | None = None

    @property
    def id(self) -> str:
        return self.record["nni"]["experiment_id"]

    @property
    def url(self) -> str | None:
        return f"http://localhost:{self.port}" if self.port else None

    def nni_log(self, name: str) -> Path:
        return self.paths.nni_dir / self.id / "log" / name

    def status(self) -> str:
        """NNI's status (RUNNING, DONE, ERROR, ...), or STOPPED when no manager is running."""
        if self.nni is None or self.port is None:
            return "STOPPED"
        from nni.experiment import rest

        return rest.get(self.port, "/check-status")["status"]

    def check(self) -> None:
        """Raise ExperimentFailed if the manager or the tuner died, or NNI reported an error."""
        try:
            self._check()
        except ExperimentFailed as error:
            raise ExperimentFailed(
                f"{error}{_disk_note(self.paths.root)}. Continue the search with "
                f"`seglib hpo --out {self.paths.root} --resume`"
            ) from None

    def _check(self) -> None:
        error_file = self.paths.tuner_error_file
        if error_file.is_file():
            raise ExperimentFailed(f"the tuner crashed ({error_file}):\n{error_file.read_text()}")
        proc = getattr(self.nni, "_proc", None)
        if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
            raise ExperimentFailed(
                f"the NNI manager exited with code {proc.returncode}; its log: {self.nni_log('nnimanager.log')}"
            )
        from nni.experiment import rest

        try:
            check = rest.get(self.port, "/check-status")
        except OSError as error:
            raise ExperimentFailed(f"the NNI manager does not answer on port {self.port} ({error})") from None
        if check.get("status") == "ERROR":
            raise ExperimentFailed(f"NNI reports ERROR: {check.get('errors')}; log: {self.nni_log('nnimanager.log')}")
        self._check_tuner()

    def _check_tuner(self) -> None:
        """The tuner writes a heartbeat every 2 s; a stale one, or its process gone, is fatal."""
        import psutil

        beat = read_json_or(self.paths.heartbeat_file, None)
        now = time.time()
        if beat is None or beat["time"] < self.started - 1:  # none yet, or the previous session's
            if now - self.started > STALE_HEARTBEAT_SECONDS:
                raise ExperimentFailed(
                    f"the tuner never started ({self.paths.heartbeat_file} not written in "
                    f"{STALE_HEARTBEAT_SECONDS:.0f} s); see {self.nni_log('dispatcher.log')}"
                )
            return
        if not psutil.pid_exists(beat["pid"]) or now - beat["time"] > STALE_HEARTBEAT_SECONDS:
            raise ExperimentFailed(
                f"the tuner process {beat['pid']} is gone (last heartbeat {now - beat['time']:.0f} s ago); "
                f"NNI would wait forever. See {self.nni_log('dispatcher.log')} and {self.nni_log('nnimanager.log')}"
            )

    def wait(self, every: float = POLL_SECONDS, timeout: float | None = None, show=None) -> dict:
        """Block until the search is finished or halted (checking NNI is alive); return the progress.

        ``show(progress)`` is called whenever the progress changes.
        """
        deadline = None if timeout is None else time.time() + timeout
        last = None
        while True:
            self.check()
            now = progress(self.paths.root)
            summary = {k: now[k] for k in ("succeeded", "running", "failed", "diverged", "interrupted", "best_value")}
            if show is not None and summary != last:
                show(now)
            last = summary
            if (now["finished"] or now["halted"]) and not now["running"]:
                return now
            if deadline is not None and time.time() > deadline:
                raise TimeoutError(
                    f"the search in {self.paths.root} did not finish within {timeout} s; run it again to continue"
                )
            time.sleep(every)

    def stop(self) -> None:
        """Stop NNI's manager, the tuner and running trials (the folder stays resumable)."""
        if self.nni is not None:
            proc = getattr(self.nni, "_proc", None)
            if proc is not None and hasattr(proc, "poll") and proc.poll() is not None:
                atexit.unregister(self.nni.stop)  # the manager is already gone (crashed/killed)
                self.nni._proc = None
            self.nni.stop()
        self.nni, self.port = None, None


def _disk_note(folder: Path) -> str:
    """Where the folder's disk is (nearly) full, say so: every failure then has that cause."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    if free >= LOW_DISK_BYTES:
        return ""
    return f"; no space left on device (ENOSPC): {folder} has {free:,} bytes free"


def show_web_ui(port: int, height: int = 800, window: bool = False) -> str:
    """Show NNI's web UI safely: through Colab's authenticated proxy, else say how to tunnel.

    Colab serves the port only to the signed-in notebook user; nothing is opened to the
    internet (the original used a public ngrok tunnel: anyone with the URL could change the
    experiment through its unauthenticated REST API).
    """
    try:
        from google.colab import output  # only importable inside Colab
    except ImportError:
        message = (
            f"NNI web UI: http://localhost:{port} on this machine only. From elsewhere, forward it over "
            f"SSH: ssh -L {port}:localhost:{port} you@this-host, then open http://localhost:{port}. "
            "Never expose this port publicly (no authentication)."
        )
        print(message)
        return message
    if window:
        output.serve_kernel_port_as_window(port)
    else:
        output.serve_kernel_port_as_iframe(port, height=str(height))
    return f"colab-proxy:{port}"
