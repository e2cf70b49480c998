"""More than one machine, for real: NNI's remote (SSH) training service on loopback.

Two throwaway ``sshd`` on 127.0.0.1, each at a free high port with its own host key, are two
machines: each tags its sessions with ``SetEnv SEGLIB_HOST=machine-N`` (the name trials
record) and a HOME of its own, and binds NNI's trial keeper to 127.0.0.1 (seglib's Node
preload in NODE_OPTIONS). They share this machine's disk, which stands for the shared
storage. Needs root and Debian's openssh-server (installed with apt-get when missing);
skipped otherwise.

The machines' python_path holds a ``python`` that runs this Python but skips the
``python -m pip install nni --upgrade`` NNI runs on every machine when it starts (CI may
have no network, and a test never changes the project's environment).

Where each trial runs is made certain, so the test never depends on luck: NNI hands its
trials to the machines in turn, and with one trial at a time (concurrency 1) each trial gets
the next pair of the search. At R = 3, seed 1 and this search space draw c1 with learning
rate 1e30 (it diverges, so it is never promoted) and c0, c2, c3, c4 with 1e-2. So c0 ->
machine-1, c1 -> machine-2, c2 -> machine-1, then the rung's best (c0 or c2) resumes on
machine-2 from the checkpoint machine-1 wrote, then c3 -> machine-1 and c4 -> machine-2.
"""

from __future__ import annotations

import contextlib
import csv
import getpass
import importlib.util
import json
import os
import shlex
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from hpo_helpers import ONE_BATCH_SIZE, cli_args, epochs_in_history, processes_of, spare_port, start_driver, wait_for

from seglib.artifacts import ExperimentPaths, read_experiment
from seglib.hpo.engines.nni import LOOPBACK_JS, build_config, manager_preload
from seglib.hpo.remote import remote_training_service
from seglib.hpo.search import plan
from seglib.settings import profile

BACKEND = os.environ.get("SEGLIB_TEST_BACKEND", "tensorflow")
SEED = 1
SPACE = {
    **ONE_BATCH_SIZE,
    "learning_rate": {"_type": "choice", "_value": [1e30, 1e-2]},
    "activation": {"_type": "choice", "_value": ["relu"]},
}
TIMEOUT = 900
SSHD = "/usr/sbin/sshd"
LOGIN = getpass.getuser()
LOOPBACK = ("127.0.0.1", "::1")


# ---------------------------------------------------------------------------------------------
# Two machines on loopback


