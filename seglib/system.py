"""What this machine is: the hardware and Keras backend a run's stamp names. No Keras import."""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import subprocess
from pathlib import Path


def gpu_name() -> str | None:
    """The first NVIDIA GPU's name from nvidia-smi, or None when there is none."""
    if shutil.which("nvidia-smi") is None:
        return None
    result = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    names = [line.strip() for line in result.stdout.splitlines() if line.strip()]
    return names[0] if result.returncode == 0 and names else None


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (Linux), else platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware() -> str:
    """A short description of this machine: the GPU's name if any, else CPU model and cores."""
    gpu = gpu_name()
    if gpu:
        return f"GPU {gpu}"
    return f"CPU {cpu_model()} ({os.cpu_count() or 1} cores)"


def keras_backend() -> str:
    """The Keras backend this process will use, without importing Keras."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend:
        return backend
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


HOST_VARIABLE = "SEGLIB_HOST"  # names this machine in records when set
COMPILE_CACHE_VARIABLE = "SEGLIB_COMPILE_CACHE"  # JAX's persistent compilation cache, shared by experiments


def machine_name() -> str:
    """This machine's name in trial and driver records: ``$SEGLIB_HOST`` if set, else its host name.

    Machines can share a host name (containers, cloned VMs, SSH servers on one box); setting
    SEGLIB_HOST on each (sshd_config ``SetEnv``, or the login environment) tells them apart.
    """
    return os.environ.get(HOST_VARIABLE) or socket.gethostname()
