"""Notebooks 01 -> 04 executed headless by papermill, into one run folder (``seglib run``).

Each notebook runs in a kernel of this interpreter with the same parameters (profile,
overrides, run folder, data, docs folder); the executed copies stay in the run folder, and a
failing cell stops the run with the notebook, the cell and the error named. A folder holding
another run is refused before any notebook executes, so a refused command writes nothing.
While a notebook runs, its sections, the search's live line and a heartbeat are printed
(:class:`Progress`): no long step is silent.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import seglib
from seglib.artifacts import RunPaths, read_run, write_json

NOTEBOOKS = ("01_data", "02_baseline", "03_hyperband_hpo", "04_report")
KERNEL_NAME = "seglib-python"
TIMINGS_FILE = "timings.json"  # seconds per notebook, beside them in the run folder
CHILDREN_GRACE_SECONDS = 30.0  # after an interruption: time for kernels to save their state and end
HEARTBEAT_SECONDS = 30.0  # a line at least this often while a notebook runs
LIVE_LINE_SECONDS = 10.0  # the search's live line, printed at most this often
PREFIX = "[seglib run]"


class NotebookFailed(RuntimeError):
    """A notebook raised: names the notebook, the cell and the error."""


def find_notebooks_dir(start: Path | None = None) -> Path:
    """The repository's ``notebooks/`` folder (seglib is installed editable from the checkout)."""
    folder = Path(start) if start else Path(seglib.__file__).resolve().parents[1] / "notebooks"
    missing = [name for name in NOTEBOOKS if not (folder / f"{name}.ipynb").is_file()]
    if missing:
        raise FileNotFoundError(
            f"notebooks not found: expected {', '.join(n + '.ipynb' for n in NOTEBOOKS)} in {folder}; "
            "install seglib editable from a checkout (pip install -e .) or pass --notebooks DIR"
        )
    return folder


def ensure_kernel(prefix: Path | None = None) -> str:
    """A Jupyter kernel that runs this interpreter (ipykernel's own installer); returns its name.

    The spec lives in a private prefix of this interpreter's own, put first on JUPYTER_PATH:
    a user-wide ``python3`` kernel, or another environment's ``seglib run`` at the same time,
    can never hand the notebooks a kernel of another Python, and nothing outside that folder
    is written.
    """
    from ipykernel.kernelspec import install

    interpreter = hashlib.blake2b(sys.executable.encode(), digest_size=6).hexdigest()
    prefix = Path(prefix or Path(tempfile.gettempdir()) / f"seglib-jupyter-{os.getuid()}" / interpreter)
    install(kernel_name=KERNEL_NAME, prefix=str(prefix), display_name=f"seglib ({sys.executable})")
    data_dir = str(prefix / "share" / "jupyter")
    paths = os.environ.get("JUPYTER_PATH", "")
    if data_dir not in paths.split(os.pathsep):
        os.environ["JUPYTER_PATH"] = os.pathsep.join([data_dir, *filter(None, [paths])])
    return KERNEL_NAME


def notebook_parameters(path: Path) -> set[str]:
    """Names defined in a notebook's ``parameters`` cell."""
    import papermill

    return set(papermill.inspect_notebook(str(path)))


