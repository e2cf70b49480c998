"""The notebooks' Colab install cell, run in a fresh Python 3.12 venv that already has numpy 2.

Colab runs Python 3.12 with numpy 2 preloaded; patchify declares numpy<2. The cell under test
is exactly the notebooks' first cell (``seglib.colab.install_cell``), with the repository's git
URL replaced by this checkout, run with a stand-in ``google.colab`` module so it takes its
Colab branch. Downloads TensorFlow and friends from PyPI (pip's cache makes reruns quicker).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from seglib import colab

ROOT = Path(__file__).resolve().parents[1]
PYENV_312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")


def python312() -> str | None:
    """A working Python 3.12: $SEGLIB_PYTHON312, pyenv's 3.12.1, or python3.12 on PATH.

    Each candidate is run once: a pyenv shim exists as a file but fails when 3.12 is not the
    selected version.
    """
    for candidate in (os.environ.get("SEGLIB_PYTHON312"), str(PYENV_312), shutil.which("python3.12")):
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True)
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    return None


def run(*args, timeout=1500) -> str:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_install_cell_targets_the_repository_and_runs_only_in_colab():
    cell = colab.install_cell()
    assert colab.GIT_SOURCE in cell and '"google.colab" in sys.modules' in cell
    exec(compile(cell, "install_cell", "exec"), {})  # outside Colab: does nothing, raises nothing


@pytest.mark.slow
def test_colab_install_keeps_numpy_2_and_seglib_imports(tmp_path):
    python = python312()
    if python is None:
        pytest.skip("no Python 3.12 found (set SEGLIB_PYTHON312, or install 3.12 with pyenv)")
    venv = tmp_path / "colab-like"
    run(python, "-m", "venv", venv)
    vpy = venv / "bin" / "python"
    run(vpy, "-m", "pip", "install", "-q", "numpy>=2")
    before = run(vpy, "-c", "import numpy; print(numpy.__version__)").strip()
    assert before.startswith("2.")

    fake_colab = "import sys, types; sys.modules['google.colab'] = types.ModuleType('google.colab')\n"
    run(vpy, "-c", fake_colab + colab.install_cell(colab.local_source(checkout_copy(tmp_path / "seglib"))))

    after = run(vpy, "-c", "import numpy; print(numpy.__version__)").strip()
    assert after.startswith("2."), f"the install cell changed numpy {before} -> {after}"
    check = "import seglib, seglib.data, seglib.report, patchify, kagglehub; print(seglib.__version__)"
    assert run(vpy, "-c", check).strip() == seglib_version()


def checkout_copy(target: Path) -> Path:
    """The repository's tracked files as they are now, as a git clone would have them.

    pip builds a local project in place; building a copy keeps build/ out of the checkout.
    """
    files = run("git", "-C", ROOT, "ls-files", "-z").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def seglib_version() -> str:
    import seglib

    return seglib.__version__


# ---------------------------------------------------------------------------------------
# The set-up cell's helpers inside a stand-in Colab (google.colab.userdata, kagglehub)

SECRET = "kaggle-secret-value-0123456789"


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """A ``google.colab`` with ``userdata`` holding a Kaggle key, and a ``kagglehub`` stand-in."""
    import sys
    import types

    class SecretNotFoundError(Exception):
        pass

    def get(name):
        secrets = {"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": SECRET}
        if name not in secrets:
            raise SecretNotFoundError(name)
        return secrets[name]

    google = types.ModuleType("google")
    google_colab = types.ModuleType("google.colab")
    userdata = types.ModuleType("google.colab.userdata")
    userdata.get = get
    google_colab.userdata = userdata
    google.colab = google_colab
    downloaded = tmp_path / "kagglehub" / colab.KAGGLE_FOLDER
    downloaded.mkdir(parents=True)
    kagglehub = types.ModuleType("kagglehub")
    kagglehub.calls = []

    def dataset_download(handle):
        kagglehub.calls.append((handle, os.environ.get("KAGGLE_KEY")))
        return str(downloaded.parent)

    kagglehub.dataset_download = dataset_download
    for name, module in {"google": google, "google.colab": google_colab, "google.colab.userdata": userdata, "kagglehub": kagglehub}.items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in colab.KAGGLE_SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return types.SimpleNamespace(kagglehub=kagglehub, downloaded=downloaded, home=tmp_path / "home")


def test_kaggle_download_uses_colab_secrets_without_printing_or_writing_them(fake_colab, capsys):
    assert colab.in_colab()
    data = colab.setup(colab.KAGGLE_DATA)
    assert data == str(fake_colab.downloaded)
    assert fake_colab.kagglehub.calls == [(colab.KAGGLE_DATASET, SECRET)], "the key reached kagglehub through the environment"
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "KAGGLE_KEY" in out.out, "says where the credentials came from (by name)"
    assert not fake_colab.home.exists(), "nothing written to the home folder (no kaggle.json)"


def test_setup_in_colab_without_kaggle_keeps_the_data_path(fake_colab, capsys):
    assert colab.setup("/content/drive/MyDrive/data") == "/content/drive/MyDrive/data"
    assert fake_colab.kagglehub.calls == []
    assert "GPU" in capsys.readouterr().out  # the GPU check ran and said what it found
