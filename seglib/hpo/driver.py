"""Who runs a folder's search: one driver at a time, recorded in ``driver.lock``.

The driver is the process that called ``seglib.hpo.tune`` (the CLI, a notebook's kernel).
The lock file holds its pid and host, so a second driver is refused with a message naming
the first, ``stop`` can ask it to end, and the NNI tuner can stop the experiment when its
driver is gone.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import time
from pathlib import Path

from seglib.artifacts import ExperimentPaths
from seglib.system import machine_name

STOP_WAIT_SECONDS = 120.0
# A driver writes its record just after it takes the lock and empties it just before it lets
# go: a lock held with no record is one of those moments, so look again this long.
RECORD_WAIT_SECONDS = 2.0


class SearchRunning(RuntimeError):
    """Another driver is running the search in this folder."""


class DriverLock:
    """Held by the process running a folder's search; records its pid and host for others.

    An advisory ``flock`` where the file system has one; where it has none (some network
    and FUSE mounts) the recorded pid is checked instead. The NNI tuner reads the same file
    to stop the experiment when its driver is gone.
    """

    def __init__(self, paths: ExperimentPaths):
        self.paths, self.fd = paths, None

    def __enter__(self) -> DriverLock:
        self.paths.root.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + RECORD_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = driver(self.paths)
                if holder is not None or time.monotonic() > deadline:
                    self._refuse(holder or {})
                time.sleep(0.05)
            except OSError:  # no flock on this file system: trust the recorded pid
                holder = driver(self.paths)
                if holder is not None:
                    self._refuse(holder)
                break
        record = {"pid": os.getpid(), "host": machine_name(), "started": time.time()}
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, (json.dumps(record) + "\n").encode(), 0)
        return self

    def _refuse(self, holder: dict) -> None:
        os.close(self.fd)
        self.fd = None
        since = time.strftime("%H:%M:%S", time.localtime(holder.get("started", 0)))
        raise SearchRunning(
            f"the search in {self.paths.root} is running in process {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} (since {since}): wait for it, or stop it with "
            f"`seglib hpo --out {self.paths.root} --stop`"
        )

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def driver(paths: ExperimentPaths) -> dict | None:
    """The live driver of ``paths``' search (pid, host, started), or None."""
    try:
        text = Path(paths.lock_file).read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    if holder.get("host") != machine_name():
        return holder  # another machine's: cannot be checked from here
    try:
        os.kill(int(holder["pid"]), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return holder


def stop(out_dir, wait: float = STOP_WAIT_SECONDS) -> dict | None:
    """Ask the driver of ``out_dir``'s search to stop (as Ctrl-C would); wait for it to end.

    Returns the driver that was stopped, or None when none was running. Its trials are
    handed out again when the search is resumed.
    """
    paths = ExperimentPaths.of(out_dir)
    holder = driver(paths)
    if holder is None:
        return None
    if holder.get("host") != machine_name():
        raise SearchRunning(f"the search in {paths.root} runs on {holder['host']}: stop it there")
    os.kill(int(holder["pid"]), signal.SIGTERM)
    deadline = time.time() + wait
    while driver(paths) is not None:
        if time.time() > deadline:
            raise TimeoutError(f"the driver (pid {holder['pid']}) of {paths.root} did not stop within {wait:.0f} s")
        time.sleep(0.5)
    return holder
