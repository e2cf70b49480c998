"""A search on several machines: NNI's remote (SSH) training service, checked before it starts.

A promoted configuration resumes from its checkpoint of the previous rung, which may have
been written on another machine; and the tuner reads trials' result files. So the output
folder must be shared storage (NFS, a cluster file system) mounted at the SAME absolute path
on the machine that runs the experiment and on every trial machine. seglib does not move
files between machines: it checks the machines and lets NNI start trials over SSH.

    service = remote_training_service(["alice@gpu1", "alice@gpu2:2222"], python_path="/opt/venv/bin")
    remote.tune_remote("/shared/runs/hpo", settings, service=service, nni_manager_ip="10.0.0.5")

NNI reports a refused key, a missing Python or a failed ``pip install nni`` without naming
the machine, and the whole experiment dies; :func:`tune_remote` first logs in to each machine itself
(:func:`check_machines`) and refuses with one line per machine that cannot run trials.

The web UI of a remote experiment must be reachable by the trial machines (NNI's manager
port), so unless they reach it at 127.0.0.1 it cannot be bound to localhost: keep that port
firewalled to the cluster's private network, and view the UI through ``ssh -L``.
"""

from __future__ import annotations

import re
import secrets
import shlex
import subprocess
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path, PurePosixPath

from seglib.artifacts import ExperimentPaths
from seglib.hpo import search

HOST_PATTERN = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")
CHECK_SECONDS = 10  # SSH connect timeout of the check; a machine's whole check gets 6 times this
# Run on each machine by ``sh -c``: one word for what is wrong (the messages are in Python).
CHECK_SCRIPT = r"""python="$1/python" out="$2" mark="$3"
[ -x "$python" ] || { echo NO_PYTHON; exit 0; }
[ -d "$out" ] || { echo NO_FOLDER; exit 0; }
[ -f "$out/$mark" ] || { echo OTHER_FOLDER; exit 0; }
probe="$out/.seglib-probe-$$"
( : > "$probe" ) 2>/dev/null || { echo READ_ONLY "$(id -un)"; exit 0; }
rm -f "$probe"
error=$("$python" -c 'import nni, seglib.hpo.trial_process' 2>&1) ||
    { echo IMPORT "$(printf '%s' "$error" | tail -n 1)"; exit 0; }
echo OK
"""


def parse_host(spec: str | dict, default_user: str | None = None) -> dict:
    """``"user@host:port"`` (user and port optional) or a dict -> RemoteMachineConfig fields."""
    if isinstance(spec, dict):
        fields = dict(spec)
    else:
        match = HOST_PATTERN.match(spec.strip())
        if not match:
            raise ValueError(f"remote host {spec!r}: expected 'user@host' or 'user@host:port'")
        fields = {k: v for k, v in match.groupdict().items() if v is not None}
    fields.setdefault("user", default_user)
    if not fields.get("user"):
        raise ValueError(f"remote host {spec!r}: no user; write 'user@host' or pass default_user")
    if "port" in fields:
        fields["port"] = int(fields["port"])
    return fields


def remote_training_service(
    hosts,
    *,
    python_path: str,
    ssh_key_file: str = "~/.ssh/id_rsa",
    default_user: str | None = None,
    gpus_per_trial: int | None = None,
    trials_per_gpu: int = 1,
    use_active_gpu: bool = True,
    reuse_mode: bool = False,
):
    """NNI's ``RemoteConfig`` for ``hosts`` (strings ``user@host[:port]`` or dicts of its fields).

    ``python_path`` is the absolute bin folder of the Python that has seglib and nni, the
    same on every trial machine: NNI runs ``python`` from it, and so do seglib's trials.
    ``gpus_per_trial``/``trials_per_gpu`` let NNI place trials on GPUs (e.g. 1 and 4: four
    trials share each GPU, as seglib's trials size their memory for).
    """
    from nni.experiment.config import RemoteConfig, RemoteMachineConfig

    if not PurePosixPath(python_path).is_absolute():
        raise ValueError(
            f"python_path {python_path!r}: expected the absolute bin folder of the Python with seglib "
            "and nni on every machine, e.g. /opt/venv/bin"
        )
    machines = []
    for spec in hosts:
        fields = parse_host(spec, default_user)
        fields.setdefault("ssh_key_file", ssh_key_file)
        fields.setdefault("use_active_gpu", use_active_gpu)
        fields.setdefault("python_path", python_path)
        if gpus_per_trial:
            fields.setdefault("max_trial_number_per_gpu", trials_per_gpu)
        machines.append(RemoteMachineConfig(**fields))
    if not machines:
        raise ValueError("remote_training_service: no hosts given")
    service = RemoteConfig(machine_list=machines, reuse_mode=reuse_mode)
    if gpus_per_trial:
        service.trial_gpu_number = gpus_per_trial
    return service


