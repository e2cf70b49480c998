"""Shims for NNI 3.0: its experiment-list lock without filelock's internals (filelock >= 3.12),
and a manager start that waits long enough on a busy machine.

NNI 3.0 guards ~/nni-experiments/.experiment with ``SimplePreemptiveLock``, a subclass of
``filelock.SoftFileLock`` that overrides ``_acquire``/``_release`` and records its descriptor in
``self._lock_file_fd``. From filelock 3.12 on, ``is_locked`` reads ``self._context.lock_file_fd``
instead, so ``acquire()`` never sees the lock taken and, with NNI's ``timeout=-1``, spins forever:
``Experiment.start()/run()`` hang right after "Starting web server...". NNI therefore pins
``filelock<3.12``.

This lock keeps NNI's on-disk protocol, which NNI's Node.js manager shares
(``nni_node/extensions/experiments_manager/utils.js``): a holder creates ``<file>.lock.<pid>``
with O_EXCL; anyone seeing a peer's ``<file>.lock.*`` younger than ``stale`` seconds waits.
It uses only ``os``/``glob``/``time``, so it works with any filelock version.
"""

from __future__ import annotations

import glob
import os
import time


class PreemptiveLock:
    def __init__(self, lock_file: str, stale: float = -1, poll: float = 0.05):
        self.lock_file = lock_file
        self._mine = f"{lock_file}.{os.getpid()}"
        self._stale = stale
        self._poll = poll
        self._fd: int | None = None
        self._depth = 0

    def _peer_holds(self) -> bool:
        now = time.time()
        for name in glob.glob(glob.escape(self.lock_file) + ".*"):
            try:
                age = now - os.stat(name).st_mtime
            except OSError:  # released while we looked
                continue
            if self._stale < 0 or age < self._stale:
                return True
        return False

    def acquire(self) -> PreemptiveLock:
        if self._depth:
            self._depth += 1
            return self
        while True:
            if not self._peer_holds():
                try:
                    self._fd = os.open(self._mine, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_TRUNC)
                except OSError:
                    pass
                else:
                    self._depth = 1
                    return self
            time.sleep(self._poll)

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth:
            return
        os.close(self._fd)
        self._fd = None
        try:
            os.remove(self._mine)
        except OSError:
            pass

    @property
    def is_locked(self) -> bool:
        return self._depth > 0

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def get_file_lock(path: str, stale: float = -1) -> PreemptiveLock:
    return PreemptiveLock(path + ".lock", stale=stale)


def patch_nni_file_lock() -> bool:
    """Route NNI 3.0's experiment-list lock through :class:`PreemptiveLock` when filelock >= 3.12.

    Returns True when it patched. Idempotent; a no-op with filelock < 3.12 (NNI's own lock works).
    """
    from importlib.metadata import version

    from packaging.version import Version

    if Version(version("filelock")) < Version("3.12"):
        return False
    from nni.tools.nnictl import common_utils, config_utils

    common_utils.get_file_lock = get_file_lock
    config_utils.get_file_lock = get_file_lock  # config_utils imported the name
    return True


MANAGER_START_SECONDS = 60  # how long to wait for NNI's manager to answer after it is started


def patch_nni_manager_wait(seconds: int = MANAGER_START_SECONDS) -> None:
    """Give NNI's manager ``seconds`` to answer its first status request.

    NNI 3.0 asks three times a second apart, then stops the experiment ("Create experiment
    failed ... Connection refused"): on a loaded machine Node.js takes longer than that to
    start. The same check, with more tries. Idempotent.
    """
    from nni.experiment import launcher

    original = getattr(launcher._check_rest_server, "seglib_original", launcher._check_rest_server)

    def check(port: int, retry: int = 3, url_prefix: str | None = None) -> None:
        original(port, retry=max(retry, seconds), url_prefix=url_prefix)

    check.seglib_original = original
    launcher._check_rest_server = check
