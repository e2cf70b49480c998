"""The device kit (benchmarks/device_kit.py) installed offline into a stand-in for the H200 machine.

The lent GPU machine has Python 3.12 with numpy, JAX and many more packages, but no network and
no Keras, Jupyter or seglib. The stand-in is a fresh Python 3.12 venv given, from the package
index, only what the kit says it expects of the machine (the kit's machine-needs.txt, all of it
preinstalled there) plus STAND_INS; then the kit's own install.sh installs the rest with no
network (a new network namespace where ``unshare`` works, else a dead proxy), and the venv must
import seglib's stack without TensorFlow, train a Keras model one step on JAX and run a notebook
through papermill. The kit's compiled wheels are cp312, hence Python 3.12 or a clean skip.
Downloads JAX and friends once (pip's cache makes reruns quicker).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT_SCRIPT = ROOT / "benchmarks" / "device_kit.py"
PYENV_312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")
# Preinstalled on the H200 but not in machine-needs.txt: the device's numpy and JAX versions
# (JAX's CPU build here), and what seglib imports without declaring it.
# The first window's time limit: past notebook 01 (which writes run.json) and well before the
# run's end (about 2 min here), so that it stops a run which the second window continues.
FIRST_WINDOW_SECONDS = 45
STAND_INS = ["numpy==2.5.2", "jax[cpu]==0.11.2", "psutil", "requests"]

CHECK = """
import importlib.util, os, sys, tempfile
for absent in ("tensorflow", "nni"):
    assert importlib.util.find_spec(absent) is None, f"{absent} is installed in {sys.prefix}"
import keras, papermill, jupytext, ipykernel, nbclient, nbformat, seglib, patchify
import numpy as np
import seglib.data, seglib.losses, seglib.metrics, seglib.model
assert keras.backend.backend() == "jax", keras.backend.backend()

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
model.compile(optimizer="adam", loss="mse")
loss = float(model.train_on_batch(np.ones((2, 8), "float32"), np.zeros((2, 1), "float32")))
assert np.isfinite(loss), loss

folder = tempfile.mkdtemp()
notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import keras; print(keras.backend.backend())")])
nbformat.write(notebook, os.path.join(folder, "in.ipynb"))
papermill.execute_notebook(os.path.join(folder, "in.ipynb"), os.path.join(folder, "out.ipynb"),
                           kernel_name="python3", progress_bar=False)
printed = nbformat.read(os.path.join(folder, "out.ipynb"), 4).cells[0].outputs[0]["text"].strip()
assert printed == "jax", f"the notebook's kernel ran Keras on {printed!r}"
print(keras.__version__, seglib.__version__, loss)
"""


def device_kit():
    """benchmarks/device_kit.py as a module, for its constants (LIMIT_MIB, REQUIREMENTS)."""
    spec = importlib.util.spec_from_file_location("device_kit", KIT_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def python312() -> str | None:
    """A working Python 3.12: $SEGLIB_PYTHON312, pyenv's 3.12.1, or python3.12 on PATH.

    The same search as tests/test_colab_install.py. Each candidate is run once: a pyenv shim
    exists as a file but fails when 3.12 is not the selected version.
    """
    for candidate in (os.environ.get("SEGLIB_PYTHON312"), str(PYENV_312), shutil.which("python3.12")):
        if not candidate or not Path(candidate).is_file():
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
        )
        if probe.returncode == 0 and probe.stdout.strip() == "(3, 12)":
            return candidate
    return None


def run(*args, env: dict | None = None, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def offline(*args) -> list[str]:
    """The command run with no network: in a new network namespace (loopback up, for the
    Jupyter kernel's sockets) where ``unshare -n`` works here, else behind a dead proxy."""
    if (
        shutil.which("unshare")
        and subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True).returncode == 0
    ):
        return ["unshare", "-n", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *map(str, args)]
    dead = "http://127.0.0.1:9"
    return [
        "env",
        f"http_proxy={dead}",
        f"https_proxy={dead}",
        f"HTTP_PROXY={dead}",
        f"HTTPS_PROXY={dead}",
        "no_proxy=",
        "NO_PROXY=",
        *map(str, args),
    ]


def kit_size_mib(kit: Path) -> float:
    return sum(f.stat().st_size for f in kit.rglob("*") if f.is_file()) / 2**20