class Machines:
    """SSH servers on 127.0.0.1 standing for machines; everything they start is theirs to kill."""

    def __init__(self, root: Path, count: int = 2):
        self.root, self.ports = root, {}
        self.key = root / "client_key"
        root.mkdir(parents=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "seglib-test", "-f", str(self.key)], check=True
        )
        (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
        (root / "loopback.js").write_text(LOOPBACK_JS)
        for n in range(1, count + 1):
            self.start(n)

    def folder(self, n: int) -> Path:
        return self.root / f"machine-{n}"

    def start(self, n: int) -> None:
        folder = self.folder(n)
        (folder / "home").mkdir(parents=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key")], check=True)
        port = spare_port()
        (folder / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1:{port}
HostKey {folder / "host_key"}
PidFile {folder / "sshd.pid"}
AuthorizedKeysFile {self.root / "authorized_keys"}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
AllowUsers {LOGIN}
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
SetEnv SEGLIB_HOST=machine-{n} HOME={folder / "home"} NODE_OPTIONS="--require {self.root / "loopback.js"}"
LogLevel VERBOSE
""")
        subprocess.run([SSHD, "-f", str(folder / "sshd_config"), "-E", str(folder / "sshd.log")], check=True)
        wait_for(lambda: (folder / "sshd.pid").is_file() and (folder / "sshd.pid").read_text().strip(), 10)
        self.ports[n] = port

    def spec(self, n: int) -> str:
        return f"{LOGIN}@127.0.0.1:{self.ports[n]}"

    def listener(self, n: int) -> psutil.Process | None:
        try:
            return psutil.Process(int((self.folder(n) / "sshd.pid").read_text()))
        except (OSError, ValueError, psutil.Error):
            return None

    def started_through(self, n: int) -> list[psutil.Process]:
        """Machine n's sessions and every process they started (trial keepers, trials): its HOME."""
        home, found = str(self.folder(n) / "home"), []
        listener = self.listener(n)
        if listener is not None:
            found += listener.children(recursive=True)
        for process in psutil.process_iter():
            try:
                if process.environ().get("HOME") == home:
                    found.append(process)
            except psutil.Error:
                continue
        return list({p.pid: p for p in found if p.is_running() and p.status() != psutil.STATUS_ZOMBIE}.values())

    def kill(self, *ns: int) -> None:
        """The machines are gone: their sshd, sessions and everything started through them, at once."""
        victims = [p for n in ns for p in [self.listener(n), *self.started_through(n)] if p is not None]
        for process in victims:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(victims, timeout=10)
        for n in ns:
            (self.folder(n) / "sshd.pid").unlink(missing_ok=True)

    def stop(self) -> None:
        self.kill(*self.ports)

    def cli_args(self, python_path: Path, *ns: int, key: Path | None = None) -> list[str]:
        args = []
        for n in ns or self.ports:
            args += ["--remote", self.spec(n)]
        return [
            *args,
            "--python-path",
            str(python_path),
            "--ssh-key",
            str(key or self.key),
            "--manager-ip",
            "127.0.0.1",
        ]


@pytest.fixture(scope="module")
def sshd():
    """OpenSSH's server and client, installed with apt-get where missing; root only."""
    if os.geteuid() != 0:
        pytest.skip("starts sshd, which needs root")
    if not (Path(SSHD).is_file() and shutil.which("ssh") and shutil.which("ssh-keygen")):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "openssh-server"]):
            done = subprocess.run(command, capture_output=True, text=True, env=env)
            if done.returncode != 0:
                pytest.skip(f"cannot install openssh-server ({shlex.join(command)}: {done.stderr.strip()[-300:]})")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder
    return SSHD


@pytest.fixture
def machines(sshd, tmp_path):
    started = Machines(tmp_path / "machines")
    try:
        yield started
    finally:
        started.stop()
        listening = {c.laddr.port for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert not listening & set(started.ports.values()), "an sshd of the test is still listening"


@pytest.fixture(scope="module")
def python_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("python-path")
    shim = folder / "python"
    shim.write_text(
        f'#!/bin/sh\n[ "$*" = "-m pip install nni --upgrade" ] && exit 0\nexec {shlex.quote(sys.executable)} "$@"\n'
    )
    shim.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.json"
    path.write_text(json.dumps(SPACE))
    return path


def search_args(data, space_file, machines, python_path) -> list[str]:
    return [
        *cli_args(
            data,
            max_budget=3,
            seed=SEED,
            backend=BACKEND,
            space=space_file,
            concurrency=1,
            port=spare_port(),
        ),
        *machines.cli_args(python_path),
    ]


def listening(driver, machines) -> dict[str, list[tuple[str, str, int]]]:
    """The listening sockets of the search's processes: here (driver, manager) and on each machine."""
    groups = {"here": [psutil.Process(driver.pid), *psutil.Process(driver.pid).children(recursive=True)]}
    for n in machines.ports:
        groups[f"machine-{n}"] = [p for p in [machines.listener(n), *machines.started_through(n)] if p is not None]
    found = {}
    for where, processes in groups.items():
        for process in processes:
            try:
                found.setdefault(where, []).extend(
                    (process.name(), c.laddr.ip, c.laddr.port)
                    for c in process.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN
                )
            except psutil.Error:
                continue
    return found


def assert_each_pair_once_and_finished(out: Path) -> dict:
    """The export of a finished search: every pair of the pass once, each epoch trained once; by pair."""
    experiment = read_experiment(out)
    rows = {(r.config_id, r.budget): r for r in experiment.trials}
    assert len(rows) == len(experiment.trials) == 6, "a (configuration, budget) ran twice, or not at all"
    assert experiment.summary.finished and experiment.summary.engine == "nni", experiment.summary
    assert {r.status for r in rows.values()} == {"SUCCEEDED", "DIVERGED"}, [(k, r.status) for k, r in rows.items()]
    drawn = {r.config_id: r.params["learning_rate"] for r in rows.values()}
    assert drawn == {"c0000": 1e-2, "c0001": 1e30, "c0002": 1e-2, "c0003": 1e-2, "c0004": 1e-2}, (
        f"the seed no longer draws the configurations the module docstring relies on: {drawn}"
    )
    assert experiment.best.value == min(r.value for r in rows.values() if r.status == "SUCCEEDED")
    with (out / "trials.csv").open() as f:
        hosts = {(r["config_id"], int(r["budget"])): r["host"] for r in csv.DictReader(f)}
    assert hosts == {key: row.host for key, row in rows.items()}, "trials.csv names the machines as trials.json does"
    for row in rows.values():
        epochs = epochs_in_history(out, row)
        assert len(epochs) == len(set(epochs)), f"{row.config_id}-b{row.budget} trained an epoch twice: {epochs}"
    return rows


def cross_machine_warm_starts(rows: dict) -> list[str]:
    """Promoted configurations that resumed from the checkpoint their previous rung wrote on another machine."""
    return [
        f"{r.config_id} {r.resumed_from}->{r.budget} epochs on {r.host}, its previous rung on "
        f"{rows[(r.config_id, r.resumed_from)].host}"
        for r in rows.values()
        if r.rung > 0 and r.host != rows[(r.config_id, r.resumed_from)].host
    ]


def wait_for_nothing_left(out: Path, machines) -> None:
    wait_for(lambda: not processes_of(out) and not any(machines.started_through(n) for n in machines.ports), 60)


# ---------------------------------------------------------------------------------------------
# A search on two machines


@pytest.mark.slow
@pytest.mark.nni
def test_a_lost_machine_hands_its_trial_out_again_and_the_search_ends_on_the_other(
    tmp_path, machines, python_path, data, space_file
):
    """``seglib hpo --remote`` on two machines, nothing exposed; machine 2 vanishes (sshd, sessions, trial
    keeper, trial) mid-trial, its trial resumes on machine 1 from machine 2's checkpoint, and the search ends
    there with every pair of the pass once."""
    out = tmp_path / "hpo"
    started = time.time()
    driver = start_driver(out, search_args(data, space_file, machines, python_path))

    def training_on_machine_2():
        """A trial on machine 2 with an epoch done and two to go: killed before it can end."""
        for folder in (out / "trials").glob("*"):
            history = json.loads((folder / "history.json").read_text()) if (folder / "history.json").is_file() else {}
            for attempt in history.get("attempts", []):
                done = [e for e in history["epochs"] if e["trial_id"] == attempt["trial_id"]]
                budget = int(folder.name.rsplit("-b", 1)[1])
                if (
                    attempt["host"] == "machine-2"
                    and attempt["status"] == "RUNNING"
                    and 1 <= len(done) <= budget - attempt.get("initial_epoch", 0) - 2
                ):
                    return folder, attempt["trial_id"]
        return None

    folder, lost_trial = wait_for(training_on_machine_2, TIMEOUT, driver, every=0.05)
    sockets = listening(driver, machines)
    lost_at = time.time()
    machines.kill(2)
    _, err = driver.communicate(timeout=TIMEOUT)
    assert driver.returncode == 0, err[-3000:]
    print(f"HyperBand R=3, machine-2 lost at {lost_at - started:.0f} s, finished at {time.time() - started:.0f} s")

    print("listening while trials ran:", sockets)
    assert all(ip in LOOPBACK for found in sockets.values() for _, ip, _ in found), sockets
    assert all(
        any(name == "node" for name, _, _ in sockets.get(where, [])) for where in ("here", "machine-1", "machine-2")
    ), f"NNI's manager and both trial keepers should have been listening: {sockets}"
    rows = assert_each_pair_once_and_finished(out)
    for row in rows.values():
        if row.status == "SUCCEEDED" and row.attempts == 1:
            assert epochs_in_history(out, row) == list(range(row.resumed_from + 1, row.budget + 1)), row
    across = cross_machine_warm_starts(rows)
    print(f"cross-machine warm starts: {len(across)}: {across}")
    assert across, "the rung's best resumed on machine 2 from machine 1's checkpoint, before machine 2 was lost"
    state = json.loads((out / "search_state.json").read_text())
    job = next(j for j in state["jobs"] if f"{j['config_id']}-b{j['budget']:03d}" == folder.name)
    print(f"{folder.name}: lost on machine-2 ({lost_trial}), handed out again: {job.get('interruptions')}")
    assert job.get("lost") == 1 and job["status"] == "SUCCEEDED", job
    history = json.loads((folder / "history.json").read_text())
    first, last = history["attempts"][0], history["attempts"][-1]
    assert (first["trial_id"], first["host"]) == (lost_trial, "machine-2") and "ended" not in first
    assert (last["host"], last["status"]) == ("machine-1", "SUCCEEDED")
    trained_there = sum(e["trial_id"] == lost_trial for e in history["epochs"])
    assert last["initial_epoch"] == first.get("initial_epoch", 0) + trained_there, "resumed from machine-2's checkpoint"
    later = [
        a
        for path in (out / "trials").glob("*/history.json")
        for a in json.loads(path.read_text())["attempts"]
        if a["started"] > lost_at
    ]
    assert later and {a["host"] for a in later} == {"machine-1"}, later
    wait_for_nothing_left(out, machines)

    histories = {p: p.read_text() for p in sorted((out / "trials").glob("*/history.json"))}
    resumed = start_driver(out, ["--resume"])
    stdout, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "6 trials" in stdout, stdout
    assert {p: p.read_text() for p in histories} == histories, "the resume trained something again"


# ---------------------------------------------------------------------------------------------
# A connection lost while NNI's manager opens it


# What NNI 3.0's manager does (remote_v3/ssh.js): connect, then wait for 'ready' with events.once.
CONNECT_AS_NNI_DOES = """
const events = require('node:events');
const { Client } = require('ssh2');
const client = new Client();
client.connect({ host: '127.0.0.1', port: Number(process.argv[2]), username: 'alice', password: 'x' });
events.once(client, 'ready').catch((error) => console.log(`NNI sees: ${error.message}`));
"""


def resetting_server() -> tuple[socket.socket, int]:
    """A port that accepts connections and resets them before saying a word: a machine lost mid-connect."""
    server = socket.create_server(("127.0.0.1", 0))

    def reset():
        with contextlib.suppress(OSError):
            while True:
                connection, _ = server.accept()
                connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                time.sleep(0.2)  # the client has connected and is waiting for the server's header
                connection.close()

    threading.Thread(target=reset, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("guarded", [False, True], ids=["nni-alone", "with-seglibs-preload"])
def test_an_ssh_connection_reset_before_its_handshake_does_not_kill_nnis_manager(tmp_path, guarded):
    """ssh2 emits two errors (ECONNRESET, then 'Connection lost before handshake'); events.once hears the first.

    Alone, Node throws the second and the manager process dies; with seglib's preload it is reported.
    """
    nni_node = Path(importlib.util.find_spec("nni_node").origin).parent
    script = tmp_path / "connect.js"
    script.write_text(CONNECT_AS_NNI_DOES)
    preload = tmp_path / "seglib_preload.js"
    preload.write_text(manager_preload("remote", loopback=True))
    server, port = resetting_server()
    with server:
        done = subprocess.run(
            [str(nni_node / "node"), *(["--require", str(preload)] if guarded else []), str(script), str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=nni_node,  # NNI's node_modules, where the manager finds ssh2
            env={**os.environ, "NODE_PATH": str(nni_node / "node_modules")},
        )
    assert "NNI sees: read ECONNRESET" in done.stdout, done.stdout + done.stderr
    if guarded:
        assert done.returncode == 0, done.stderr
        assert done.stderr.strip() == (
            f"seglib: lost the SSH connection to alice@127.0.0.1:{port}: Connection lost before handshake"
        )
    else:
        assert done.returncode != 0 and "Error: Connection lost before handshake" in done.stderr, done.stderr


# ---------------------------------------------------------------------------------------------
# What is refused before anything starts


def seglib_hpo(out, data, *args, cwd=None) -> tuple[int, str, float]:
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seglib.cli",
            "hpo",
            "--out",
            str(out),
            "--data",
            str(data),
            "-p",
            "max_budget=1",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    return done.returncode, done.stderr, time.perf_counter() - started


def test_every_machine_runs_the_one_python_path():
    """NNI runs one trial command on every machine, naming the interpreter in full."""
    with pytest.raises(ValueError, match="python_path 'venv/bin': expected the absolute bin folder"):
        remote_training_service(["alice@gpu1"], python_path="venv/bin")
    service = remote_training_service(
        ["alice@gpu1", {"host": "gpu2", "user": "bob", "python_path": "/other/bin"}], python_path="/opt/venv/bin"
    )
    with pytest.raises(ValueError, match=r"expected one folder for all, found \['/opt/venv/bin', '/other/bin'\]"):
        build_config(ExperimentPaths.of("/shared/hpo"), {"plan": plan(profile("quick")), "search_space": {}}, service)


def test_a_relative_output_folder_is_refused(tmp_path, data):
    code, err, _ = seglib_hpo(
        "runs/hpo", data, "--remote", "alice@gpu1", "--python-path", "/opt/venv/bin", cwd=tmp_path
    )
    assert code == 1 and err.startswith(
        "seglib hpo: output folder runs/hpo: a search on several machines needs an absolute path"
    ), err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow  # starts SSH machines (sshd)
def test_a_refused_key_or_an_unreachable_machine_is_named(tmp_path, machines, python_path, data):
    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    nowhere = f"{LOGIN}@127.0.0.1:{spare_port()}"
    code, err, seconds = seglib_hpo(
        tmp_path / "hpo", data, *machines.cli_args(python_path, 1, 2, key=wrong), "--remote", nowhere
    )
    assert code == 1 and err.startswith("seglib hpo: 3 of 3 machines cannot run trials:"), err
    lines = err.strip().splitlines()[1:]
    for start in (
        f"{machines.spec(1)}: refuses the key {wrong}",
        f"{machines.spec(2)}: refuses the key {wrong}",
        f"{nowhere}: cannot connect (ssh: connect to host 127.0.0.1 port",
    ):
        assert any(line.strip().startswith(start) for line in lines), err
    assert "Traceback" not in err and seconds < 30, seconds
    assert not (tmp_path / "hpo" / "experiment.json").exists(), "nothing was started"


@pytest.mark.slow  # starts SSH machines (sshd)
@pytest.mark.parametrize(
    "python, expected",
    [
        ("/usr/bin/python3", "cannot import nni and seglib there"),
        (None, "no executable"),
    ],
)
def test_a_machine_whose_python_cannot_run_trials_is_named(tmp_path, machines, data, python, expected):
    folder = tmp_path / "bin"
    folder.mkdir()
    if python is not None:
        (folder / "python").symlink_to(python)
    code, err, _ = seglib_hpo(tmp_path / "hpo", data, *machines.cli_args(folder, 2))
    assert code == 1 and err.startswith("seglib hpo: 1 of 1 machines cannot run trials:"), err
    assert f"{machines.spec(2)}: " in err and expected in err and str(folder / "python") in err, err
    assert not (tmp_path / "hpo" / "experiment.json").exists()


@pytest.mark.slow  # starts SSH machines (sshd)
def test_notebook_03_checks_its_remote_hosts_before_searching(tmp_path, machines, python_path, data):
    """Notebook 03's REMOTE_* parameters take the same checked path as ``seglib hpo --remote``."""
    from seglib.pipeline import start_run
    from seglib.run import NotebookFailed, ensure_kernel, find_notebooks_dir, run_notebook

    wrong = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    run = start_run(tmp_path / "run", "quick", str(data))
    parameters = {
        "PROFILE": "quick",
        "OUT_DIR": str(run.paths.root),
        "REMOTE_HOSTS": [machines.spec(1)],
        "REMOTE_PYTHON_PATH": str(python_path),
        "SSH_KEY": str(wrong),
        "MANAGER_IP": "127.0.0.1",
    }
    with pytest.raises(NotebookFailed) as failed:
        run_notebook(
            find_notebooks_dir() / "03_hyperband_hpo.ipynb", tmp_path / "run" / "03.ipynb", parameters, ensure_kernel()
        )
    assert "1 of 1 machines cannot run trials" in str(failed.value), failed.value
    assert f"{machines.spec(1)}: refuses the key {wrong}" in str(failed.value), failed.value
    assert not run.paths.search("hyperband").joinpath("experiment.json").exists(), "nothing was started"
