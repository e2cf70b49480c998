"""Colab, emulated: today's image (Python 3.13, Google's own package list), the install cell,
and the four notebooks each in a fresh "runtime" of their own.

* The image: a Python 3.13 venv holding Colab's versions (``tests/data/colab-pip-freeze.gpu.txt``)
  of every package seglib's install touches; the notebooks' install cell runs there as in Colab
  (a stand-in ``google.colab``, ``tests/colab_standin``), and must change none of them.
* The flow: notebooks 01 -> 04 executed by papermill in that venv's kernel, each in a fresh
  working folder and HOME (a new runtime), no ``OUT_DIR`` given: the run folder is on the
  stand-in Drive; 03 is killed mid-search (kernel and all) and run again in a fresh runtime,
  where it continues; the report ends up on "Drive".
* Colab's helpers in-process: secrets, the Kaggle download to Drive, a refused Drive.

What only a real Colab can show (its GPU, its Drive, its proxy) is not here: docs/colab.md.
Downloads are kept in a wheelhouse ($SEGLIB_COLAB_WHEELHOUSE, default ~/.cache/seglib/
colab313-wheelhouse): pip's own HTTP cache does not work behind a proxy that strips caching
headers (this machine's), and TensorFlow's wheel alone is 621 MB. The machine's pip
configuration (local mirrors, constraints) is switched off so pip behaves as on Colab.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from seglib import colab

ROOT = Path(__file__).resolve().parents[1]
STANDIN = ROOT / "tests" / "colab_standin"
PYENV_313 = Path("/root/.pyenv/versions/3.13.0/bin/python3.13")
COLAB_FREEZE = Path(os.environ.get("SEGLIB_COLAB_FREEZE", ROOT / "tests" / "data" / "colab-pip-freeze.gpu.txt"))

# Colab packages the project touches (the list); the resolved closure is checked too.
TRACKED = [
    "numpy",
    "tensorflow",
    "keras",
    "jax",
    "jaxlib",
    "ipykernel",
    "jupytext",
    "matplotlib",
    "scikit-learn",
    "pandas",
    "typeguard",
    "filelock",
    "websockets",
    "psutil",
    "requests",
    "kagglehub",
    "pillow",
    "nbformat",
    "nbclient",
    "jupyter_client",
    "tornado",
    "pyzmq",
    "traitlets",
    "PyYAML",
    "tqdm",
]

# name -> why its version may change. Empty: the cell must leave every Colab version alone.
# (With `nni==3.0` resolved normally, pip downgrades typeguard 4.6.0 -> 4.1.2 and filelock
# 3.32.3 -> 3.11.0: NNI 3.0's caps. Those are what this test is here to catch.)
EXPLAINED_CHANGES: dict[str, str] = {}

# Packages Colab lacks that the cell may add, with why.
EXPECTED_ADDITIONS = {
    "seglib": "the project",
    "nni": "the HPO engine (installed with --no-deps: its typeguard/filelock caps are not applied)",
    "patchify": "installed with --no-deps (declares numpy<2, works with numpy 2)",
    "astor": "NNI 3.0 requirement",
    "colorama": "NNI 3.0 requirement",
    "json-tricks": "NNI 3.0 requirement",
    "pythonwebhdfs": "NNI 3.0 requirement",
    "responses": "NNI 3.0 requirement",
    "schema": "NNI 3.0 requirement",
    "optuna": "BOHB's density model (TPE); its other requirements are Colab's versions",
    "alembic": "optuna requirement",
    "colorlog": "optuna requirement",
}


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def python313() -> str | None:
    for candidate in (os.environ.get("SEGLIB_PYTHON313"), str(PYENV_313), shutil.which("python3.13")):
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 13)":
            return candidate
    return None


def colab_freeze() -> dict[str, tuple[str, str]]:
    """canonical name -> (name as Colab spells it, version) from Google's pip freeze."""
    if not COLAB_FREEZE.is_file():
        pytest.skip(f"Colab's pip-freeze.gpu.txt not found at {COLAB_FREEZE} (set SEGLIB_COLAB_FREEZE)")
    pins = {}
    for line in COLAB_FREEZE.read_text().splitlines():
        if re.match(r"^[A-Za-z0-9_.-]+==", line):
            name, version = line.strip().split("==", 1)
            pins[canon(name)] = (name, version)
    return pins


