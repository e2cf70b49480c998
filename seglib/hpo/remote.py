"""NNI's remote (SSH) training service for several machines, with the shared storage warm start needs.

A promoted configuration resumes from its checkpoint of the previous rung, which may have
been written on another machine; and the tuner reads trials' result files. So the output
folder must be shared storage (NFS, a cluster file system) mounted at the SAME absolute path
on the machine that runs the experiment and on every trial machine. seglib does not move
files between machines: it checks the paths and lets NNI start trials over SSH.

    hosts = ["alice@gpu1", "alice@gpu2:2222"]
    service = remote_training_service(hosts, python_path="/opt/venv/bin")
    hpo.run("/shared/runs/hpo", settings, training_service=service, nni_manager_ip="10.0.0.5")

The web UI of a remote experiment must be reachable by the trial machines (NNI's manager
port and the next one), so it cannot be bound to localhost: keep those ports firewalled to
the cluster's private network, and view the UI through ``ssh -L``.
"""

from __future__ import annotations

import re
from pathlib import Path

HOST_PATTERN = re.compile(r"^(?:(?P<user>[^@:\s]+)@)?(?P<host>[^@:\s]+)(?::(?P<port>\d+))?$")


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


def remote_training_service(hosts, *, python_path: str | None = None, ssh_key_file: str = "~/.ssh/id_rsa",
                            default_user: str | None = None, gpus_per_trial: int | None = None,
                            trials_per_gpu: int = 1, use_active_gpu: bool = True, reuse_mode: bool = False):
    """NNI's ``RemoteConfig`` for ``hosts`` (strings ``user@host[:port]`` or dicts of its fields).

    ``python_path`` is the folder of the Python that has seglib on the trial machines (NNI
    prepends it to PATH; the trial command runs ``python3 -m seglib.hpo.trial``).
    ``gpus_per_trial``/``trials_per_gpu`` let NNI place trials on GPUs (e.g. 1 and 4: four
    trials share each GPU, as seglib's trials size their memory for).
    """
    from nni.experiment.config import RemoteConfig, RemoteMachineConfig

    machines = []
    for spec in hosts:
        fields = parse_host(spec, default_user)
        fields.setdefault("ssh_key_file", ssh_key_file)
        fields.setdefault("use_active_gpu", use_active_gpu)
        if python_path is not None:
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


def remote_experiment_config(out_dir, hosts, *, nni_manager_ip: str, settings=None, tuner: str = "hyperband",
                             space: dict | None = None, **service_args):
    """The complete NNI ``ExperimentConfig`` a remote search in ``out_dir`` would run.

    Builds nothing on disk but ``out_dir/trial_code`` (NNI requires the trial code folder to
    exist); :func:`seglib.hpo.run` with ``training_service=`` writes the rest.
    """
    from seglib.artifacts import ExperimentPaths
    from seglib.hpo.engines.nni import build_config
    from seglib.hpo.search import plan
    from seglib.hpo.space import search_space
    from seglib.settings import profile

    settings = profile("quick") if settings is None else settings
    paths = ExperimentPaths.of(out_dir)
    paths.trial_code.mkdir(parents=True, exist_ok=True)
    record = {"plan": plan(settings, tuner), "search_space": space or search_space()}
    return build_config(paths, record, remote_training_service(hosts, **service_args), nni_manager_ip)


def check_shared_path(out_dir) -> Path:
    """The absolute output path every machine must see; refuse relative or home-relative ones."""
    path = Path(out_dir).expanduser()
    if not path.is_absolute():
        raise ValueError(f"{out_dir}: a multi-machine experiment needs an absolute path on shared storage")
    return path
