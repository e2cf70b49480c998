"""Notebooks 01 -> 04 executed headless by papermill, into one run folder (``seglib run``).

Each notebook runs in a kernel of this interpreter with the same parameters (profile,
overrides, run folder, data, docs folder); the executed copies stay in the run folder, and a
failing cell stops the run with the notebook, the cell and the error named.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import seglib
from seglib.artifacts import write_json

NOTEBOOKS = ("01_data", "02_baseline", "03_hyperband_hpo", "04_report")
KERNEL_NAME = "seglib-python"
TIMINGS_FILE = "timings.json"  # seconds per notebook, beside them in the run folder
CHILDREN_GRACE_SECONDS = 30.0  # after an interruption: time for kernels to save their state and end


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


def run_notebook(source: Path, target: Path, parameters: dict, kernel: str, log_output: bool = False) -> None:
    """Execute one notebook with papermill; raise NotebookFailed naming notebook and cell."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    accepted = {k: v for k, v in parameters.items() if k in notebook_parameters(source)}
    try:
        papermill.execute_notebook(
            str(source),
            str(target),
            parameters=accepted,
            kernel_name=kernel,
            cwd=str(target.parent),
            progress_bar=False,
            log_output=log_output,
        )
    except PapermillExecutionError as error:
        first_line = next((line for line in error.source.splitlines() if line.strip()), "")
        raise NotebookFailed(
            f"notebook {source.name} failed in cell {error.cell_index} (execution count {error.exec_count}, "
            f"starting {first_line!r}): {error.ename}: {error.evalue}. Executed copy: {target}"
        ) from None


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

    The settings are checked here first (``seglib.settings``), so a bad value fails before
    any kernel starts.
    """
    from seglib.settings import profile as resolve

    resolve(profile, **dict(overrides or {}))
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    source_dir = find_notebooks_dir(notebooks_dir)
    kernel = ensure_kernel()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the kernels inherit it: no C++ log noise
    parameters = {
        "PROFILE": profile,
        "OUT_DIR": str(out_dir),
        "DATA": str(Path(data).resolve()) if data and data != "kaggle" else data,
        "OVERRIDES": dict(overrides or {}),
        "DOCS_DIR": str(Path(docs_dir).resolve()) if docs_dir else None,
        "COMMAND": command,
    }
    executed, seconds = [], {}
    try:
        for name in NOTEBOOKS:
            target = out_dir / f"{name}.ipynb"
            print(f"[seglib run] {name} ...", flush=True)
            started = time.perf_counter()
            run_notebook(source_dir / f"{name}.ipynb", target, parameters, kernel, log_output)
            seconds[name] = round(time.perf_counter() - started, 1)
            print(f"[seglib run] {name} done in {seconds[name]:.0f} s", flush=True)
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