class Progress:
    """What ``seglib run`` prints while one notebook executes.

    Each ``## `` section as the notebook enters it, the search's live line (the display that a
    notebook updates in place, at most every LIVE_LINE_SECONDS), and after HEARTBEAT_SECONDS
    without a line, how long the current step has been running. With ``stream`` the cells'
    own output (prints, Keras' epochs) is passed through as well (``--log-output``).
    """

    def __init__(self, notebook: str, stream: bool = False, heartbeat: float | None = None, out=None):
        self.notebook, self.stream, self.heartbeat = notebook, stream, heartbeat or HEARTBEAT_SECONDS
        self.out = out or sys.stdout
        self.section, self.cell_index = None, None
        self.step_started = self.last_line = time.monotonic()
        self.live_printed, self.live_pending = 0.0, None
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name="seglib-run-heartbeat", daemon=True)

    def __enter__(self):
        self._beat.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._beat.join(timeout=5)
        self._flush_live()

    @property
    def where(self) -> str:
        return f"{self.notebook} · {self.section}" if self.section else self.notebook

    def say(self, text: str) -> None:
        with self._lock:
            self.out.write(f"{PREFIX} {text}\n")
            self.out.flush()
            self.last_line = time.monotonic()

    def cell_started(self, cell=None, cell_index=None, **_) -> None:
        """nbclient's ``on_cell_start``: a ``## `` heading starts a step."""
        self.cell_index = cell_index
        first = (cell.source.lstrip().splitlines() or [""])[0] if cell is not None else ""
        if cell is not None and cell.cell_type == "markdown" and first.startswith("## "):
            self._flush_live()
            self.section = first[3:].strip()
            self.step_started = time.monotonic()
            self.say(f"{self.where} ...")

    def message(self, msg: dict) -> None:
        """Every output message of the kernel: the live line, and the cells' output with ``stream``."""
        kind, content = msg.get("msg_type"), msg.get("content") or {}
        if kind == "stream" and self.stream:
            from seglib.noise import NOISE

            kept = [line for line in content.get("text", "").splitlines(True) if not NOISE.match(line)]
            with self._lock:
                self.out.write("".join(kept))
                self.out.flush()
                self.last_line = time.monotonic()
        elif kind in ("display_data", "update_display_data") and (content.get("transient") or {}).get("display_id"):
            text = (content.get("data") or {}).get("text/plain")
            if text:
                self.live_pending = _unquote(text)
                if time.monotonic() - self.live_printed >= LIVE_LINE_SECONDS:
                    self._flush_live()

    def _flush_live(self) -> None:
        line, self.live_pending = self.live_pending, None
        if line:
            self.live_printed = time.monotonic()
            self.say(f"{self.where}: {line}")

    def _heartbeat(self) -> None:
        while not self._done.wait(min(5.0, self.heartbeat)):
            if time.monotonic() - self.last_line >= self.heartbeat:
                if self.live_pending:
                    self._flush_live()
                else:
                    self.say(f"{self.where}: running for {time.monotonic() - self.step_started:.0f} s")


def _unquote(text: str) -> str:
    """A displayed string's text/plain is its repr: the string itself."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, str) else text


@functools.cache
def _engine():
    """papermill's nbclient engine with a client that hands every kernel message to a watcher
    (papermill's documented extension point: an engine registered by name)."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import NBClientEngine
    from papermill.log import logger
    from traitlets import Callable

    class Client(PapermillNotebookClient):
        on_message = Callable(default_value=None, allow_none=True)

        def process_message(self, msg, cell, cell_index):
            if self.on_message is not None:
                self.on_message(msg)
            return super().process_message(msg, cell, cell_index)

    class Engine(NBClientEngine):
        @classmethod
        def execute_managed_notebook(
            cls, nb_man, kernel_name, start_timeout=60, execution_timeout=None, log_output=False, **kwargs
        ):
            for unused in ("input_path", "timeout", "startup_timeout", "stdout_file", "stderr_file"):
                kwargs.pop(unused, None)
            client = Client(
                nb_man,
                timeout=execution_timeout,
                startup_timeout=start_timeout,
                kernel_name=kernel_name,
                log=logger,
                **kwargs,
            )
            return client.execute()

    return Engine


ENGINE_NAME = "seglib"


def run_notebook(source: Path, target: Path, parameters: dict, kernel: str, log_output: bool = False) -> None:
    """Execute one notebook with papermill, printing its progress; raise NotebookFailed naming
    the notebook and the cell (a cell that raised, or a kernel that died or never started)."""
    import papermill
    from nbclient.exceptions import DeadKernelError
    from papermill.engines import papermill_engines
    from papermill.exceptions import PapermillExecutionError

    papermill_engines.register(ENGINE_NAME, _engine())
    accepted = {k: v for k, v in parameters.items() if k in notebook_parameters(source)}
    progress = Progress(source.stem, stream=log_output)
    try:
        with progress:
            papermill.execute_notebook(
                str(source),
                str(target),
                parameters=accepted,
                kernel_name=kernel,
                engine_name=ENGINE_NAME,
                cwd=str(target.parent),
                progress_bar=False,
                on_cell_start=progress.cell_started,
                on_message=progress.message,
            )
    except PapermillExecutionError as error:
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"notebook {source.name} failed in cell {error.cell_index} (execution count {error.exec_count}, "
            f"starting {first_line!r}): {error.ename}: {error.evalue}. Executed copy: {target}"
        ) from None
    except DeadKernelError:
        raise NotebookFailed(
            f"notebook {source.name}: its kernel died in cell {progress.cell_index} ({progress.where}); the machine "
            f"may have run out of memory (check `dmesg` or the system log). Run the same command again to continue "
            f"from what was saved. Executed copy: {target}"
        ) from None
    except (RuntimeError, TimeoutError) as error:  # nbclient: a kernel that did not start or answer
        raise NotebookFailed(f"notebook {source.name}: {error}. Executed copy: {target}") from None


