"""seglib run and the run folder: parameters, the notebooks folder, the kernel, failures that
name their cell, and a run folder that is reused, never silently overwritten.

Runs tiny stand-in notebooks (plain Python, no Keras) through the real papermill path, so a
kernel start is the only cost.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from seglib import pipeline
from seglib.cli import main, parse_parameters
from seglib.run import NOTEBOOKS, ensure_kernel, find_notebooks_dir


def write_notebooks(folder: Path, failing: str | None = None) -> Path:
    """Four notebooks with a parameters cell; ``failing`` raises in its second code cell."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in NOTEBOOKS:
        params = nbformat.v4.new_code_cell('OUT_DIR = "x"\nPROFILE = "quick"\nOVERRIDES = {}')
        params.metadata["tags"] = ["parameters"]
        body = (
            "raise RuntimeError('boom in ' + OUT_DIR)"
            if name == failing
            else "import json, pathlib, sys\n"
            "record = {'exe': sys.executable, 'overrides': OVERRIDES}\n"
            f"pathlib.Path(OUT_DIR, '{name}.json').write_text(json.dumps(record))"
        )
        nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, folder / f"{name}.ipynb")
    return folder


def test_runs_all_four_in_order_with_this_interpreter_and_parameters(tmp_path):
    notebooks = write_notebooks(tmp_path / "nb")
    out = tmp_path / "out"
    rc = main(["run", "--out", str(out), "--notebooks", str(notebooks), "-p", "epochs=2", "-p", "activation='swish'"])
    assert rc == 0
    for name in NOTEBOOKS:
        assert (out / f"{name}.ipynb").is_file(), "executed notebook kept in the run folder"
        written = json.loads((out / f"{name}.json").read_text())
        assert Path(written["exe"]).resolve() == Path(sys.executable).resolve()
        assert written["overrides"] == {"epochs": 2, "activation": "swish"}


