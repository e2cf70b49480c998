"""Third-party start-up noise kept off the user's screen; our own lines and real errors pass.

TensorFlow 2.20+ writes its C++ start-up lines (oneDNN, CUDA probing on CPU machines, absl's
"before InitializeLog" notice) straight to file descriptor 2 before any of its logging
settings apply, and warns each time a search's next trial traces its prediction step for a
new batch shape (expected: every trial has its own batch size); ipykernel warns on every
kernel start that it runs over local TCP (as every Jupyter kernel does; the ports are bound
to 127.0.0.1), and logs an ERROR at every kernel's end because jupyter_client interrupts a
kernel before asking it to shut down. A command stopped by Ctrl-C or SIGTERM says so in one
line of its own, yet its kernels print a traceback each when the signal finds one starting
(a KeyboardInterrupt in the middle of its imports) or answering on sockets its parent has
already closed (ZMQError ENOTSOCK). :func:`quiet_stderr` passes the process's descriptor 2
through a filter (:class:`Filter`) that drops exactly these lines and tracebacks; everything
else (other tracebacks, warnings of ours, errors) is written unchanged. ``SEGLIB_VERBOSE=1``
turns it off.
Imports nothing of seglib.
"""

from __future__ import annotations

import atexit
import os
import re
import threading

NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port|cudart_stub|cpu_feature_guard|cpu_allocator_impl)\.cc:\d+\]"
    r"|E\d{4} [\d:. ]+\d+ cuda_(platform|executor|driver)\.cc:\d+\] failed call to cuInit"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|\[IPKernelApp\] WARNING \| Kernel is running over TCP without encryption"
    r"|\[IPKernelApp\] ERROR \| KeyboardInterrupt caught in kernel\.?$"
    r"|oneDNN custom operations are on"
    r"|WARNING:tensorflow:\d+ out of the last \d+ calls to .* triggered tf\.function retracing)"
)
# A traceback (or ipykernel's logged one) is held until its last line says what ended it.
TRACEBACK_START = re.compile(
    r"^(Traceback \(most recent call last\):|\[IPKernelApp\] ERROR \| Exception in message handler:"
    r"|Fatal Python error: init_import_site: Failed to import the site module)$"
)
TRACEBACK_GOES_ON = re.compile(r"^(Traceback \(most recent call last\):|Python runtime state: \w+)$")
STOPPED = re.compile(r"^(KeyboardInterrupt\b.*|zmq\.error\.ZMQError: Socket operation on non-socket)$")
# Python's joint between chained exceptions: a signal landing in an import's own `except` prints
# importlib's KeyError first, then this, then the KeyboardInterrupt; the chain is one traceback.
CHAINED = re.compile(
    r"^(During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)$"
)
_installed = False


class Filter:
    """Lines in, lines out: the noise dropped, and a traceback dropped whole when it ends in a stop.

    A chain of tracebacks is judged by its last exception, the one that ended the process; so a
    finished traceback is held until the next line shows whether another is chained to it.
    """

    def __init__(self):
        self.held: list[str] = []
        self.last: str | None = None  # the held traceback's exception line, once it has one

    def feed(self, lines: list[str]) -> list[str]:
        kept = []
        for line in lines:
            if self.held and self.last is not None:
                if not line.strip() or CHAINED.match(line):
                    self.held.append(line)
                    if line.strip():
                        self.last = None
                    continue
                kept += self._release()
            if self.held:
                self.held.append(line)
                if line.strip() and not line[0].isspace() and not TRACEBACK_GOES_ON.match(line):
                    self.last = line  # the exception's own line, last of the traceback
            elif TRACEBACK_START.match(line):
                self.held = [line]
            elif not NOISE.match(line):
                kept.append(line)
        return kept

    def flush(self) -> list[str]:
        """What is still held at the end (a traceback cut short, or a real one): written, not lost."""
        return self._release()

    def _release(self) -> list[str]:
        block, last = self.held, self.last
        self.held, self.last = [], None
        return [] if last is not None and STOPPED.match(last) else block


def quiet_stderr() -> bool:
    """Filter this process's stderr (fd 2) from now on; returns whether a filter was installed."""
    global _installed
    if _installed or os.environ.get("SEGLIB_VERBOSE") == "1":
        return False
    try:
        original = os.dup(2)
        read_end, write_end = os.pipe()
        os.dup2(write_end, 2)
        os.close(write_end)
    except OSError:
        return False
    pump = threading.Thread(target=_pump, args=(read_end, original), name="seglib-stderr-filter", daemon=True)
    pump.start()
    atexit.register(_restore, original, pump)
    _installed = True
    return True


def _restore(original: int, pump: threading.Thread) -> None:
    """At exit: give fd 2 back (closing the pipe) and let the filter write what is left, e.g.
    the traceback of an uncaught exception, which Python prints before exit handlers run."""
    os.dup2(original, 2)
    pump.join(timeout=5)


def _pump(read_end: int, original: int) -> None:
    """Copy lines from the pipe to the real stderr, dropping the known noise."""
    pending, noise = b"", Filter()
    while True:
        chunk = os.read(read_end, 65536)
        if not chunk:
            break
        pending += chunk
        *lines, pending = pending.split(b"\n")
        kept = noise.feed([line.decode("utf-8", "replace") for line in lines])
        if kept:
            os.write(original, "\n".join(kept).encode() + b"\n")
    held = noise.flush()
    if held:
        os.write(original, "\n".join(held).encode() + b"\n")
    if pending:
        os.write(original, pending)
