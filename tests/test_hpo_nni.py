"""seglib's search on a real NNI: manager, seglib's tuner, real trial processes, tiny data.

Each test runs NNI 3.0 on a free localhost port with its records in a tmp folder and trains a
tiny U-Net (base_filters 4, depth 2) on the embedded dataset at 32x32 on CPU. Trials use
``SEGLIB_TEST_BACKEND`` (default tensorflow: on a 2-core CPU JAX's first compilation of the
U-Net takes longer than TensorFlow's whole start). Searches that a test must reach from
outside (kill, stop, a second driver) run as ``seglib hpo`` processes.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from hpo_helpers import TINY_OVERRIDES, cli_args, epochs_in_history, processes_of, spare_port, start_driver, wait_for

from seglib import hpo
from seglib.hpo.hyperband import brackets, pass_epochs
from seglib.hpo.space import search_space
from seglib.settings import profile

pytestmark = pytest.mark.nni

BACKEND = os.environ.get("SEGLIB_TEST_BACKEND", "tensorflow")
TINY = profile("quick", **TINY_OVERRIDES)
# One batch size: every trial compiles the same shapes, so the compilation cache is shared.
SPACE = search_space({"batch_size": {"_type": "choice", "_value": [16]}})
TIMEOUT = 900


@pytest.fixture
def env(tmp_path, monkeypatch, embedded_root):
    """Isolated data and compilation caches (inherited by NNI's manager and its trials)."""
    monkeypatch.setenv("SEGLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEGLIB_COMPILE_CACHE", str(tmp_path / "compile_cache"))
    return embedded_root


@pytest.mark.slow
def test_a_complete_hyperband_pass_warm_starts_and_survives_nan_and_crashes(tmp_path, env):
    """R=4, η=2 on NNI (3 brackets, 14 trials): every bracket runs; trained epochs = budget - the rung resumed from.

    The search space makes some trials diverge (learning rate 1e30 with relu or swish: NaN loss) and some fail
    (an activation the settings refuse): the first get the finite penalty, the second a
    FAILED record with their traceback; neither is promoted and neither stalls its bracket.
    """
    out = tmp_path / "hb"
    space = SPACE | {
        "learning_rate": {"_type": "choice", "_value": [1e30, 3e-3, 1e-2, 3e-2]},
        "activation": {"_type": "choice", "_value": ["relu", "tanh", "swish", "no-such-activation"]},
    }
    t0 = time.time()
    experiment = hpo.tune(
        out,
        TINY.replace(max_budget=4, eta=2, data=str(env), seed=8),
        space=space,
        backend=BACKEND,
        port=spare_port(),
        timeout=TIMEOUT,
    )
    print(f"HyperBand pass R=4 on NNI: {time.time() - t0:.0f} s")
    rows = experiment.trials
    by_status = {s: [r for r in rows if r.status == s] for s in ("SUCCEEDED", "DIVERGED", "FAILED")}
    assert sum(map(len, by_status.values())) == len(rows), [(r.config_id, r.status) for r in rows]
    assert by_status["DIVERGED"] and by_status["FAILED"], "the seed should give both kinds of bad trial"
    assert experiment.summary.finished and experiment.summary.engine == "nni"

    assert all(r.final["default"] == 100.0 for r in by_status["DIVERGED"])
    for row in by_status["FAILED"]:
        assert "no-such-activation" in row.error
        assert "Traceback" in (out / "trials" / f"{row.config_id}-b{row.budget:03d}" / "error.txt").read_text()
        assert row.params["activation"] == "no-such-activation"
    assert all(r.status == "FAILED" for r in rows if r.params["activation"] == "no-such-activation")

    schedule = {(b.s, i): rung for b in brackets(4, 2) for i, rung in enumerate(b.rungs)}
    assert len({s for s, _ in schedule}) == 3
    for row in rows:
        budget = schedule[(row.bracket, row.rung)].budget
        previous = 0 if row.rung == 0 else schedule[(row.bracket, row.rung - 1)].budget
        assert row.budget == budget
        if row.status == "SUCCEEDED":
            assert (row.resumed_from, row.epochs_trained) == (previous, budget - previous), row
            assert epochs_in_history(out, row) == list(range(previous + 1, budget + 1))
            assert len(row.curve) == budget - previous
            assert {"precision", "recall", "mean_iou"} <= set(row.final)
    pairs = [(r.config_id, r.budget) for r in rows]
    assert len(pairs) == len(set(pairs))
    bad = {r.config_id for r in rows if r.status != "SUCCEEDED"}
    promoted = [r for r in rows if r.rung > 0]
    assert promoted and all(r.config_id not in bad or r.status != "SUCCEEDED" for r in promoted)
    for (s, i), rung in schedule.items():
        assert len([r for r in rows if (r.bracket, r.rung) == (s, i)]) <= rung.n_configs
    assert len(rows) <= pass_epochs(4, 2)["trials"]
    assert {r.bracket for r in rows} == {s for s, _ in schedule}, "every bracket ran"
    assert experiment.best.value == min(r.value for r in by_status["SUCCEEDED"])
    assert experiment.best.params["learning_rate"] != 1e30
    assert experiment.summary.epochs_trained == sum(r.epochs_trained for r in rows)
    for row in rows:  # Unix seconds; a trial's span holds its own training time
        assert row.start_time + row.seconds <= row.end_time + 1e-3 <= t0 + TIMEOUT, row
    assert not processes_of(out), "no process of the experiment outlives it"


@pytest.mark.slow  # the fast tier keeps one NNI experiment: the next test's
def test_a_dead_tuner_fails_loudly_and_leaves_nothing_running(tmp_path, env):
    out = tmp_path / "dead"
    driver = start_driver(out, cli_args(env, max_budget=3, port=spare_port(), backend=BACKEND))
    heartbeat = out / "tuner_heartbeat.json"
    wait_for(heartbeat.is_file, 120, driver)
    os.kill(json.loads(heartbeat.read_text())["pid"], signal.SIGKILL)
    t0 = time.time()
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 1 and time.time() - t0 < 60
    assert "tuner" in err and "--resume" in err and "Traceback" not in err, err
    wait_for(lambda: not processes_of(out), 30)


def test_a_port_an_outgoing_connection_holds_is_not_offered(tmp_path):
    """Nothing listens on a connection's own port, yet NNI's manager cannot listen there (EADDRINUSE)."""
    import socket

    from seglib.hpo.engines.nni import check_port, free_port

    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        held = client.getsockname()[1]
        assert free_port(held) != held
        with pytest.raises(RuntimeError, match=f"cannot use port {held} for the search"):
            check_port(held, tmp_path)


def test_manager_listens_on_localhost_only_a_second_driver_is_refused_and_stop_ends_it(tmp_path, env):
    import psutil

    out, taken = tmp_path / "bind", spare_port()
    driver = start_driver(out, cli_args(env, max_budget=1, concurrency=1, port=taken, backend=BACKEND))
    wait_for((out / "tuner_heartbeat.json").is_file, 120, driver)
    manager = next(p for p in psutil.Process(driver.pid).children(recursive=True) if p.name() == "node")
    listening = [c.laddr for c in manager.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening and all(a.ip in ("127.0.0.1", "::1") for a in listening), listening
    second = start_driver(out, cli_args(env, max_budget=1, resume=True))
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1 and f"is running in process {driver.pid}" in err and "--stop" in err, err
    other = start_driver(tmp_path / "other", cli_args(env, max_budget=1, port=taken, backend=BACKEND))
    _, err = other.communicate(timeout=120)
    assert other.returncode == 1 and f"cannot use port {taken} for the search" in err and "--port" in err, err
    assert not (tmp_path / "other").exists(), "a search refused for its port writes nothing"
    stop = start_driver(out, ["--stop"])
    stdout, _ = stop.communicate(timeout=180)
    assert stop.returncode == 0 and "stopped the search" in stdout
    assert driver.wait(timeout=60) == 130  # the driver ends as after Ctrl-C
    wait_for(lambda: not processes_of(out), 30)


@pytest.mark.slow
def test_cli_random_search_at_a_given_epoch_budget_in_bf16(tmp_path, env, capsys):
    """``seglib hpo --tuner random``: seglib's random search on NNI, R epochs per trial, equal epochs."""
    import keras

    from seglib import cli
    from seglib.train import load_model

    out = tmp_path / "random"
    code = cli.main(
        [
            "hpo",
            *cli_args(env, port=spare_port(), backend=BACKEND),
            "--out",
            str(out),
            "--tuner",
            "random",
            "--max-budget",
            "2",
            "--max-epochs",
            "3",
            "--precision",
            "bf16",
        ]
    )
    assert code == 0, capsys.readouterr().err
    data = json.loads((out / "trials.json").read_text())
    assert [r["status"] for r in data["trials"]] == ["SUCCEEDED", "SUCCEEDED"]
    assert [r["epochs_trained"] for r in data["trials"]] == [2, 1]  # 3 epochs in all: 2 + 1
    assert data["summary"]["tuner"] == "random" and data["summary"]["finished"] is True
    assert "wrote" in capsys.readouterr().out
    for row in data["trials"]:
        model = load_model(row["model"], compile=False)
        convolutions = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
        assert {layer.dtype_policy.name for layer in convolutions[:-1]} == {"mixed_bfloat16"}


@pytest.mark.slow
def test_bohb_on_nni_hands_out_what_it_decides_with_warm_start(tmp_path, env):
    """``seglib hpo --tuner bohb`` on NNI, one trial at a time: the pure search's own decisions, warm start.

    ASHA on NNI is held to the in-process run's trials by test_faults' kill test.
    """
    tuner = "bohb"
    from hpo_helpers import handed_out, replayed

    from seglib import cli

    out = tmp_path / tuner
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps({"batch_size": SPACE["batch_size"]}))
    args = cli_args(env, port=spare_port(), backend=BACKEND, concurrency=1, tuner=tuner, space=space_file)
    assert cli.main(["hpo", *args, "--out", str(out)]) == 0
    experiment = hpo.export(out)
    summary = experiment.summary
    assert (summary.tuner, summary.engine, summary.finished) == (tuner, "nni", True)
    assert summary.experiment_id  # NNI's experiment, its web UI's
    settings = json.loads((out / "experiment.json").read_text())["settings"]
    assert settings["tuner"] == tuner
    rows = experiment.trials
    assert handed_out(rows) == replayed(TINY.replace(**settings), SPACE, rows)
    for row in rows:
        assert row.status == "SUCCEEDED" and row.epochs_trained == row.budget - row.resumed_from
        assert epochs_in_history(out, row) == list(range(row.resumed_from + 1, row.budget + 1))
    assert summary.epochs_trained == pass_epochs(3, 3)["warm_start"]
    assert not processes_of(out), "no process of the experiment outlives it"