def test_a_failing_notebook_exits_non_zero_naming_notebook_and_cell(tmp_path, capsys):
    notebooks = write_notebooks(tmp_path / "nb", failing="02_baseline")
    out = tmp_path / "out"
    rc = main(["run", "--out", str(out), "--notebooks", str(notebooks)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "02_baseline.ipynb" in err and "cell" in err and "RuntimeError: boom in" in err
    assert (out / "01_data.ipynb").is_file() and not (out / "03_hyperband_hpo.ipynb").exists()


def test_missing_notebooks_folder_is_a_clear_error(tmp_path, capsys):
    rc = main(["run", "--out", str(tmp_path / "out"), "--notebooks", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err
    assert rc == 1 and "01_data.ipynb" in err and "--notebooks" in err


@pytest.mark.parametrize(
    "pair, named", [("epoks=2", "epoks"), ("precision=fp8", "precision='fp8'"), ("batch_size=abc", "batch_size='abc'")]
)
def test_unknown_override_is_refused_before_anything_runs(tmp_path, capsys, pair, named):
    rc = main(["run", "--out", str(tmp_path / "out"), "-p", pair])
    assert rc == 1 and named in capsys.readouterr().err
    assert not (tmp_path / "out" / "01_data.ipynb").exists()


@pytest.mark.parametrize(
    "pairs, expected",
    [
        (["epochs=3"], {"epochs": 3}),
        (["learning_rate=1e-3", "activation=None"], {"learning_rate": 0.001, "activation": None}),
        (["data=/some/path"], {"data": "/some/path"}),
        (["max_patches=None"], {"max_patches": None}),
    ],
)
def test_parse_parameters(pairs, expected):
    assert parse_parameters(pairs) == expected


def test_parse_parameters_rejects_a_pair_without_equals():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_parameters(["epochs"])


def test_the_checkouts_notebooks_are_found():
    folder = find_notebooks_dir()
    assert [p.stem for p in sorted(folder.glob("0*.ipynb"))] == list(NOTEBOOKS)


def test_kernelspec_points_at_this_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_PATH", "")
    name = ensure_kernel(tmp_path)
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(name)
    assert spec.argv[0] == sys.executable


def test_start_run_records_profile_overrides_and_stamp(tmp_path):
    run = pipeline.start_run(tmp_path, "quick", None, {"epochs": 2})
    again = pipeline.open_run(tmp_path)
    assert again.settings.epochs == 2 and again.settings == run.settings and again.overrides == {"epochs": 2}
    assert again.stamp["data_label"] == pipeline.EMBEDDED_LABEL
    assert {"backend", "hardware"} <= set(again.stamp) and again.profile_text == "quick (epochs=2)"


def test_a_run_folder_is_reused_for_the_same_run_and_refused_for_another(tmp_path):
    """Colab: a fresh runtime runs 01 again on the run's folder; nothing is overwritten."""
    first = pipeline.start_run(tmp_path, "quick", None, {"epochs": 2})
    assert pipeline.start_run(tmp_path, "quick", None, {"epochs": 2}).stamp == first.stamp
    with pytest.raises(pipeline.RunMismatch, match=r"epochs: 2 there, 3 now"):
        pipeline.start_run(tmp_path, "quick", None, {"epochs": 3})


def test_open_run_without_01_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="01_data"):
        pipeline.open_run(tmp_path)


def test_seglib_run_help_lists_the_options():
    result = subprocess.run([sys.executable, "-m", "seglib.cli", "run", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    for option in ("--profile", "--out", "--data", "--notebooks", "--docs", "-p KEY=VALUE"):
        assert option in result.stdout


def test_precision_is_a_profile_setting_that_reaches_the_trained_model(tmp_path, monkeypatch):
    """`-p precision=bf16` trains the baseline in mixed bf16; a bad value fails before any work."""
    monkeypatch.setenv("SEGLIB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="precision='fp8'"):
        pipeline.start_run(tmp_path / "bad", "quick", None, {"precision": "fp8"})
    overrides = {"precision": "bf16", "epochs": 1, "max_patches": 40, "keep_epoch": "best"}
    run = pipeline.start_run(tmp_path / "run", "quick", None, overrides)
    assert "precision=bf16" in run.label
    pipeline.prepare_data(run)
    record = pipeline.train_baseline(pipeline.open_run(tmp_path / "run"))
    import keras

    from seglib.data import read_recipe
    from seglib.train import load_model

    model = load_model(tmp_path / "run" / "baseline" / "model.keras")
    convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert {layer.dtype_policy.name for layer in convolutions[:-1]} == {"mixed_bfloat16"}  # the head stays float32
    assert record.epochs_trained == 1
    assert not (tmp_path / "run" / "baseline" / "checkpoints").exists()  # only the finished model stays
    assert read_recipe(tmp_path / "run" / "baseline" / "model.keras")["keep_epoch"] == "best"  # seglib predict reads it
    assert pipeline.train_baseline(run) == record  # a second 02 reuses it


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.nni
@pytest.mark.parametrize("signum", ["SIGTERM", "SIGHUP"])
def test_a_termination_signal_stops_the_whole_run_and_leaves_nothing(tmp_path, signum):
    """`timeout seglib run` during 03: the kernel, NNI's manager and its trials all end; a rerun continues."""
    import os
    import signal
    import time

    import psutil

    from seglib import hpo

    out = tmp_path / "run"
    env = {**os.environ, "SEGLIB_CACHE": str(tmp_path / "cache")}
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "seglib.cli",
            "run",
            "--profile",
            "quick",
            "--out",
            str(out),
            "-p",
            "max_patches=120",
            "-p",
            "epochs=1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 600
    while not ((out / "hpo" / "search_state.json").is_file() and hpo.progress(out / "hpo")["running"] >= 1):
        assert run.poll() is None and time.time() < deadline, run.communicate()
        time.sleep(0.5)
    family = psutil.Process(run.pid).children(recursive=True)
    assert any(p.name() == "node" for p in family), "NNI's manager was running"
    run.send_signal(getattr(signal, signum))
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130 and "interrupted; run the same command again to continue" in err, err[-2000:]
    _, alive = psutil.wait_procs(family, timeout=60)
    assert not alive, f"left running after {signum}: {[p.cmdline()[:3] for p in alive]}"
    assert hpo.progress(out / "hpo")["running"] == 0