def pip_env(**extra) -> dict:
    """This process's environment with the machine's pip settings off (Colab has none of them)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT", "PIP_REQUIRE_VIRTUALENV")
    }
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", **extra)
    return env


def run(*args, timeout=1800, env=None, cwd=None) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env or pip_env(), cwd=cwd
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def copy_checkout(root: Path, target: Path) -> Path:
    """The tree a git clone would give (tracked files from the working tree), or a plain copy."""
    listed = subprocess.run(["git", "-C", root, "ls-files", "-z"], capture_output=True, text=True)
    if listed.returncode == 0 and listed.stdout:
        for name in filter(None, listed.stdout.split("\0")):
            if (root / name).is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(root / name, target / name)
    else:
        shutil.copytree(
            root, target, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__")
        )
    return target


def freeze(python: Path) -> dict[str, str]:
    out = run(python, "-m", "pip", "list", "--format=json")
    return {canon(p["name"]): p["version"] for p in json.loads(out)}


def downloaded(pip_output: str) -> dict[str, str]:
    """canonical name -> version of each distribution file `pip download` saved or already had."""
    found = {}
    for path in re.findall(r"(?:Saved|File was already downloaded) (\S+)", pip_output):
        name = Path(path).name
        match = re.match(r"^(.+?)-(\d[^-]*?)(?:-[^-]+-[^-]+-[^-]+\.whl|\.tar\.gz|\.zip)$", name)
        if match:
            found[canon(match.group(1))] = match.group(2)
    return found


@pytest.fixture(scope="module")
def colab_venv(tmp_path_factory):
    python = python313()
    if python is None:
        pytest.skip("no Python 3.13 found (set SEGLIB_PYTHON313, or install 3.13 with pyenv)")
    pins = colab_freeze()
    root = ROOT
    work = tmp_path_factory.mktemp("colab313")
    wheelhouse = Path(os.environ.get("SEGLIB_COLAB_WHEELHOUSE", Path.home() / ".cache/seglib/colab313-wheelhouse"))
    wheelhouse.mkdir(parents=True, exist_ok=True)
    timings = {}
    t0 = time.monotonic()

    venv = work / "venv"
    run(python, "-m", "venv", venv)
    vpy = venv / "bin" / "python"
    tools = [f"{pins[n][0]}=={pins[n][1]}" for n in ("pip", "setuptools", "wheel") if n in pins]
    run(vpy, "-m", "pip", "install", "-q", *tools)
    source = copy_checkout(root, work / "seglib")

    # The closure seglib's install touches, under Colab's pins (and the kernel Colab runs). typeguard and filelock stay
    # unpinned here only so that a source which still resolves NNI's caps can be resolved at all.
    constraints = work / "colab-constraints.txt"
    constraints.write_text("".join(f"{n}=={v}\n" for c, (n, v) in pins.items() if c not in ("typeguard", "filelock")))
    resolved = downloaded(
        run(
            vpy,
            "-m",
            "pip",
            "download",
            "-d",
            wheelhouse,
            "--find-links",
            wheelhouse,
            "-c",
            constraints,
            f"seglib[colab] @ {source.as_uri()}",
            *(f"{n}=={pins[n][1]}" for n in ("jax", "jaxlib", "ipykernel")),
        )
    )
    touched = sorted((set(resolved) | {canon(n) for n in TRACKED}) & set(pins))
    baseline = work / "colab-baseline.txt"
    baseline.write_text(
        "".join(f"{pins[c][0]}=={pins[c][1]}\n" for c in touched if c not in ("pip", "setuptools", "wheel"))
    )
    run(vpy, "-m", "pip", "download", "--no-deps", "-d", wheelhouse, "--find-links", wheelhouse, "-r", baseline)
    run(vpy, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--find-links", wheelhouse, "-r", baseline)
    timings["baseline"] = time.monotonic() - t0

    before = freeze(vpy)
    wrong = {c: (before.get(c), pins[c][1]) for c in touched if before.get(c) != pins[c][1]}
    assert not wrong, f"the baseline venv does not hold Colab's versions: {wrong}"

    # The notebooks' install cell, verbatim, with SEGLIB_SOURCE = the checkout (a parameter);
    # the stand-in google.colab on PYTHONPATH makes it take its Colab branch.
    cell = f"SEGLIB_SOURCE = {str(source)!r}\n" + colab.install_cell()
    t1 = time.monotonic()
    content = work / "content"  # an empty working folder, as Colab's /content
    content.mkdir()
    run(vpy, "-c", cell, env=pip_env(PIP_FIND_LINKS=str(wheelhouse), PYTHONPATH=str(STANDIN)), cwd=content)
    timings["cell"] = time.monotonic() - t1
    after = freeze(vpy)
    return {
        "python": vpy,
        "venv": venv,
        "work": work,
        "pins": pins,
        "touched": touched,
        "before": before,
        "after": after,
        "timings": timings,
        "source": source,
    }


@pytest.mark.slow
def test_the_cell_changes_no_colab_version_and_adds_only_what_is_expected(colab_venv):
    before, after, pins = colab_venv["before"], colab_venv["after"], colab_venv["pins"]
    changed = {
        c: f"{before[c]} -> {after.get(c, 'removed')}"
        for c in colab_venv["touched"]
        if after.get(c) != before[c] and c not in EXPLAINED_CHANGES
    }
    assert not changed, f"the install cell changed Colab's packages: {changed}"
    assert after["numpy"] == pins["numpy"][1]
    added = sorted(set(after) - set(before))
    assert {"seglib", "nni", "patchify"} <= set(added), f"the install cell installed {added}"
    unexpected = [f"{c}=={after[c]}" for c in added if c not in EXPECTED_ADDITIONS]
    assert not unexpected, f"the install cell added packages nobody has looked at: {unexpected}"
    print("added:", ", ".join(f"{c}=={after[c]}" for c in added), "| timings:", colab_venv["timings"])


@pytest.mark.slow
def test_seglib_nni_and_the_frameworks_import(colab_venv):
    out = run(
        colab_venv["python"],
        "-c",
        "import seglib, nni, tensorflow, keras, jax, numpy, typeguard, filelock, importlib.metadata as m;"
        "print(seglib.__version__, nni.__version__, tensorflow.__version__, keras.__version__, jax.__version__,"
        " numpy.__version__, m.version('typeguard'), m.version('filelock'))",
        env=pip_env(TF_CPP_MIN_LOG_LEVEL="3"),
    )
    assert out.strip().splitlines()[-1].split()[:2] == ["0.1.0", "3.0"], out


# ---------------------------------------------------------------------------------------
# The four notebooks, each in a fresh "runtime", the run folder on (stand-in) Drive

QUICK = {"epochs": 2, "max_patches": 120}  # the quick profile, smaller still: the flow is what is tested


@pytest.fixture
def runtimes(colab_venv, tmp_path, monkeypatch):
    """A kernel of the Colab venv, the stand-in Colab on its path, Drive at tmp_path/drive."""
    work = tmp_path
    run(colab_venv["python"], "-m", "ipykernel", "install", "--prefix", work / "jupyter", "--name", "colab313")
    monkeypatch.setenv("JUPYTER_PATH", str(work / "jupyter" / "share" / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(STANDIN))  # the kernels' sitecustomize imports google.colab
    monkeypatch.setenv("SEGLIB_STANDIN_DRIVE", str(work / "drive"))
    monkeypatch.setenv("SEGLIB_DRIVE_MOUNT", str(work / "content" / "drive"))
    monkeypatch.setenv("SEGLIB_STANDIN_LOG", str(work / "colab-output.log"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("SEGLIB_CACHE", raising=False)
    counter = iter(range(100))

    def fresh() -> tuple[Path, dict]:
        """A new runtime: its own working folder and HOME (so no patch cache, no NNI records)."""
        folder = work / f"runtime{next(counter)}"
        (folder / "home").mkdir(parents=True)
        return folder, {**os.environ, "HOME": str(folder / "home")}

    return {
        "work": work,
        "fresh": fresh,
        "source": str(colab_venv["source"]),
        "run_dir": work / "drive" / "seglib" / "runs" / "quick",
    }


def execute(runtimes, name: str, **parameters) -> subprocess.Popen:
    """Start notebook ``name`` with papermill in a fresh runtime (its own process group)."""
    folder, env = runtimes["fresh"]()
    parameters = {"SEGLIB_SOURCE": runtimes["source"], **parameters}
    code = (
        f"import papermill; papermill.execute_notebook({str(ROOT / 'notebooks' / (name + '.ipynb'))!r}, "
        f"{str(folder / (name + '.ipynb'))!r}, parameters={parameters!r}, kernel_name='colab313', "
        f"cwd={str(folder)!r}, progress_bar=False)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=folder,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen, name: str) -> None:
    out, err = process.communicate(timeout=1500)
    assert process.returncode == 0, f"{name} failed:\n{out[-2000:]}\n{err[-4000:]}"


def kill_runtime(process: subprocess.Popen) -> None:
    """The runtime disconnects: papermill, its kernel and everything they started, SIGKILLed."""
    tree = [process, *(psutil.Process(process.pid).children(recursive=True))]
    for victim in tree:
        try:
            victim.kill() if isinstance(victim, psutil.Process) else os.killpg(victim.pid, signal.SIGKILL)
        except (psutil.Error, ProcessLookupError):
            pass
    process.wait()


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.nni
def test_each_notebook_in_a_fresh_runtime_with_the_run_on_drive_and_03_resumed(runtimes):
    from seglib import hpo

    started = time.perf_counter()
    run_dir = runtimes["run_dir"]
    finish(execute(runtimes, "01_data", OVERRIDES=QUICK), "01_data")
    assert (run_dir / "run.json").is_file() and (run_dir / "data" / "split.npz").is_file(), "01's run is on Drive"
    finish(execute(runtimes, "02_baseline"), "02_baseline")
    assert (run_dir / "baseline" / "metrics.json").is_file()

    first = execute(runtimes, "03_hyperband_hpo")
    search = run_dir / "hpo"
    deadline = time.time() + 900
    while not ((search / "search_state.json").is_file() and hpo.progress(search)["succeeded"] >= 1):
        assert first.poll() is None, first.communicate()[1][-3000:]
        assert time.time() < deadline, "no trial finished in 15 min"
        time.sleep(1)
    kill_runtime(first)
    before = {(r.config_id, r.budget): r.value for r in hpo.export(search).trials if r.status == "SUCCEEDED"}
    finish(execute(runtimes, "03_hyperband_hpo"), "03_hyperband_hpo (again, in a new runtime)")
    after = hpo.export(search)
    pairs = [(r.config_id, r.budget) for r in after.trials]
    assert after.summary.finished and len(pairs) == len(set(pairs))
    assert all(dict(zip(pairs, (r.value for r in after.trials)))[key] == value for key, value in before.items())
    assert len(json.loads((search / "experiment.json").read_text())["sessions"]) >= 2, "it resumed"
    assert (run_dir / "random" / "trials.json").is_file() and (run_dir / "tuned" / "metrics.json").is_file()
    proxied = (runtimes["work"] / "colab-output.log").read_text()
    assert re.search(r"^iframe \d+$", proxied, re.M), "the web UI was shown through Colab's proxy"

    finish(execute(runtimes, "04_report"), "04_report")
    report = run_dir / "docs" / "hyperparameter-optimization.md"
    assert report.is_file() and "(images/" in report.read_text(), "the report is on Drive"
    seconds = time.perf_counter() - started
    print(f"Colab flow (01, 02, 03 killed and resumed, 04), each in a fresh runtime: {seconds:.0f} s")


# ---------------------------------------------------------------------------------------
# Colab's helpers in-process: secrets, the Kaggle download to Drive, a refused Drive

SECRET = "kaggle-secret-value-0123456789"
STANDIN = ROOT / "tests" / "colab_standin"


@pytest.fixture
def fake_colab(monkeypatch, tmp_path):
    """The stand-in ``google.colab`` (Drive, secrets holding a Kaggle key) and a ``kagglehub`` stand-in."""
    import json
    import sys
    import types

    monkeypatch.syspath_prepend(str(STANDIN))
    for name in [m for m in sys.modules if m.startswith("google.colab")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setenv("SEGLIB_STANDIN_DRIVE", str(tmp_path / "drive"))
    monkeypatch.setenv("SEGLIB_STANDIN_SECRETS", json.dumps({"KAGGLE_USERNAME": "someone", "KAGGLE_KEY": SECRET}))
    monkeypatch.setattr(colab, "DRIVE_MOUNT", str(tmp_path / "content" / "drive"))
    import google.colab  # noqa: F401  (now in sys.modules: seglib.colab.in_colab() is true)

    downloaded = tmp_path / "kagglehub" / colab.KAGGLE_FOLDER
    downloaded.mkdir(parents=True)
    kagglehub = types.ModuleType("kagglehub")
    kagglehub.calls = []

    def dataset_download(handle):
        kagglehub.calls.append((handle, os.environ.get("KAGGLE_KEY"), os.environ.get("KAGGLEHUB_CACHE")))
        return str(downloaded.parent)

    kagglehub.dataset_download = dataset_download
    monkeypatch.setitem(sys.modules, "kagglehub", kagglehub)
    for name in (*colab.KAGGLE_SECRETS, "KAGGLEHUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    yield types.SimpleNamespace(
        kagglehub=kagglehub, downloaded=downloaded, home=tmp_path / "home", drive=tmp_path / "drive"
    )
    for name in [m for m in sys.modules if m.startswith("google.colab")]:  # out of Colab again
        del sys.modules[name]


def test_kaggle_download_goes_to_drive_with_colab_secrets_never_printed_or_written(fake_colab, capsys):
    assert colab.in_colab()
    out_dir, data = colab.setup(None, "quick", colab.KAGGLE_DATA)
    assert data == str(fake_colab.downloaded)
    assert out_dir == str(Path(colab.DRIVE_MOUNT) / "MyDrive" / "seglib" / "runs" / "quick"), (
        "the run folder is on Drive"
    )
    [(handle, key, cache)] = fake_colab.kagglehub.calls
    assert (handle, key) == (colab.KAGGLE_DATASET, SECRET), "the key reached kagglehub through the environment"
    assert cache == str(Path(colab.DRIVE_MOUNT) / "MyDrive" / "seglib" / "kaggle"), "downloaded to Drive, once"
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "KAGGLE_KEY" in out.out, "says where the credentials came from (by name)"
    assert not fake_colab.home.exists(), "nothing written to the home folder (no kaggle.json)"


def test_setup_in_colab_mounts_drive_for_a_run_there_and_keeps_the_data_path(fake_colab, capsys):
    data = f"{colab.DRIVE_MOUNT}/MyDrive/data"
    assert colab.setup(None, "full", data) == (f"{colab.DRIVE_MOUNT}/MyDrive/seglib/runs/full", data)
    assert fake_colab.kagglehub.calls == []
    assert (Path(colab.DRIVE_MOUNT) / "MyDrive").resolve() == fake_colab.drive.resolve()
    assert "GPU" in capsys.readouterr().out  # the GPU check ran and said what it found


def test_a_refused_drive_says_what_to_do(fake_colab, monkeypatch):
    monkeypatch.delenv("SEGLIB_STANDIN_DRIVE")
    with pytest.raises(RuntimeError, match=r"Google Drive is not mounted.*set OUT_DIR to a folder under /content"):
        colab.setup(None, "quick")
