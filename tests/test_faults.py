"""Kill anything at any moment and lose nothing: fault injection into a real search.

Each scenario runs a tiny search (R = 3, η = 3: six trials, 11 epochs) on NNI as ``seglib hpo``
processes, ``kill -9``s one of its processes at a chosen moment, resumes where needed, and
checks what the rule in docs/hpo.md promises: no finished (configuration, budget) lost or
trained again, no epoch trained twice, the same trials as an uninterrupted run with the same
seed, and no process of the search left. Then the machine's faults: a full disk and a damaged
state file, each ending in one line that names it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time

import psutil
import pytest
from hpo_helpers import (
    ONE_BATCH_SIZE,
    TINY_OVERRIDES,
    cli_args,
    epochs_in_history,
    processes_of,
    start_driver,
    wait_for,
)

from seglib import hpo
from seglib.hpo.engines.nni import free_port
from seglib.settings import profile

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
def reference(data, tmp_path_factory):
    """The same search, uninterrupted (in-process: the engines test shows it is NNI's search)."""
    settings = profile("quick", **TINY_OVERRIDES, data=str(data), max_budget=3, eta=3, seed=SEED, engine="local")
    folder = tmp_path_factory.mktemp("reference") / "hpo"
    experiment = hpo.tune(folder, settings, space=hpo.search_space(ONE_BATCH_SIZE))
    return sorted((r.config_id, r.budget) for r in experiment.trials)


def args_for(data, space_file, **extra):
    return cli_args(
        data,
        max_budget=3,
        seed=SEED,
        backend=BACKEND,
        space=space_file,
        port=free_port(random.randrange(20000, 40000, 2)),
        **extra,
    )


def some_finished_one_running(out):
    progress = hpo.progress(out)
    return progress["succeeded"] >= 2 and progress["running"] >= 1


def finished_pairs(out) -> dict:
    return {(r.config_id, r.budget): r for r in hpo.export(out).trials if r.status == "SUCCEEDED"}


def resume(out, data, space_file) -> str:
    driver = start_driver(out, args_for(data, space_file, resume=True))
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


def test_trial_killed_after_an_epoch_resumes_from_its_checkpoint(tmp_path, data, space_file, reference):
    """A trial process killed mid-epoch is handed out again at once and resumes from its last epoch."""
    out = tmp_path / "hpo"
    driver = start_driver(out, args_for(data, space_file, concurrency=1))

    def running_with_an_epoch():
        for folder in (out / "trials").glob("*-b003"):
            history = json.loads((folder / "history.json").read_text())
            for attempt in history["attempts"]:
                mine = [e for e in history["epochs"] if e["trial_id"] == attempt["trial_id"]]
                if attempt["status"] == "RUNNING" and 1 <= len(mine) < 3 and psutil.pid_exists(attempt["pid"]):
                    return folder, attempt["pid"]
        return None

    folder, pid = wait_for(running_with_an_epoch, TIMEOUT, driver, every=0.1)
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
        assert "Traceback" not in err and len(err.strip().splitlines()) <= 2, err
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


@pytest.mark.parametrize("engine", ["local", "nni"])
@pytest.mark.parametrize("tuner", ["asha", "bohb"])
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
    resumed = start_driver(out, [*args, "--resume"])
    _, err = resumed.communicate(timeout=TIMEOUT)
    assert resumed.returncode == 0, err[-3000:]
    assert_nothing_lost(out, before, tuner_references[tuner])
    assert json.loads((out / "search_state.json").read_text())["kind"] == tuner
