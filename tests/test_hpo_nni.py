"""seglib's HyperBand on a real NNI: manager, seglib's tuner, real trial processes, tiny data.

Each test starts NNI 3.0 on a free localhost port with its records in a tmp folder, trains a
tiny U-Net (base_filters 4, depth 2) on the embedded dataset at 32x32 on CPU, and always
stops the experiment. Trials use ``SEGLIB_TEST_BACKEND`` (default tensorflow: on a
2-core CPU JAX's first compilation of the U-Net takes longer than TensorFlow's whole start).
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from seglib.hpo import experiment as hpo
from seglib.hpo.hyperband import brackets, pass_epochs, search_space
from seglib.profiles import get_profile

pytestmark = pytest.mark.nni

BACKEND = os.environ.get("SEGLIB_TEST_BACKEND", "tensorflow")
TINY = get_profile("quick", patch_size=32, max_patches=240, base_filters=4, depth=2, batch_size=16, concurrency=2)
# One batch size: every trial compiles the same shapes, so the compilation cache is shared.
SPACE = search_space({"batch_size": {"_type": "choice", "_value": [16]}})
TIMEOUT = 900


@pytest.fixture(scope="session")
def compile_cache(tmp_path_factory):
    """One JAX compilation cache for all experiments here: the U-Net compiles once."""
    return tmp_path_factory.mktemp("compile_cache")


@pytest.fixture
def env(tmp_path, monkeypatch, embedded_root, compile_cache):
    """Isolated data and compilation caches (inherited by NNI's manager and its trials)."""
    monkeypatch.setenv("SEGLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGLIB_COMPILE_CACHE", str(compile_cache))
    return embedded_root


@pytest.fixture
def started():
    """Experiments started by a test; each is stopped at teardown, whatever happened."""
    experiments = []
    yield experiments
    for experiment in experiments:
        try:
            experiment.stop()
        except Exception as error:  # the manager may already be gone (killed on purpose)
            print(f"teardown: stopping {experiment.id}: {error}")


def port() -> int:
    return hpo.free_port(random.randrange(20000, 40000, 2))


def start(out, data, started, **kwargs) -> hpo.HPOExperiment:
    kwargs = {"profile": TINY, "data": data, "space": SPACE, "backend": BACKEND, "port": port(), "seed": 3} | kwargs
    experiment = hpo.start(out, **kwargs)
    started.append(experiment)
    return experiment


def load_export(out: Path) -> dict:
    trials = json.loads((out / "trials.json").read_text())
    best = json.loads((out / "best.json").read_text())
    assert (out / "trials.csv").read_text().count("\n") == len(trials["trials"]) + 1
    return {"trials": trials["trials"], "summary": trials["summary"], "best": best}


def epochs_in_history(out: Path, row: dict) -> list[int]:
    history = json.loads((out / "trials" / f"{row['config_id']}-b{row['budget']:03d}" / "history.json").read_text())
    return [entry["epoch"] for entry in history["epochs"]]


@pytest.mark.slow
def test_a_complete_hyperband_pass_warm_starts_and_survives_nan_and_crashes(tmp_path, env, started):
    """R=9, η=3: every bracket runs; trained epochs = budget - the rung resumed from.

    The search space makes some trials diverge (learning rate 1e30: NaN loss) and some crash
    (an activation the model refuses): the first get the finite penalty, the second a FAILED
    record with their traceback; neither is promoted and neither stalls its bracket.
    """
    out = tmp_path / "hb"
    space = SPACE | {
        "learning_rate": {"_type": "choice", "_value": [1e30, 3e-3, 1e-2, 3e-2]},
        "activation_type": {"_type": "choice", "_value": ["relu", "tanh", "swish", "no-such-activation"]},
    }
    experiment = start(out, env, started, max_budget=9, eta=3, space=space)
    t0 = time.time()
    experiment.wait(timeout=TIMEOUT)
    print(f"HyperBand pass R=9: {time.time() - t0:.0f} s")
    experiment.stop()
    exported = hpo.export(out)
    data = load_export(out)
    rows = data["trials"]
    by_status = {s: [r for r in rows if r["status"] == s] for s in ("SUCCEEDED", "DIVERGED", "FAILED")}
    assert sum(map(len, by_status.values())) == len(rows), [(r["config_id"], r["status"]) for r in rows]
    assert by_status["DIVERGED"] and by_status["FAILED"], "the seed should give both kinds of bad trial"
    assert data["summary"]["finished"] is True

    assert all(r["final"]["default"] == 100.0 for r in by_status["DIVERGED"])
    for row in by_status["FAILED"]:
        assert "no-such-activation" in row["error"]
        folder = out / "trials" / f"{row['config_id']}-b{row['budget']:03d}"
        assert "Traceback" in (folder / "error.txt").read_text()
        assert row["params"]["activation_type"] == "no-such-activation"
    assert all(r["status"] == "FAILED" for r in rows if r["params"]["activation_type"] == "no-such-activation")

    schedule = {(b.s, i): rung for b in brackets(9, 3) for i, rung in enumerate(b.rungs)}
    for row in rows:
        budget = schedule[(row["bracket"], row["rung"])].budget
        previous = 0 if row["rung"] == 0 else schedule[(row["bracket"], row["rung"] - 1)].budget
        assert row["budget"] == budget
        if row["status"] == "SUCCEEDED":
            assert row["resumed_from"] == previous, row
            assert row["epochs_trained"] == budget - previous, row
            assert epochs_in_history(out, row) == list(range(previous + 1, budget + 1))
            assert len(row["curve"]) == budget - previous
            assert {"precision", "recall", "mean_iou"} <= set(row["final"])
    pairs = [(r["config_id"], r["budget"]) for r in rows]
    assert len(pairs) == len(set(pairs))
    # Only configurations with a finite loss are promoted; each rung takes at most its share.
    bad = {r["config_id"] for r in rows if r["status"] != "SUCCEEDED"}
    promoted = [r for r in rows if r["rung"] > 0]
    assert promoted and all(r["config_id"] not in bad or r["status"] != "SUCCEEDED" for r in promoted)
    for (s, i), rung in schedule.items():
        assert len([r for r in rows if (r["bracket"], r["rung"]) == (s, i)]) <= rung.n_configs
    assert len(rows) <= pass_epochs(9, 3)["trials"]
    assert data["best"]["value"] == min(r["value"] for r in by_status["SUCCEEDED"])
    assert data["best"]["params"]["learning_rate"] != 1e30
    assert exported["summary"]["epochs_trained"] == sum(r["epochs_trained"] for r in rows)
    for row in rows:  # Unix seconds; a trial's span holds its own training time
        assert row["start_time"] + row["seconds"] <= row["end_time"] + 1e-3 <= t0 + TIMEOUT, row
    seconds = sorted(r["first_epoch_seconds"] for r in rows if r["first_epoch_seconds"])
    print(f"first epoch ends {seconds[0]:.1f}-{seconds[-1]:.1f} s after trial start (median {seconds[len(seconds) // 2]:.1f})")


@pytest.mark.slow
def test_killing_the_manager_then_resuming_loses_nothing_and_trains_no_pair_twice(tmp_path, env, started):
    out = tmp_path / "resumed"
    experiment = start(out, env, started, max_budget=3, eta=3)
    deadline = time.time() + TIMEOUT
    while hpo.progress(out)["succeeded"] < 2:  # some trials finished, others running
        experiment.check()
        assert time.time() < deadline
        time.sleep(1)
    before = {r["config_id"] + f"-{r['budget']}": r for r in hpo.collect_trials(experiment.layout) if r["status"] == "SUCCEEDED"}
    os.killpg(experiment.nni._proc.pid, signal.SIGKILL)  # the manager, as a crash would
    experiment.nni._proc.wait()
    experiment.stop()
    time.sleep(4)  # trials notice the manager is gone within 2 s and stop

    resumed = hpo.resume(out, port=port())
    started.append(resumed)
    resumed.wait(timeout=TIMEOUT)
    resumed.stop()
    data = hpo.export(out)
    rows = {r["config_id"] + f"-{r['budget']}": r for r in data["trials"]}

    assert data["summary"]["finished"] is True
    assert len(rows) == pass_epochs(3, 3)["trials"] == len(data["trials"])
    for key, row in before.items():  # finished before the kill: kept, with the same result
        assert rows[key]["status"] == "SUCCEEDED"
        assert rows[key]["value"] == row["value"]
        assert rows[key]["trial_ids"][0] == row["trial_ids"][0]
    for row in data["trials"]:
        assert row["status"] == "SUCCEEDED", row
        epochs = epochs_in_history(out, row)
        assert len(epochs) == len(set(epochs)), f"{row['config_id']} budget {row['budget']} trained an epoch twice: {epochs}"
        assert row["epochs_trained"] == row["budget"] - row["resumed_from"]
    assert sum(r["epochs_trained"] for r in data["trials"]) == pass_epochs(3, 3)["warm_start"]


def test_a_dead_tuner_fails_loudly_instead_of_hanging(tmp_path, env, started):
    out = tmp_path / "dead"
    experiment = start(out, env, started, max_budget=3, eta=3)
    deadline = time.time() + 120
    while not experiment.layout.heartbeat_file.is_file():
        assert time.time() < deadline
        time.sleep(0.5)
    pid = json.loads(experiment.layout.heartbeat_file.read_text())["pid"]
    os.kill(pid, signal.SIGKILL)
    t0 = time.time()
    with pytest.raises(hpo.ExperimentFailed, match="tuner process"):
        experiment.wait(every=1, timeout=60)
    assert time.time() - t0 < 30
    assert experiment.status() == "RUNNING"  # what NNI itself would have kept saying


def test_manager_listens_on_localhost_only_and_is_not_started_twice(tmp_path, env, started):
    import psutil

    out = tmp_path / "bind"
    experiment = start(out, env, started, max_budget=1, eta=3, concurrency=1)
    manager = psutil.Process(experiment.nni._proc.pid)
    listening = [c.laddr for c in manager.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert ("127.0.0.1", experiment.port) in [(a.ip, a.port) for a in listening]
    assert all(a.ip in ("127.0.0.1", "::1") for a in listening), listening
    # A second process (e.g. after a kernel restart) reaches it instead of starting another manager.
    with pytest.raises(RuntimeError, match="still running"):
        hpo.resume(out)
    with pytest.raises(FileExistsError, match="already holds an experiment"):
        hpo.start(out, profile=TINY, data=env)
    assert hpo.connect(out).id == experiment.id
    deadline = time.time() + 120
    while not experiment.layout.heartbeat_file.is_file():  # let the tuner connect before stopping
        assert time.time() < deadline
        time.sleep(0.5)
    hpo.stop(out)
    assert not hpo._manager_running(experiment.record)


@pytest.mark.slow
def test_cli_random_search_at_a_given_epoch_budget_writes_the_export(tmp_path, env, monkeypatch, capsys):
    """``seglib hpo --tuner random``: NNI's Random tuner, R epochs per trial, epochs // R trials.

    The profile asks for bf16: the trials' models must be trained in it.
    """
    import keras

    from seglib import cli
    from seglib.train import load_model

    out = tmp_path / "random"
    monkeypatch.setattr("seglib.profiles.PROFILES", {"tiny": TINY.replace(name="tiny", precision="bf16")})
    code = cli.main(["hpo", "--profile", "tiny", "--out", str(out), "--data", str(env), "--tuner", "random",
                     "--max-budget", "2", "--max-epochs", "4", "--port", str(port()), "--backend", BACKEND])
    assert code == 0
    data = load_export(out)
    assert [r["status"] for r in data["trials"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r["epochs_trained"] for r in data["trials"]] == [2, 2]
    assert data["summary"]["tuner"] == "random" and data["summary"]["finished"] is True
    assert data["best"]["params"]["batch_size"] in range(1, 32)
    assert "wrote" in capsys.readouterr().out
    for row in data["trials"]:
        model = load_model(row["model"], compile=False)
        convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert {layer.dtype_policy.name for layer in convolutions[:-1]} == {"mixed_bfloat16"}