def remote_experiment_config(
    out_dir,
    hosts,
    *,
    nni_manager_ip: str,
    settings=None,
    tuner: str = "hyperband",
    space: dict | None = None,
    **service_args,
):
    """The complete NNI ``ExperimentConfig`` a remote search in ``out_dir`` would run.

    Builds nothing on disk but ``out_dir/trial_code`` (NNI requires the trial code folder to
    exist); :func:`run` writes the rest.
    """
    from seglib.hpo.engines.nni import build_config
    from seglib.hpo.space import search_space
    from seglib.settings import profile

    settings = profile("quick") if settings is None else settings
    paths = ExperimentPaths.of(out_dir)
    paths.trial_code.mkdir(parents=True, exist_ok=True)
    record = {"plan": search.plan(settings, tuner), "search_space": space or search_space()}
    return build_config(paths, record, remote_training_service(hosts, **service_args), nni_manager_ip)


def tune_remote(
    out_dir, settings=None, tuner: str = "hyperband", *, service, nni_manager_ip: str | None = None, **run_args
):
    """:func:`seglib.hpo.tune` with its trials on the machines of ``service``, each checked first.

    ``nni_manager_ip`` is this machine's address as the trial machines reach it (NNI guesses
    one if None). ``run_args`` go to :func:`seglib.hpo.tune` (resume, space, timeout, ...).
    """
    if settings is not None and settings.engine != "nni":
        raise ValueError(
            f"a search on several machines runs on the nni engine; the settings say engine={settings.engine!r}"
        )
    root = check_shared_path(out_dir)
    check_machines(service, root)
    return search.tune(root, settings, tuner, training_service=service, nni_manager_ip=nni_manager_ip, **run_args)


def searcher(hosts, *, python_path: str | None, ssh_key: str | None = None, manager_ip: str | None = None):
    """:func:`seglib.hpo.tune`, or with ``hosts`` :func:`tune_remote` on those machines.

    The one place that checks the CLI's ``--remote`` and notebook 03's ``REMOTE_HOSTS``, so the
    messages name both spellings.
    """
    if not hosts:
        if python_path or ssh_key or manager_ip:
            raise ValueError(
                "--python-path, --ssh-key and --manager-ip (notebook 03: REMOTE_PYTHON_PATH, SSH_KEY, MANAGER_IP) "
                "go with --remote USER@HOST[:PORT] (REMOTE_HOSTS); none given"
            )
        return search.tune
    if not python_path:
        raise ValueError(
            "--remote (notebook 03: REMOTE_HOSTS) needs --python-path (REMOTE_PYTHON_PATH): the bin folder of "
            "the Python with seglib and nni on every machine, e.g. /opt/venv/bin"
        )
    service = remote_training_service(hosts, python_path=python_path, **({"ssh_key_file": ssh_key} if ssh_key else {}))
    return partial(tune_remote, service=service, nni_manager_ip=manager_ip)


def check_shared_path(out_dir) -> Path:
    """The absolute output path every machine must see; refuse a relative one."""
    path = Path(out_dir).expanduser()
    if not path.is_absolute():
        raise ValueError(
            f"output folder {out_dir}: a search on several machines needs an absolute path, on shared "
            "storage mounted at that same path on every machine (e.g. /shared/runs/hpo)"
        )
    return path


