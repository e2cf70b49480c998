"""seglib run's own behaviour around the notebooks: a refused folder is left untouched, every
long step prints progress, a dead kernel is named, an interruption says what to run next, and
the noise a stopped kernel prints is kept off the screen.

Stand-in notebooks (plain Python, no Keras) go through the real papermill path, so a kernel
start is the only cost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from seglib import run as seglib_run
from seglib.artifacts import Run, RunPaths, write_run
from seglib.cli import main
from seglib.noise import Filter
from seglib.run import NOTEBOOKS
from seglib.settings import profile


def write_notebooks(folder: Path, bodies: dict[str, list] | None = None) -> Path:
    """The four notebooks; ``bodies`` maps a name to its cells after the parameters
    (a string is a code cell, ``("md", text)`` a markdown cell)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOKS:
        params = nbformat.v4.new_code_cell('OUT_DIR = "x"\nPROFILE = "quick"\nOVERRIDES = {}')
        params.metadata["tags"] = ["parameters"]
        cells = [params]
        for body in (bodies or {}).get(name, ["1"]):
            is_markdown = isinstance(body, tuple)
            cells.append(nbformat.v4.new_markdown_cell(body[1]) if is_markdown else nbformat.v4.new_code_cell(body))
        nb = nbformat.v4.new_notebook(cells=cells)
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_a_run_refused_for_other_settings_writes_nothing(tmp_path, capsys):
    """A quick run's folder asked for `--profile full`: refused before any notebook executes."""
    out = tmp_path / "runs" / "quick"
    write_run(Run(RunPaths.of(out), "quick", {}, profile("quick"), {"data_label": "embedded default dataset"}))
    (out / "01_data.ipynb").write_text("the good run's executed notebook")
    before = snapshot(out)
    notebooks = write_notebooks(tmp_path / "nb")

    rc = main(["run", "--out", str(out), "--profile", "full", "--notebooks", str(notebooks)])

    err = capsys.readouterr().err
    assert rc == 1 and "holds a run with other settings" in err and "choose a new run folder" in err, err
    assert snapshot(out) == before, "a refused command changed the run folder"


def test_the_same_run_continues_and_kaggle_data_is_compared_without_downloading(tmp_path, capsys):
    out = tmp_path / "run"
    data = tmp_path / "Semantic segmentation dataset"
    settings = profile("quick", data=str(data), epochs=2)
    write_run(Run(RunPaths.of(out), "quick", {"epochs": 2}, settings, {"data_label": "x"}))
    seglib_run.check_run_folder(out, "quick", str(data), {"epochs": 2})  # the same run: no error
    seglib_run.check_run_folder(out, "quick", "kaggle", {"epochs": 2})  # its own Kaggle copy, resolved in 01
    with pytest.raises(ValueError, match=r"epochs: 2 there, 3 now"):
        seglib_run.check_run_folder(out, "quick", "kaggle", {"epochs": 3})