def kit_venv(tmp_path: Path) -> Path:
    """Build the kit (no data) in tmp_path/kit, make tmp_path/h200 stand in for the device, and
    install the kit there offline, as on the device. Returns the venv's python.

    Skips (pytest.skip) when no Python 3.12 is found: the kit's compiled wheels are cp312.
    """
    python = python312()
    if python is None:
        pytest.skip(
            "no Python 3.12 found (set SEGLIB_PYTHON312, or install 3.12 with pyenv): the kit's wheels are cp312"
        )
    kit = tmp_path / "kit"
    built = run(sys.executable, KIT_SCRIPT, "--out", kit, "--no-data")
    print(built.stdout)
    print(f"device kit without data: {kit_size_mib(kit):.2f} MiB")

    venv = tmp_path / "h200"
    run(python, "-m", "venv", venv)
    vpy = venv / "bin" / "python"
    run(vpy, "-m", "pip", "install", "-q", "-r", kit / "machine-needs.txt", *STAND_INS)
    run(*offline("env", f"PYTHON={vpy}", "sh", kit / "install.sh"))
    return vpy


@pytest.mark.slow
def test_device_kit_installs_offline_without_tensorflow_and_its_gpu_run_continues_on_a_bare_machine(tmp_path):
    vpy = kit_venv(tmp_path)
    kit = device_kit()
    size = kit_size_mib(tmp_path / "kit")
    assert size <= kit.LIMIT_MIB, f"the kit in {tmp_path / 'kit'} is {size:.2f} MiB, over {kit.LIMIT_MIB} MiB"

    no_tf = run(vpy, "-c", "import tensorflow", check=False)
    assert no_tf.returncode != 0 and "No module named 'tensorflow'" in no_tf.stderr, no_tf.stderr

    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    checked = run(*offline(vpy, "-c", CHECK), env=env)
    keras_version, seglib_version, loss = checked.stdout.split()[-3:]
    print(f"offline in the stand-in venv: keras {keras_version}, seglib {seglib_version}, one JAX step, loss {loss}")
    assert f"keras=={keras_version}" in kit.REQUIREMENTS, f"keras {keras_version} is not the kit's pin"
    assert seglib_version == seglib_installed_here()

    # benchmarks/gpu_full_run.sh as device windows run it, at the quick profile on this CPU
    # (smaller still, one trial a search: the script, the carried state and the offline
    # environment are what is tested). The first window's time limit stops the run; the second
    # starts on a "bare machine" (no run folder, no caches) from what the first left in its OUT.
    env = {
        **os.environ,
        "PYTHON": str(vpy),
        "SEGLIB_PROFILE": "quick",
        "SEGLIB_PRECISION": "fp32",
        "SEGLIB_PARAMS": "-p max_patches=120 -p epochs=2 -p max_budget=1",
        "SEGLIB_GPU_DIR": str(tmp_path / "gpu"),
        "SEGLIB_CACHE": str(tmp_path / "cache"),
        "SEGLIB_COMPILE_CACHE": str(tmp_path / "compile-cache"),
        "JAX_PLATFORMS": "cpu",
        "PATH": f"{vpy.parent}:{os.environ['PATH']}",
    }

    def window(out: Path, *previous: Path, limit: int = 560) -> subprocess.CompletedProcess:
        for machine_state in ("gpu", "cache", "compile-cache"):
            shutil.rmtree(tmp_path / machine_state, ignore_errors=True)
        started = time.perf_counter()
        done = subprocess.run(
            [*offline("bash", ROOT / "benchmarks" / "gpu_full_run.sh", tmp_path / "kit", out, *previous)],
            capture_output=True,
            text=True,
            env={**env, "SEGLIB_TIME_LIMIT": str(limit)},
            cwd=ROOT,
            timeout=1500,
        )
        seconds = time.perf_counter() - started
        print(f"gpu_full_run.sh {out.name} (quick, CPU, offline): {seconds:.0f} s, exit {done.returncode}")
        return done

    first = window(tmp_path / "out1", limit=FIRST_WINDOW_SECONDS)
    assert first.returncode == 124, first.stdout[-3000:] + first.stderr[-3000:]
    handed_over = sorted(p.name for p in (tmp_path / "out1").iterdir())
    assert handed_over == ["compile-cache.tar.gz", "run.log", "state.tar.gz", "timings.json"], handed_over
    with tarfile.open(tmp_path / "out1" / "state.tar.gz") as archive:
        carried = archive.getnames()
    assert "run.json" in carried and not [n for n in carried if n.endswith(".keras") or "checkpoints" in n], carried

    previous = tmp_path / "previous"  # what the user copies into the checkout for the next window
    previous.mkdir()
    for name in ("state.tar.gz", "compile-cache.tar.gz"):
        shutil.copy(tmp_path / "out1" / name, previous)
    out = tmp_path / "out2"
    done = window(out, previous)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"restored {tmp_path / 'gpu' / 'run'}" in done.stdout
    with tarfile.open(previous / "compile-cache.tar.gz") as archive:
        programs = len(archive.getnames())
    assert f"carry_state: {programs} files of compiled programs from" in done.stdout, done.stdout[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["hyperparameter-optimization.md", "report.tar.gz", "run.log", "timings.json"] and len(files) <= 8
    timings = json.loads((out / "timings.json").read_text())
    assert timings["hyperband"]["finished"] and timings["random"]["finished"]
    assert set(timings["notebook_seconds"]) == {"01_data", "02_baseline", "03_hyperband_hpo", "04_report"}
    search = json.loads((tmp_path / "gpu" / "run" / "hpo" / "trials.json").read_text())
    assert (search["summary"]["engine"], search["summary"]["finished"]) == ("local", True)
    pairs = [(t["config_id"], t["budget"]) for t in search["trials"]]
    assert len(pairs) == len(set(pairs)), f"a (configuration, budget) pair recorded twice: {pairs}"
    assert "| Keras backend | jax |" in (out / "hyperparameter-optimization.md").read_text()


def seglib_installed_here() -> str:
    import seglib

    return seglib.__version__


def carry_state():
    spec = importlib.util.spec_from_file_location("carry_state", ROOT / "benchmarks" / "carry_state.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_carried_state_keeps_records_and_leaves_models_checkpoints_and_locks(tmp_path):
    carry = carry_state()
    run = tmp_path / "run"
    kept = ["run.json", "data/split.npz", "hpo/search_state.json", "hpo/trials/c0000-b001/history.json"]
    left = [
        "hpo/checkpoints/c0000/epoch_0001.npz",
        "hpo/checkpoints/c0000/epoch_0001.json",
        "hpo/trials/c0000-b001/model.keras",
        "hpo/driver.lock",
        "baseline/metrics.json",
        "baseline/model.keras",
        "tuned/metrics.json",
        "docs/hyperparameter-optimization.md",
    ]
    for name in kept + left:
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text(name)
    state = carry.pack(run, tmp_path / "out", limit_mib=1)
    with tarfile.open(state) as archive:
        assert sorted(archive.getnames()) == sorted(kept)

    again = tmp_path / "next-machine" / "run"
    assert carry.restore(tmp_path / "out", again)
    assert sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file()) == sorted(kept)
    assert (again / "hpo/search_state.json").read_text() == "hpo/search_state.json"
    with pytest.raises(SystemExit, match="already holds a run"):
        carry.restore(tmp_path / "out", again)  # never over a run
    assert not carry.restore(tmp_path / "empty", tmp_path / "elsewhere")  # nothing carried: start afresh


def test_a_state_too_large_to_travel_back_is_refused_naming_its_largest_file(tmp_path):
    carry = carry_state()
    run = tmp_path / "run"
    (run / "hpo").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    (run / "hpo" / "big.npz").write_bytes(os.urandom(2**20))  # random: does not compress
    with pytest.raises(SystemExit, match=r"over the 0\.5 MiB .*hpo/big\.npz \(1\.0 MiB\)"):
        carry.pack(run, tmp_path / "out", limit_mib=0.5)
    assert not list((tmp_path / "out").iterdir()), "nothing is left behind in OUT"
    assert carry.pack(tmp_path / "no-run-yet", tmp_path / "out", limit_mib=1) is None


def test_the_compile_cache_travels_largest_programs_first_as_far_as_the_limit_allows(tmp_path):
    carry = carry_state()
    cache = tmp_path / "cache"
    cache.mkdir()
    sizes = {"jit_scan-a-cache": 700, "jit_scan-b-cache": 400, "jit_eval-c-cache": 200}  # KiB
    for name, kib in sizes.items():
        (cache / name).write_bytes(os.urandom(kib * 1024))
    archive = carry.pack_cache(cache, tmp_path / "out", budget_mib=1.0)
    with tarfile.open(archive) as opened:
        # 700 KiB fits, 400 more would not, 200 more does
        assert sorted(opened.getnames()) == ["jit_eval-c-cache", "jit_scan-a-cache"]

    elsewhere = tmp_path / "next-machine-cache"
    elsewhere.mkdir()
    (elsewhere / "jit_eval-c-cache").write_bytes(b"compiled there")  # an entry it has is kept
    assert carry.restore_cache(tmp_path / "out", elsewhere) == 1
    assert (elsewhere / "jit_scan-a-cache").read_bytes() == (cache / "jit_scan-a-cache").read_bytes()
    assert (elsewhere / "jit_eval-c-cache").read_bytes() == b"compiled there"
    assert carry.restore_cache(tmp_path / "nothing-came", elsewhere) == 0
    assert carry.pack_cache(tmp_path / "no-cache", tmp_path / "out2", budget_mib=1.0) is None
    assert carry.pack_cache(cache, tmp_path / "out3", budget_mib=0.1) is None  # nothing fits


CACHED_PROGRAM = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
import carry_state
import jax, jax.numpy as jnp
from jax import monitoring
from seglib.train import enable_compile_cache

events = []
monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
step, cache, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[4])
if step == "restore":
    carry_state.restore_cache(out, cache)