def check_machines(service, out_dir, timeout: int = CHECK_SECONDS) -> None:
    """Log in to every machine of ``service`` over SSH and check it can run this search's trials.

    Checked as NNI will use them (the machine's key, BatchMode: never a prompt): the login;
    ``python`` in its ``python_path``, importing nni and seglib; ``out_dir`` there being the
    folder this machine sees (a file written here is read there) and writable. NNI's own
    SSH client checks no host key, so this is the only check: a machine's key is learnt into
    ``out_dir/nni/known_hosts`` the first time and a changed one is refused afterwards (as is
    one that contradicts your ~/.ssh/known_hosts). Raises ValueError with one line per machine
    that fails.
    """
    paths = ExperimentPaths.of(out_dir)
    paths.nni_dir.mkdir(parents=True, exist_ok=True)
    mark = paths.root / f".seglib-check-{secrets.token_hex(8)}"
    mark.write_text("written by the machine that starts the search; read by each trial machine\n")
    try:
        with ThreadPoolExecutor(max_workers=len(service.machine_list)) as pool:
            problems = list(pool.map(lambda m: _check_machine(m, paths, mark.name, timeout), service.machine_list))
    finally:
        mark.unlink(missing_ok=True)
    problems = [p for p in problems if p]
    if problems:
        raise ValueError(
            f"{len(problems)} of {len(service.machine_list)} machines cannot run trials:\n  " + "\n  ".join(problems)
        )


def _check_machine(machine, paths: ExperimentPaths, mark: str, timeout: int) -> str | None:
    """What keeps ``machine`` from running trials, in one line that names it; None when nothing."""
    name = f"{machine.user}@{machine.host}:{machine.port}"
    key = Path(machine.ssh_key_file).expanduser()
    if not key.is_file():
        return f"{name}: SSH key {key} not found here"
    python = PurePosixPath(machine.python_path) / "python"
    known_hosts = paths.nni_dir / "known_hosts"
    command = [
        "ssh",
        "-p",
        str(machine.port),
        "-i",
        str(key),
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"ConnectTimeout={timeout}",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "StrictHostKeyChecking=accept-new",
        "-o",
        f'UserKnownHostsFile="{known_hosts}" ~/.ssh/known_hosts',
        f"{machine.user}@{machine.host}",
        "sh -c "
        + shlex.quote(CHECK_SCRIPT)
        + " seglib-check "
        + " ".join(shlex.quote(str(a)) for a in (machine.python_path, paths.root, mark)),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=6 * timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return f"{name}: cannot check it: no `ssh` command here (install the OpenSSH client)"
    except subprocess.TimeoutExpired:
        return f"{name}: no answer within {6 * timeout} s"
    if done.returncode == 255:  # ssh's own failure: the connection, the host key or the login
        why = (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
        if "Permission denied" in why:
            return (
                f"{name}: refuses the key {key} ({why}); add {key}.pub to {machine.user}'s ~/.ssh/authorized_keys there"
            )
        if "Host key verification failed" in done.stderr:
            return (
                f"{name}: its host key is not the one {known_hosts} or ~/.ssh/known_hosts holds; if the machine "
                f"was reinstalled, remove its line (ssh-keygen -R '[{machine.host}]:{machine.port}' -f FILE)"
            )
        return f"{name}: cannot connect ({why}); check the host name, the port and that sshd runs there"
    word, _, detail = (done.stdout.strip().splitlines() or [""])[-1].partition(" ")
    folder = f"the output folder must be shared storage mounted at {paths.root} on every machine"
    return {
        "OK": None,
        "NO_PYTHON": f"{name}: no executable {python} there: python_path must be the bin folder of the Python with "
        "seglib and nni on every machine (NNI runs `python` from it, and without one pip-installs nni "
        "into whichever Python it finds)",
        "NO_FOLDER": f"{name}: {paths.root} does not exist there; {folder}",
        "OTHER_FOLDER": f"{name}: {paths.root} there is not the folder of this machine (a file written here is not "
        f"there); {folder}",
        "READ_ONLY": f"{name}: {paths.root} is not writable there by {detail}",
        "IMPORT": f"{name}: {python} cannot import nni and seglib there ({detail}); install seglib and nni 3.0 in "
        "that environment",
    }.get(
        word, f"{name}: the check did not run (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-300:]}"
    )