def test_every_step_prints_its_section_the_live_line_and_a_heartbeat(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(seglib_run, "HEARTBEAT_SECONDS", 1.0)
    monkeypatch.setattr(seglib_run, "LIVE_LINE_SECONDS", 0.0)
    live = (
        "from IPython.display import display\nimport time\n"
        "handle = display('starting...', display_id=True)\n"
        "for i in range(3):\n    time.sleep(0.3)\n    handle.update(f'{i + 1} done of 3')\n"
        "time.sleep(2.5)\nprint('search finished')"
    )
    notebooks = write_notebooks(tmp_path / "nb", {"03_hyperband_hpo": [("md", "## HyperBand\n\nWhy."), live]})

    assert main(["run", "--out", str(tmp_path / "out"), "--notebooks", str(notebooks)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert "[seglib run] 03_hyperband_hpo · HyperBand ..." in lines, lines
    assert "[seglib run] 03_hyperband_hpo · HyperBand: 3 done of 3" in lines, lines
    assert any(line.startswith("[seglib run] 03_hyperband_hpo · HyperBand: running for ") for line in lines), lines
    assert "search finished" not in lines, "a cell's own output only with --log-output"


def test_log_output_passes_the_cells_output_through_without_tensorflows_noise(tmp_path, capsys):
    body = "import sys\nprint('epoch 1/2')\nprint('oneDNN custom operations are on', file=sys.stderr)"
    notebooks = write_notebooks(tmp_path / "nb", {"02_baseline": [body]})
    assert main(["run", "--out", str(tmp_path / "out"), "--notebooks", str(notebooks), "--log-output"]) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "oneDNN" not in out


def test_a_kernel_that_dies_is_named_with_its_notebook(tmp_path, capsys):
    killer = "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"
    notebooks = write_notebooks(tmp_path / "nb", {"02_baseline": [("md", "## Train the baseline"), killer]})
    rc = main(["run", "--out", str(tmp_path / "out"), "--notebooks", str(notebooks)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "notebook 02_baseline.ipynb: its kernel died" in err and "Train the baseline" in err, err
    assert "run the same command again" in err.lower(), err


def test_an_interrupted_search_names_the_command_that_continues_it(tmp_path):
    """`seglib hpo` without --resume is refused on a folder holding a search: the message adds it."""
    from seglib.cli import _continue_with, build_parser

    argv = ["hpo", "--out", str(tmp_path / "h"), "--engine", "local"]
    message = _continue_with(build_parser().parse_args(argv), argv)
    assert message.endswith(f"seglib hpo --out {tmp_path / 'h'} --engine local --resume"), message
    resumed = [*argv, "--resume"]
    assert _continue_with(build_parser().parse_args(resumed), resumed).endswith(" --engine local --resume")
    run_argv = ["run", "--out", "runs/quick"]
    assert _continue_with(build_parser().parse_args(run_argv), run_argv) == (
        "run the same command again to continue: seglib run --out runs/quick"
    )


@pytest.mark.slow
@pytest.mark.parametrize("delay", [2.5, 3.5, 4.5])
def test_a_termination_signal_while_kernels_start_ends_in_one_line(tmp_path, delay):
    """SIGTERM lands while a kernel imports or answers: its traceback never reaches the screen.

    The last notebook waits, so the run is never over before the signal however fast the machine."""
    notebooks = write_notebooks(tmp_path / "nb", {"04_report": ["import time\ntime.sleep(60)"]})
    command = [sys.executable, "-c", "from seglib.cli import command; raise SystemExit(command())"]
    process = subprocess.Popen(
        [*command, "run", "--out", str(tmp_path / "out"), "--notebooks", str(notebooks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "SEGLIB_VERBOSE": "0"},
    )
    time.sleep(delay)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert err.strip().splitlines() == [
        f"seglib run: interrupted; run the same command again to continue: seglib run --out {tmp_path / 'out'} "
        f"--notebooks {notebooks}"
    ], err


KERNEL_TRACEBACK = """Traceback (most recent call last):
  File "ipykernel_launcher.py", line 16, in <module>
    from ipykernel import kernelapp as app
  File "traitlets.py", line 527, in __init__
    def __init__(

KeyboardInterrupt""".splitlines()
ZMQ_TRACEBACK = """[IPKernelApp] ERROR | Exception in message handler:
Traceback (most recent call last):
  File "zmq/sugar/socket.py", line 713, in send
    return super().send(data, flags=flags, copy=copy, track=track)
zmq.error.ZMQError: Socket operation on non-socket""".splitlines()
FATAL_AT_START = """Fatal Python error: init_import_site: Failed to import the site module
Python runtime state: initialized
Traceback (most recent call last):
  File "<frozen site>", line 73, in <module>
KeyboardInterrupt""".splitlines()
REAL_ERROR = """Traceback (most recent call last):
  File "x.py", line 1, in <module>
ValueError: a real error""".splitlines()


def test_the_noise_filter_drops_a_stopped_kernels_tracebacks_and_keeps_real_ones():
    noise = Filter()
    kept = noise.feed(["before", *KERNEL_TRACEBACK, *ZMQ_TRACEBACK[:2]])
    kept += noise.feed([*ZMQ_TRACEBACK[2:], *REAL_ERROR, "oneDNN custom operations are on", *FATAL_AT_START, "after"])
    assert kept == ["before", *REAL_ERROR, "after"]
    assert noise.feed(REAL_ERROR[:2]) == [] and noise.flush() == REAL_ERROR[:2], "a cut-short traceback is written"
    assert noise.feed(REAL_ERROR) == [] and noise.flush() == REAL_ERROR, "the last traceback is written at the end"


# A signal that lands while importlib handles its own KeyError (a normal miss in its path cache).
CHAINED_STOP = """Traceback (most recent call last):
  File "<frozen importlib._bootstrap_external>", line 1437, in _path_importer_cache
KeyError: '/venv/lib/python3.11/site-packages/IPython/core/magics'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "<frozen importlib._bootstrap_external>", line 1440, in _path_importer_cache
KeyboardInterrupt""".splitlines()


def test_a_chain_of_tracebacks_is_judged_by_its_last_exception():
    noise = Filter()
    assert noise.feed(["before", *CHAINED_STOP, "", "after"]) == ["before", "after"]
    real_after_stop = [
        *KERNEL_TRACEBACK[:-1],
        "ValueError: inner",
        "",
        "The above exception was the direct cause of the following exception:",
        "",
        *REAL_ERROR,
    ]
    assert noise.feed([*real_after_stop, "next"]) == [*real_after_stop, "next"]
    assert noise.feed(CHAINED_STOP[:3]) == [] and noise.flush() == CHAINED_STOP[:3], "a real error is never lost"