enable_compile_cache(cache)
jax.jit(lambda x: jnp.tanh(x @ x.T).sum() * 3.0)(jnp.ones((64, 64))).block_until_ready()
if step == "compile":
    carry_state.pack_cache(cache, out, budget_mib=4.0)
print("HITS", events.count("/jax/compilation_cache/cache_hits"), "MISSES",
      events.count("/jax/compilation_cache/cache_misses"))
"""


def test_a_carried_compile_cache_serves_a_fresh_process_at_the_same_path_on_a_bare_machine(tmp_path):
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    env.pop("SEGLIB_COMPILE_CACHE", None)
    script = tmp_path / "program.py"
    script.write_text(CACHED_PROGRAM)
    out, benchmarks = tmp_path / "out", ROOT / "benchmarks"
    cache = tmp_path / "seglib-gpu" / "compile-cache"  # one absolute path on every machine, as gpu_full_run.sh
    first = run(sys.executable, script, "compile", cache, benchmarks, out, env=env)
    hits, misses = map(int, first.stdout.split()[-3::2])
    assert hits == 0 and misses >= 1, first.stdout
    assert (out / "compile-cache.tar.gz").is_file()
    # a bare machine: another process, the cache folder gone, only what travelled: every program loads
    shutil.rmtree(cache)
    second = run(sys.executable, script, "restore", cache, benchmarks, out, env=env)
    assert second.stdout.split()[-4:] == ["HITS", str(misses), "MISSES", "0"], second.stdout


def test_the_room_to_travel_back_is_what_the_checkout_and_the_kit_leave(tmp_path):
    carry = carry_state()
    checkout = tmp_path / "checkout"  # not a git repository here: every file outside runs/ and .git/
    for name, mib in {
        "seglib/a.py": 1,
        "runs/gpu-out/big": 5,
        ".git/objects/x": 3,
        ".device-kit/wheels/w": 2,
        ".device-kit/previous/state.tar.gz": 1,
    }.items():
        (checkout / name).parent.mkdir(parents=True, exist_ok=True)
        (checkout / name).write_bytes(b"\0" * mib * 2**20)
    kit = checkout / ".device-kit"
    # the kit is counted once, inside the checkout; the state it continued from is replaced, not added
    assert carry.room_mib(checkout, kit, kit / "previous") == pytest.approx(64 - 1 - 2)
    assert carry.room_mib(checkout, kit) == pytest.approx(64 - 1 - 3)
    elsewhere = tmp_path / "kit"
    shutil.copytree(kit, elsewhere)
    assert carry.room_mib(checkout, elsewhere, elsewhere / "previous") == pytest.approx(64 - 4 - 2)


def test_a_trial_stopped_by_two_windows_is_named_when_the_state_is_packed(tmp_path, capsys):
    carry = carry_state()
    run = tmp_path / "run"
    (run / "random").mkdir(parents=True)
    (run / "run.json").write_text("{}")
    stopped = "the search's process was stopped"
    jobs = [
        {"parameter_id": 0, "config_id": "c0000", "budget": 60, "status": "SUCCEEDED", "interruptions": [stopped]},
        {"parameter_id": 1, "config_id": "c0001", "budget": 60, "status": "RUNNING", "interruptions": [stopped]},
        {"parameter_id": 2, "config_id": "c0002", "budget": 60, "status": "QUEUED", "interruptions": [stopped]},
    ]
    configs = {f"c000{k}": {"params": {"batch_size": k + 1}} for k in range(3)}
    (run / "random" / "search_state.json").write_text(json.dumps({"jobs": jobs, "configs": configs}))
    # trial 1: stopped in the last window and the one before; trial 0 finished; trial 2 was stopped once
    assert carry.stalled(run) == ["random: trial 1 (c0001, batch 2, 60 epochs) stopped 2 times"]
    carry.pack(run, tmp_path / "out", limit_mib=1)
    assert "WARNING random: trial 1 (c0001, batch 2, 60 epochs) stopped 2 times" in capsys.readouterr().out