def check_run_folder(out_dir: Path, profile: str, data: str | None, overrides: dict) -> None:
    """Refuse a folder holding another run before any notebook executes (nothing is written).

    Notebook 01 would refuse it too (``pipeline.start_run``), but only after papermill had
    replaced the good run's executed notebook with the refusal. ``data`` "kaggle" is resolved
    by the download in notebook 01, so it is taken to be the folder's own Kaggle copy here.
    """
    from seglib.pipeline import start_run

    if not RunPaths.of(out_dir).run_file.is_file():
        return
    existing = read_run(out_dir).settings
    if data == "kaggle" and existing.data is not None:
        data = existing.data
    start_run(out_dir, profile, data, overrides)  # raises RunMismatch; writes nothing when run.json exists


def run_pipeline(
    out_dir,
    profile: str = "quick",
    data: str | None = None,
    overrides: dict | None = None,
    notebooks_dir: Path | None = None,
    docs_dir: Path | None = None,
    log_output: bool = False,
    command: str | None = None,
) -> list[Path]:
    """Execute 01 -> 04 into ``out_dir``; return the executed notebooks' paths.

    The settings, and a run folder holding another run, are checked here first, so a bad
    value or the wrong folder fails before any kernel starts and writes nothing.
    """
    from seglib.settings import profile as resolve

    resolve(profile, **dict(overrides or {}))
    out_dir = Path(out_dir).resolve()
    data = str(Path(data).resolve()) if data and data != "kaggle" else data
    check_run_folder(out_dir, profile, data, dict(overrides or {}))
    source_dir = find_notebooks_dir(notebooks_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kernel = ensure_kernel()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it: no C++ log noise
    parameters = {
        "PROFILE": profile,
        "OUT_DIR": str(out_dir),
        "DATA": data,
        "OVERRIDES": dict(overrides or {}),
        "DOCS_DIR": str(Path(docs_dir).resolve()) if docs_dir else None,
        "COMMAND": command,
    }
    executed, seconds = [], {}
    try:
        for name in NOTEBOOKS:
            target = out_dir / f"{name}.ipynb"
            print(f"{PREFIX} {name} ...", flush=True)
            started = time.perf_counter()
            run_notebook(source_dir / f"{name}.ipynb", target, parameters, kernel, log_output)
            seconds[name] = round(time.perf_counter() - started, 1)
            print(f"{PREFIX} {name} done in {seconds[name]:.0f} s", flush=True)
            executed.append(target)
    except KeyboardInterrupt:
        end_children()
        raise
    finally:
        write_json(out_dir / TIMINGS_FILE, {"notebook_seconds": seconds})
    return executed


def interrupt_kernels() -> None:
    """Ctrl-C the notebook kernels this process started: the running cell stops as after Ctrl-C
    in Jupyter, so a search records its interrupted trial and stops its engine."""
    import psutil

    for child in psutil.Process().children():
        try:
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                child.send_signal(signal.SIGINT)
        except psutil.Error:
            pass


def end_children(grace: float = CHILDREN_GRACE_SECONDS) -> None:
    """Wait for this process's children (kernels, and what they started) to end; kill the rest."""
    import psutil

    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=grace)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass
