"""seglib.hpo without a running experiment: plans, NNI's own config validation, the trial CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from seglib.hpo import experiment as hpo
from seglib.hpo.hyperband import pass_epochs, search_space
from seglib.hpo.remote import parse_host, remote_experiment_config
from seglib.hpo.tuner import final_value
from seglib.profiles import get_profile


def test_plans_hyperband_one_pass_and_random_search_at_equal_epochs():
    quick = get_profile("quick")
    hb = hpo.plan(quick, "hyperband", max_budget=9, eta=3)
    assert (hb["max_trials"], hb["planned_epochs"]) == (22, 69)
    rnd = hpo.plan(quick, "random", max_budget=9, eta=3)
    assert (rnd["max_trials"], rnd["trial_budget"]) == (69 // 9, 9)
    assert hpo.plan(quick, "random", max_budget=9, max_epochs=40)["max_trials"] == 4
    full = hpo.plan(get_profile("full"), "hyperband")  # the original's 72-trial cap > one pass
    assert (full["max_trials"], full["planned_epochs"]) == (pass_epochs(60, 3)["trials"], 780)
    with pytest.raises(ValueError, match="unknown tuner"):
        hpo.plan(quick, "bohb")


@pytest.mark.parametrize("value, expected", [
    ({"default": 0.5, "diverged": 0}, (0.5, False)),
    ({"default": 100.0, "diverged": 1}, (100.0, True)),
    (0.25, (0.25, False)),
    (float("nan"), (None, True)),
    ({"default": None}, (None, True)),
    ("oops", (None, True)),
])
def test_final_metric_parsing_flags_nan_and_missing_as_diverged(value, expected):
    assert final_value(value) == expected


def test_local_config_passes_nni_validation(tmp_path):
    layout = hpo.Layout.of(tmp_path / "out")
    layout.trial_code.mkdir(parents=True)
    config = hpo.build_config(layout, hpo.plan(get_profile("quick"), "hyperband"), search_space())
    config.validate()
    canonical = config.canonical_copy()
    assert canonical.experiment_working_directory == str(layout.nni_dir)
    assert canonical.tuner.class_name == "seglib.hpo.tuner.SeglibHyperBand"
    assert (Path(canonical.tuner.code_directory) / "seglib" / "hpo" / "tuner.py").is_file()
    assert canonical.tuner.class_args["R"] == get_profile("quick").max_budget
    random_config = hpo.build_config(layout, hpo.plan(get_profile("quick"), "random"), search_space())
    random_config.validate()
    assert random_config.canonical_copy().tuner.name == "Random"


def test_remote_config_from_hosts_passes_nni_validation(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key: NNI only checks that the file exists\n")
    config = remote_experiment_config(
        tmp_path / "shared" / "hpo", ["alice@10.0.0.2", "bob@gpu2:2222", {"host": "gpu3", "user": "carol"}],
        nni_manager_ip="10.0.0.1", ssh_key_file=str(key), python_path="/opt/venv/bin",
        gpus_per_trial=1, trials_per_gpu=4,
    )
    config.validate()
    service = config.canonical_copy().training_service
    assert service.platform == "remote"
    assert [(m.host, m.port, m.user) for m in service.machine_list] == [
        ("10.0.0.2", 22, "alice"), ("gpu2", 2222, "bob"), ("gpu3", 22, "carol")]
    assert all(m.max_trial_number_per_gpu == 4 and m.python_path == "/opt/venv/bin" for m in service.machine_list)
    assert config.trial_command.startswith("python3 -m seglib.hpo.trial")

    missing = remote_experiment_config(tmp_path / "x", ["alice@h"], nni_manager_ip="10.0.0.1",
                                       ssh_key_file=str(tmp_path / "no-such-key"))
    with pytest.raises(ValueError, match="SSH key file"):
        missing.validate()


@pytest.mark.parametrize("spec", ["@host", "user@", "a@b@c", "user@host:port"])
def test_bad_host_specs_are_refused(spec):
    with pytest.raises(ValueError, match="remote host"):
        parse_host(spec)


@pytest.mark.slow
def test_trial_runs_on_its_own_and_a_finished_pair_is_not_trained_again(tmp_path, embedded_root):
    """Outside an experiment the trial uses its defaults; a second run reports the recorded result."""
    out = tmp_path / "alone"
    params = json.dumps({"TRIAL_BUDGET": 1, "batch_size": 16})
    command = [sys.executable, "-m", "seglib.hpo.trial", "--out", str(out), "--data", str(embedded_root), "--params", params]
    env = {"SEGLIB_CACHE": str(tmp_path / "cache"), "KERAS_BACKEND": "tensorflow", "PATH": "/usr/bin:/bin"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    record = json.loads(first.stdout.strip().splitlines()[-1])
    assert (record["key"], record["status"], record["epochs_trained"]) == ("standalone-b001", "SUCCEEDED", 1)
    folder = out / "trials" / "standalone-b001"
    assert {"params.json", "history.json", "result.json", "model.keras"} <= {p.name for p in folder.iterdir()}

    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads(second.stdout.strip().splitlines()[-1])["final"] == record["final"]
    history = json.loads((folder / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1] and history["reused_by"] == ["STANDALONE"]


@pytest.mark.slow
def test_trial_on_jax_trains_with_the_jax_loop_and_warm_starts(tmp_path, embedded_root):
    """KERAS_BACKEND=jax: budget 1, then budget 2 of the same configuration trains epoch 2 only."""
    out = tmp_path / "jax"
    env = {"SEGLIB_CACHE": str(tmp_path / "cache"), "KERAS_BACKEND": "jax", "PATH": "/usr/bin:/bin"}
    records = []
    for budget in (1, 2):
        params = json.dumps({"CONFIG_ID": "c", "TRIAL_BUDGET": budget, "batch_size": 16})
        command = [sys.executable, "-m", "seglib.hpo.trial", "--out", str(out), "--data", str(embedded_root), "--params", params]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        records.append(json.loads((out / "trials" / f"c-b{budget:03d}" / "result.json").read_text()))
    assert [(r["backend"], r["engine"], r["status"]) for r in records] == [("jax", "jax", "SUCCEEDED")] * 2
    assert (records[1]["resumed_from"], records[1]["epochs_trained"]) == (1, 1)
    history = json.loads((out / "trials" / "c-b002" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [2]


def test_trial_environment_names_one_gpu_memory_cap(monkeypatch):
    """jaxlib 0.11 refuses both memory-fraction names together and falls back to the CPU."""
    from seglib.hpo.trial import configure_environment

    for name in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.environ", dict(__import__("os").environ))
    env = configure_environment({"gpu_memory_fraction": 0.225, "threads": 1})
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    assert "XLA_CLIENT_MEM_FRACTION" not in env
