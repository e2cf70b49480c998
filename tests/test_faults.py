"""Kill anything at any moment and lose nothing: fault injection into a real search.

Each scenario runs a tiny search (R = 3, η = 3: six trials, 11 epochs) on NNI as ``seglib hpo``
processes, ``kill -9``s one of its processes at a chosen moment, resumes where needed, and
checks what the rule in docs/hpo.md promises: no finished (configuration, budget) lost or
trained again, no epoch trained twice, the same trials as an uninterrupted run with the same
seed, and no process of the search left. Then the machine's faults: a full disk and a damaged
state file, each ending in one line that names it. Then damaged and missing files: a
truncated checkpoint (of a trial, of the baseline), a finished trial's folder deleted, a
garbage export, damaged trial code, a damaged model a later step reads, and two searches
started at once on one folder: each named, none changing a result without a word.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from hpo_helpers import (
    ONE_BATCH_SIZE,
    TINY_OVERRIDES,
    cli_args,
    epochs_in_history,
    processes_of,
    spare_port,
    start_driver,
    wait_for,
)

from seglib import hpo
from seglib.artifacts import ExperimentPaths
from seglib.hpo.driver import DriverLock, SearchRunning
from seglib.settings import profile
from seglib.system import machine_name

pytestmark = [pytest.mark.nni, pytest.mark.slow]

BACKEND = os.environ.get("SEGLIB_TEST_BACKEND", "tensorflow")
SEED = 3
TIMEOUT = 900


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "space.json"
    path.write_text(json.dumps(ONE_BATCH_SIZE))
    return path


@pytest.fixture(scope="module")
def reference_search(data, tmp_path_factory):
    """The same search, uninterrupted (in-process: the engines test shows it is NNI's search)."""
    settings = profile("quick", **TINY_OVERRIDES, data=str(data), max_budget=3, eta=3, seed=SEED, engine="local")
    folder = tmp_path_factory.mktemp("reference") / "hpo"
    return hpo.tune(folder, settings, space=hpo.search_space(ONE_BATCH_SIZE))


@pytest.fixture(scope="module")
def reference(reference_search):
    return sorted((r.config_id, r.budget) for r in reference_search.trials)


def args_for(data, space_file, **extra):
    return cli_args(
        data,
        max_budget=3,
        seed=SEED,
        backend=BACKEND,
        space=space_file,
        port=spare_port(),
        **extra,
    )


def local_args(data, space_file, **extra):
    """The same tiny search on the in-process engine (one process: the driver is the trial)."""
    return cli_args(data, max_budget=3, seed=SEED, engine="local", space=space_file, **extra)


def some_finished_one_running(out):
    progress = hpo.progress(out)
    return progress["succeeded"] >= 2 and progress["running"] >= 1


def finished_pairs(out) -> dict:
    return {(r.config_id, r.budget): r for r in hpo.export(out).trials if r.status == "SUCCEEDED"}


def resume(out, data, space_file, **extra) -> str:
    """``--resume`` on a port of its own: the killed search's NNI manager may still hold its old one."""
    driver = start_driver(out, args_for(data, space_file, resume=True, **extra))
    _, err = driver.communicate(timeout=TIMEOUT)
    assert driver.returncode == 0, err[-3000:]
    return err


def assert_nothing_lost(out, before: dict, reference: list) -> None:
    after = hpo.export(out)
    assert after.summary.finished, after.summary
    pairs = [(r.config_id, r.budget) for r in after.trials]
    assert len(pairs) == len(set(pairs)), "a (configuration, budget) was trained twice"
    assert sorted(pairs) == reference, "not the uninterrupted run's trials"
    rows = dict(zip(pairs, after.trials))
    for key, row in before.items():
        assert rows[key].status == "SUCCEEDED" and rows[key].value == row.value, (key, rows[key], row)
        assert rows[key].trial_ids[0] == row.trial_ids[0], "a finished trial was run again"
    for row in after.trials:
        epochs = epochs_in_history(out, row)
        assert len(epochs) == len(set(epochs)), f"{row.config_id}-b{row.budget} trained an epoch twice: {epochs}"
        assert row.status == "SUCCEEDED" and row.epochs_trained == row.budget - row.resumed_from, row
        history = json.loads((out / "trials" / f"{row.config_id}-b{row.budget:03d}" / "history.json").read_text())
        assert all(a["status"] != "RUNNING" for a in history["attempts"]), history["attempts"]
    wait_for(lambda: not processes_of(out), 60)


def test_driver_killed(tmp_path, data, space_file, reference):
    """The driver goes (a kernel restart, a closed laptop): its tuner stops the experiment, resume continues."""
    out = tmp_path / "hpo"
    driver = start_driver(out, args_for(data, space_file))
    wait_for(lambda: some_finished_one_running(out), TIMEOUT, driver)
    before = finished_pairs(out)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_for(lambda: not processes_of(out), 60)  # tuner, manager and trials stop on their own
    assert hpo.progress(out)["interrupted"] >= 1 and hpo.progress(out)["running"] == 0
    resume(out, data, space_file)
    assert_nothing_lost(out, before, reference)


@pytest.mark.parametrize("victim", ["manager", "tuner"])
def test_manager_or_tuner_killed(tmp_path, data, space_file, reference, victim):
    out = tmp_path / "hpo"
    driver = start_driver(out, args_for(data, space_file))
    wait_for(lambda: some_finished_one_running(out), TIMEOUT, driver)
    before = finished_pairs(out)
    if victim == "manager":
        pid = next(p.pid for p in psutil.Process(driver.pid).children(recursive=True) if p.name() == "node")
    else:
        pid = json.loads((out / "tuner_heartbeat.json").read_text())["pid"]
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 1 and time.time() - t0 < 60, err[-2000:]
    assert victim in err and "--resume" in err and "Traceback" not in err, err[-2000:]
    wait_for(lambda: not processes_of(out), 60)
    resume(out, data, space_file)
    assert_nothing_lost(out, before, reference)


def running_with_an_epoch(out):
    """(trial folder, pid) of a 3-epoch trial that has trained one or two epochs and still runs."""
    for folder in (out / "trials").glob("*-b003"):
        try:
            history = json.loads((folder / "history.json").read_text())
        except (OSError, ValueError):
            continue
        for attempt in history["attempts"]:
            mine = [e for e in history["epochs"] if e["trial_id"] == attempt["trial_id"]]
            if attempt["status"] == "RUNNING" and 1 <= len(mine) < 3 and psutil.pid_exists(attempt["pid"]):
                return folder, attempt["pid"]
    return None


def test_trial_killed_after_an_epoch_resumes_from_its_checkpoint(tmp_path, data, space_file, reference):
    """A trial process killed mid-epoch is handed out again at once and resumes from its last epoch."""
    out = tmp_path / "hpo"
    driver = start_driver(out, args_for(data, space_file, concurrency=1))
    folder, pid = wait_for(lambda: running_with_an_epoch(out), TIMEOUT, driver, every=0.1)
    before = finished_pairs(out)
    os.kill(pid, signal.SIGKILL)
    _, err = driver.communicate(timeout=TIMEOUT)
    assert driver.returncode == 0, err[-3000:]
    assert_nothing_lost(out, before, reference)
    history = json.loads((folder / "history.json").read_text())
    first, second = history["attempts"][:2]
    done_first = sum(1 for e in history["epochs"] if e["trial_id"] == first["trial_id"])
    assert first["status"] == "INTERRUPTED" and "without a result" in first["error"]
    assert second["initial_epoch"] == first["initial_epoch"] + done_first  # resumed from its epoch-k checkpoint


def test_a_full_disk_halts_the_search_and_says_enospc(tmp_path, data, space_file):
    disk = tmp_path / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or mounted.returncode}): needs root")
    try:
        driver = start_driver(disk / "hpo", cli_args(data, max_budget=3, seed=SEED, engine="local", space=space_file))
        _, err = driver.communicate(timeout=TIMEOUT)
        assert driver.returncode == 1, err[-3000:]
        last = err.strip().splitlines()[-1]
        assert last.startswith("seglib hpo: ") and "halted" in last and "ENOSPC" in last and "--resume" in last, err[
            -3000:
        ]
        # Besides that line: the dataset's own warning, and where the disk refused the failed
        # trial's record (then the state that the search halted: it says so only here).
        others = err.strip().splitlines()[:-1]
        assert "Traceback" not in err and len(others) <= 2, err
        assert all("off-palette" in line or line.startswith("could not record the failure of") for line in others), err
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_damaged_state_file_is_named_with_what_to_do(tmp_path, data, space_file):
    out = tmp_path / "hpo"
    done = start_driver(out, cli_args(data, max_budget=1, seed=SEED, engine="local", space=space_file))
    assert done.wait(timeout=TIMEOUT) == 0
    state = out / "search_state.json"
    state.write_text(state.read_text()[: len(state.read_text()) // 2])
    again = start_driver(out, cli_args(data, max_budget=1, seed=SEED, engine="local", space=space_file, resume=True))
    _, err = again.communicate(timeout=120)
    assert again.returncode == 1 and f"seglib hpo: {state} is not valid JSON" in err and "new folder" in err, err
    assert "Traceback" not in err


# --- ASHA and BOHB: the same rule, whichever search hands the pairs out ----------------------


@pytest.fixture(scope="module")
def tuner_references(data, tmp_path_factory):
    """Each new search, uninterrupted, in-process: one trial at a time decides the same trials on either engine."""
    found = {}
    for tuner in ("asha", "bohb"):
        settings = profile(
            "quick", **TINY_OVERRIDES, data=str(data), max_budget=3, eta=3, seed=SEED, engine="local", tuner=tuner
        )
        folder = tmp_path_factory.mktemp(f"reference-{tuner}") / tuner
        experiment = hpo.tune(folder, settings, space=hpo.search_space(ONE_BATCH_SIZE))
        found[tuner] = sorted((r.config_id, r.budget) for r in experiment.trials)
    return found


# Each tuner once and each engine once: the state machine and the drivers are shared, and the
# other two pairs doubled the kill tests' minutes without a path of their own.
@pytest.mark.parametrize(("tuner", "engine"), [("asha", "nni"), ("bohb", "local")])
def test_driver_killed_mid_search_of_asha_or_bohb(tmp_path, data, space_file, tuner_references, tuner, engine):
    """kill -9 of the driver of an ASHA or BOHB search, then --resume: the uninterrupted run's trials, none twice."""
    out = tmp_path / tuner
    args = args_for(data, space_file, tuner=tuner, engine=engine, concurrency=1)
    driver = start_driver(out, args)
    wait_for(lambda: some_finished_one_running(out), TIMEOUT, driver)
    before = finished_pairs(out)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    wait_for(lambda: not processes_of(out), 60)
    assert hpo.progress(out)["interrupted"] >= 1 and hpo.progress(out)["running"] == 0
    resume(out, data, space_file, tuner=tuner, engine=engine, concurrency=1)
    assert_nothing_lost(out, before, tuner_references[tuner])
    assert json.loads((out / "search_state.json").read_text())["kind"] == tuner


# ---------------------------------------------------------------------------------------------
# Damaged and missing files: each named, none changing a result without a word


def assert_same_result(out, reference_search) -> None:
    """The search's export has the uninterrupted run's trials, values (to float noise) and best."""
    after = hpo.export(out)
    values = {(r.config_id, r.budget): r.value for r in after.trials}
    expected = {(r.config_id, r.budget): r.value for r in reference_search.trials}
    assert values.keys() == expected.keys() and after.summary.finished, after.summary
    for key, value in expected.items():
        assert values[key] == pytest.approx(value, rel=1e-4), (key, values[key], value)
    assert (after.best.config_id, after.best.budget) == (reference_search.best.config_id, reference_search.best.budget)


def copy_of(reference_search, tmp_path) -> Path:
    """A finished search's folder, copied (the in-process engine resumes it wherever it is)."""
    out = tmp_path / "hpo"
    shutil.copytree(reference_search.folder, out)
    return out


def resume_local(out, data, space_file) -> tuple[int, str, str]:
    driver = start_driver(out, local_args(data, space_file, resume=True))
    stdout, stderr = driver.communicate(timeout=TIMEOUT)
    return driver.returncode, stdout, stderr


def test_a_truncated_checkpoint_is_set_aside_and_its_trial_resumes_before_it(
    tmp_path, data, space_file, reference, reference_search
):
    """Killed mid-trial, then its latest checkpoint truncated: set aside by name, the result unchanged."""
    out = tmp_path / "hpo"
    driver = start_driver(out, local_args(data, space_file))
    folder, _ = wait_for(lambda: running_with_an_epoch(out), TIMEOUT, driver, every=0.1)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = finished_pairs(out)
    checkpoints = out / "checkpoints" / folder.name.split("-")[0]
    complete = [p for p in checkpoints.glob("epoch_*.npz") if p.with_suffix(".json").is_file()]
    victim = max(complete)  # the one the trial would resume from
    half = victim.stat().st_size // 2
    os.truncate(victim, half)

    code, _, err = resume_local(out, data, space_file)
    assert code == 0, err[-3000:]
    assert f"cannot read checkpoint {victim}: truncated zip" in err, err[-3000:]
    assert f"sets it aside as {victim.name}.damaged: training resumes from epoch" in err, err[-3000:]
    assert victim.with_name(victim.name + ".damaged").stat().st_size == half  # kept, never read again
    assert_nothing_lost(out, before, reference)
    assert_same_result(out, reference_search)
    history = json.loads((folder / "history.json").read_text())
    last = history["attempts"][-1]
    assert last["set_aside"] == [str(victim) + ".damaged"] and last["initial_epoch"] < int(victim.stem[-4:])


def test_a_finished_trials_folder_deleted_is_trained_again(tmp_path, data, space_file, reference_search):
    """Never a success without a result: the pair runs again, from its rung's start, to the same value."""
    out = copy_of(reference_search, tmp_path)
    best = reference_search.best
    gone = out / "trials" / f"{best.config_id}-b{best.budget:03d}"
    shutil.rmtree(gone)
    row = next(r for r in hpo.export(out).trials if (r.config_id, r.budget) == (best.config_id, best.budget))
    assert row.status == "INTERRUPTED" and row.value is None and "no result" in row.error

    code, _, err = resume_local(out, data, space_file)
    assert code == 0, err[-3000:]
    assert f"{gone} holds no result: {gone.name} is trained again" in err, err[-3000:]
    assert_same_result(out, reference_search)
    rows = {(r.config_id, r.budget): r for r in hpo.export(out).trials}
    for old in reference_search.trials:
        new = rows[(old.config_id, old.budget)]
        if (old.config_id, old.budget) == (best.config_id, best.budget):
            assert new.status == "SUCCEEDED" and new.trial_ids[0] not in old.trial_ids
            assert new.epochs_trained == new.budget - new.resumed_from == len(new.curve) > 0, new
        else:
            assert new.trial_ids == old.trial_ids, "a finished trial was run again"


def test_a_garbage_export_of_a_finished_search_is_rewritten(tmp_path, data, space_file, reference_search):
    out = copy_of(reference_search, tmp_path)
    names = ("trials.csv", "trials.json", "best.json")
    originals = {name: (out / name).read_bytes() for name in names}
    for name in names:
        (out / name).write_text("garbage\x00,{")
    code, stdout, err = resume_local(out, data, space_file)
    assert code == 0 and f"wrote {out / 'trials.csv'}" in stdout, err[-3000:]
    assert {name: (out / name).read_bytes() for name in names} == originals


@pytest.mark.parametrize("name", ["split.npz", "settings.json"])
def test_damaged_trial_code_stops_the_search_naming_the_file(tmp_path, data, space_file, reference_search, name):
    """What every trial reads is read first: damaged, the search exits 1 naming it, before any trial starts."""
    out = copy_of(reference_search, tmp_path)
    shutil.rmtree(out / "trials" / "c0003-b003")  # something left to run
    damaged = out / "trial_code" / name
    os.truncate(damaged, damaged.stat().st_size // 2)
    code, _, err = resume_local(out, data, space_file)
    last = err.strip().splitlines()[-1]
    assert code == 1 and last.startswith(f"seglib hpo: {damaged}"), err[-3000:]
    assert "Traceback" not in err and not (out / "trials" / "c0003-b003" / "history.json").exists()


def test_two_searches_started_at_once_on_one_new_folder(tmp_path, data, space_file):
    """Exactly one runs; the other is refused naming it; the folder is the one that ran, seed and all."""
    out = tmp_path / "hpo"
    drivers = {
        seed: start_driver(out, cli_args(data, max_budget=1, seed=seed, engine="local", space=space_file))
        for seed in (1, 2)
    }
    ended = {seed: (*driver.communicate(timeout=TIMEOUT), driver.returncode) for seed, driver in drivers.items()}
    winners = [seed for seed, (_, _, code) in ended.items() if code == 0]
    assert len(winners) == 1, {seed: (code, err[-1500:]) for seed, (_, err, code) in ended.items()}
    (winner,) = winners
    (loser,) = {1, 2} - {winner}
    _, err, code = ended[loser]
    assert code == 1 and f"the search in {out} is running in process {drivers[winner].pid}" in err, err[-3000:]
    experiment = json.loads((out / "experiment.json").read_text())
    state = json.loads((out / "search_state.json").read_text())
    assert experiment["plan"]["seed"] == experiment["settings"]["seed"] == state["seed"] == winner
    assert hpo.export(out).summary.finished


# ---------------------------------------------------------------------------------------------
# seglib run: the baseline's checkpoint and model


def stand_in_notebooks(folder: Path) -> Path:
    """The real 01 and 02, with 03 and 04 that do nothing (the search is tested above)."""
    import nbformat

    from seglib.run import NOTEBOOKS

    folder.mkdir(parents=True)
    real = Path(__file__).resolve().parents[1] / "notebooks"
    for name in NOTEBOOKS[:2]:
        shutil.copy(real / f"{name}.ipynb", folder)
    for name in NOTEBOOKS[2:]:
        params = nbformat.v4.new_code_cell('OUT_DIR = None\nPROFILE = "quick"')
        params.metadata["tags"] = ["parameters"]
        notebook = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell("print('stand-in')")])
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(notebook, folder / f"{name}.ipynb")
    return folder


def seglib_run(out, notebooks, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "seglib.cli", "run", "--out", str(out), "--notebooks", str(notebooks)]
    command += ["-p", "epochs=4", "-p", "max_patches=120"]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.mark.notebooks
def test_a_truncated_baseline_checkpoint_is_retrained_and_a_damaged_model_named(tmp_path, data):
    """`seglib run` killed mid-baseline, its checkpoint truncated: the rerun sets it aside and
    trains the same baseline; a damaged baseline/model.keras is named with what to do."""
    from seglib import pipeline
    from seglib.artifacts import read_model_record

    notebooks = stand_in_notebooks(tmp_path / "notebooks")
    out = tmp_path / "run"
    checkpoints = out / "baseline" / "checkpoints"
    first = seglib_run(out, notebooks)
    wait_for(lambda: list(checkpoints.glob("epoch_*.json")), TIMEOUT, first, every=0.1)
    for process in [*psutil.Process(first.pid).children(recursive=True), psutil.Process(first.pid)]:
        process.kill()  # the command and its kernel, as a closed laptop would
    first.communicate()
    victim = max(p.with_suffix(".npz") for p in checkpoints.glob("epoch_*.json"))
    os.truncate(victim, victim.stat().st_size // 2)

    again = seglib_run(out, notebooks)
    _, err = again.communicate(timeout=TIMEOUT)
    assert again.returncode == 0, err[-3000:]
    executed = (out / "02_baseline.ipynb").read_text()
    assert f"cannot read checkpoint {victim}: truncated zip" in executed and "sets it aside as" in executed
    assert victim.with_name(victim.name + ".damaged").is_file()
    reference = tmp_path / "reference"
    run = pipeline.start_run(reference, "quick", None, {"epochs": 4, "max_patches": 120})
    pipeline.prepare_data(run)
    straight = pipeline.train_baseline(run)
    trained = read_model_record(out / "baseline" / "metrics.json", "notebooks/02_baseline")
    assert trained.epochs_trained == straight.epochs_trained == 4
    np.testing.assert_allclose(trained.history["val_loss"], straight.history["val_loss"], rtol=1e-4)

    model = out / "baseline" / "model.keras"
    os.truncate(model, model.stat().st_size // 2)
    third = seglib_run(out, notebooks)
    _, err = third.communicate(timeout=TIMEOUT)
    assert third.returncode == 1 and "02_baseline.ipynb" in err, err[-3000:]
    assert f"cannot read model {model}: truncated zip" in err, err[-3000:]
    assert f"retrain it (delete the folder {out / 'baseline'} and run again) or restore the file" in err


def test_a_lock_taken_a_moment_before_its_record_is_written_is_refused_naming_its_holder(tmp_path):
    """Two drivers started at once: the loser can find the lock held and its record not yet written."""
    paths = ExperimentPaths.of(tmp_path / "hpo")
    paths.root.mkdir(parents=True)
    holder = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held, its record still to come
    record = json.dumps({"pid": os.getpid(), "host": machine_name(), "started": time.time()}) + "\n"
    writer = threading.Timer(0.3, lambda: os.pwrite(holder, record.encode(), 0))
    writer.start()
    try:
        refused = pytest.raises(SearchRunning, match=f"running in process {os.getpid()} on {machine_name()}")
        with refused, DriverLock(paths):
            pass
    finally:
        writer.join()
        os.close(holder)
