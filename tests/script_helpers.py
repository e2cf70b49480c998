"""Helpers for tests that run a Python script in a fresh process (another Keras backend, JAX)."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def run_python(code: str, *args: str, backend: str, extra_env: dict | None = None, timeout=240) -> dict:
    """The JSON that ``code`` (run with ``args`` under ``backend``) prints on its last line."""
    env = {**os.environ, "KERAS_BACKEND": backend, **(extra_env or {})}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
