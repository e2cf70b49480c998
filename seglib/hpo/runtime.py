"""How a trial process sets itself up: ``trial_code/settings.json`` and its environment.

Keras is imported only after the backend, thread and GPU-memory settings are in the
environment, so several trials can share one GPU or two CPU cores.
"""

from __future__ import annotations

import os
from pathlib import Path

from seglib.artifacts import ArtifactError, ExperimentPaths, read_json, write_json
from seglib.settings import Settings
from seglib.system import COMPILE_CACHE_VARIABLE


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
                    compile_cache_dir or os.environ.get(COMPILE_CACHE_VARIABLE) or paths.compile_cache
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
        env[COMPILE_CACHE_VARIABLE] = runtime["compile_cache_dir"]
    os.environ.update(env)
    return env
