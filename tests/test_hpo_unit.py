"""seglib.hpo without a running search: plans, NNI's own config validation, outcome rules, the trial CLI."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from seglib.artifacts import ExperimentPaths
from seglib.hpo.engines.nni import TUNER_CLASS, build_config
from seglib.hpo.hyperband import HyperBand, pass_epochs
from seglib.hpo.outcome import MAX_LOST, classify, final_value, revisit, settle
from seglib.hpo.remote import parse_host, remote_experiment_config
from seglib.hpo.search import plan
from seglib.hpo.space import search_space
from seglib.settings import profile


def test_plans_hyperband_one_pass_and_random_search_at_equal_epochs():
    quick = profile("quick", max_budget=9, eta=3)
    hb = plan(quick, "hyperband")
    assert (hb["trials"], hb["planned_epochs"]) == (22, 69)
    rnd = plan(quick, "random")
    assert (rnd["trials"], rnd["planned_epochs"]) == (8, 69)  # 7 trials of 9 epochs and one of 6
    assert plan(quick, "random", max_epochs=40)["trials"] == 5
    full = plan(profile("full"), "hyperband")  # the original's 72-trial cap > one pass
    assert (full["trials"], full["planned_epochs"]) == (pass_epochs(60, 3)["trials"], 780)
    with pytest.raises(ValueError, match="unknown tuner"):
        plan(quick, "no-such-search")


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"default": 0.5, "diverged": 0}, (0.5, False)),
        ({"default": 100.0, "diverged": 1}, (100.0, True)),
        (0.25, (0.25, False)),
        (float("nan"), (None, True)),
        ({"default": None}, (None, True)),
        ("oops", (None, True)),
    ],
)
def test_final_metric_parsing_flags_nan_and_missing_as_diverged(value, expected):
    assert final_value(value) == expected


@pytest.mark.parametrize("tuner", ["hyperband", "random"])
def test_local_config_passes_nni_validation(tmp_path, tuner):
    """Both searches run as seglib's tuner inside NNI (NNI's own HyperBand and Random are not used)."""
    paths = ExperimentPaths.of(tmp_path / "out")
    paths.trial_code.mkdir(parents=True)
    config = build_config(paths, {"plan": plan(profile("quick"), tuner), "search_space": search_space()})
    config.validate()
    canonical = config.canonical_copy()
    assert canonical.experiment_working_directory == str(paths.nni_dir)
    assert canonical.tuner.class_name == TUNER_CLASS == "seglib.hpo.engines.nni_tuner.SeglibTuner"
    assert (Path(canonical.tuner.code_directory) / "seglib" / "hpo" / "engines" / "nni_tuner.py").is_file()
    assert canonical.tuner.class_args == {"out_dir": str(paths.root)}
    assert canonical.trial_concurrency == profile("quick").concurrency


def test_remote_config_from_hosts_passes_nni_validation(tmp_path):
    key = tmp_path / "id_ed25519"
    key.write_text("not a real key: NNI only checks that the file exists\n")
    config = remote_experiment_config(
        tmp_path / "shared" / "hpo",
        ["alice@10.0.0.2", "bob@gpu2:2222", {"host": "gpu3", "user": "carol"}],
        nni_manager_ip="10.0.0.1",
        ssh_key_file=str(key),
        python_path="/opt/venv/bin",
        gpus_per_trial=1,
        trials_per_gpu=4,
    )
    config.validate()
    service = config.canonical_copy().training_service
    assert service.platform == "remote"
    assert [(m.host, m.port, m.user) for m in service.machine_list] == [
        ("10.0.0.2", 22, "alice"),
        ("gpu2", 2222, "bob"),
        ("gpu3", 22, "carol"),
    ]
    assert all(m.max_trial_number_per_gpu == 4 and m.python_path == "/opt/venv/bin" for m in service.machine_list)
    # the absolute interpreter
    assert config.trial_command.startswith("/opt/venv/bin/python -m seglib.hpo.trial_process")

    missing = remote_experiment_config(
        tmp_path / "x",
        ["alice@h"],
        nni_manager_ip="10.0.0.1",
        ssh_key_file=str(tmp_path / "no-such-key"),
        python_path="/opt/venv/bin",
    )
    with pytest.raises(ValueError, match="SSH key file"):
        missing.validate()


@pytest.mark.parametrize("spec", ["@host", "user@", "a@b@c", "user@host:port"])
def test_bad_host_specs_are_refused(spec):
    with pytest.raises(ValueError, match="remote host"):
        parse_host(spec)


def test_trial_runs_on_its_own_and_a_finished_pair_is_not_trained_again(tmp_path, embedded_root):
    """Outside an experiment the trial uses its defaults; a second run reports the recorded result."""
    out = tmp_path / "alone"
    params = json.dumps({"TRIAL_BUDGET": 1, "batch_size": 16})
    command = [
        sys.executable,
        "-m",
        "seglib.hpo.trial_process",
        "--out",
        str(out),
        "--data",
        str(embedded_root),
        "--params",
        params,
    ]
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
        command = [
            sys.executable,
            "-m",
            "seglib.hpo.trial_process",
            "--out",
            str(out),
            "--data",
            str(embedded_root),
            "--params",
            params,
        ]
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        records.append(json.loads((out / "trials" / f"c-b{budget:03d}" / "result.json").read_text()))
    assert [(r["backend"], r["loop"], r["status"]) for r in records] == [("jax", "jax", "SUCCEEDED")] * 2
    assert (records[1]["resumed_from"], records[1]["epochs_trained"]) == (1, 1)
    history = json.loads((out / "trials" / "c-b002" / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [2]


def test_trial_environment_names_one_gpu_memory_cap(monkeypatch):
    """jaxlib 0.11 refuses both memory-fraction names together and falls back to the CPU."""
    from seglib.hpo.runtime import configure_environment

    for name in ("XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_FLAGS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.environ", dict(__import__("os").environ))
    env = configure_environment({"gpu_memory_fraction": 0.225, "threads": 1})
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.225"
    assert "XLA_CLIENT_MEM_FRACTION" not in env


# --- one rule for every engine: what a trial's outcome does to the search --------------------


def handed_out():
    search = HyperBand(9, 3, seed=0)
    return search, search.next_job()


def test_a_finished_trial_is_reported_and_its_own_error_fails_it():
    search, job = handed_out()
    settle(search, job.parameter_id, {"status": "SUCCEEDED", "final": {"default": 0.5}, "epochs_trained": 1})
    assert (job.status, job.value) == ("SUCCEEDED", 0.5)
    search, job = handed_out()
    settle(search, job.parameter_id, {"status": "FAILED", "cause": "trial", "error": "ValueError: bad"})
    assert (job.status, job.error) == ("FAILED", "ValueError: bad") and search.halted is None


def test_an_interrupted_trial_is_handed_out_again_and_the_machine_halts_the_search():
    search, job = handed_out()
    settle(search, job.parameter_id, {"status": "INTERRUPTED", "error": "Interrupted: stopped by SIGTERM"})
    assert job.status == "QUEUED" and search.halted is None
    search.next_job()
    reason = settle(
        search,
        job.parameter_id,
        {"status": "FAILED", "cause": "environment", "error": "OSError: [Errno 28] No space left on device (ENOSPC)"},
    )
    assert job.status == "QUEUED" and "ENOSPC" in reason and search.halted == reason
    assert search.next_job() is None


def test_a_trial_that_dies_without_a_word_is_retried_then_failed():
    search, job = handed_out()
    for attempt in range(1, MAX_LOST + 1):
        settle(search, job.parameter_id, None, "NNI reported USER_CANCELED")
        if attempt < MAX_LOST:
            assert job.status == "QUEUED"
            assert search.next_job().parameter_id == job.parameter_id
    assert job.status == "FAILED" and "died 3 times" in job.error and "USER_CANCELED" in job.error


@pytest.mark.parametrize(
    "error, expected",
    [
        (KeyboardInterrupt(), ("INTERRUPTED", "interrupted")),
        (OSError(28, "No space left on device"), ("FAILED", "environment")),
        (MemoryError(), ("FAILED", "environment")),
        (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate"), ("FAILED", "environment")),
        (zipfile.BadZipFile("File is not a zip file"), ("FAILED", "environment")),
        (ValueError("cannot read model x/model.keras: truncated zip"), ("FAILED", "environment")),
        (ValueError("cannot read checkpoint x/epoch_0001.npz: truncated zip"), ("FAILED", "environment")),
        (ValueError("activation='x'"), ("FAILED", "trial")),
    ],
)
def test_failures_are_classified_by_whose_fault_they_are(error, expected):
    assert classify(error) == expected


def test_nni_start_chatter_stays_off_in_a_fresh_process():
    """NNI sets its logger to INFO on its first import: quieting it must survive that import."""
    code = (
        "import logging\n"
        "from seglib.hpo.engines.nni import quiet_nni_logger\n"
        "quiet_nni_logger()\n"
        "import nni, nni.experiment\n"
        "print(logging.getLogger('nni').level)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == str(logging.WARNING)


def test_nni_waits_for_a_slow_manager():
    """NNI 3.0 gives its manager three tries a second apart; seglib's shim gives it a minute."""
    from nni.experiment import launcher

    from seglib.hpo.engines.nni_compat import MANAGER_START_SECONDS, patch_nni_manager_wait

    calls = []
    original = launcher._check_rest_server
    try:
        launcher._check_rest_server = lambda port, retry=3, url_prefix=None: calls.append(retry)
        patch_nni_manager_wait()
        launcher._check_rest_server(8080)
        patch_nni_manager_wait()  # idempotent: still one wrapper
        launcher._check_rest_server(8080)
    finally:
        launcher._check_rest_server = original
    assert calls == [MANAGER_START_SECONDS, MANAGER_START_SECONDS]


def test_outcomes_that_do_not_stand_are_handed_out_again_and_their_rung_decisions_stand(tmp_path):
    """A finished pair whose folder is gone, a pair an earlier seglib FAILED for a damaged file: run again."""
    from seglib.artifacts import write_json

    paths = ExperimentPaths.of(tmp_path)
    search = HyperBand(3, 3, seed=0)  # bracket 0: 3 configurations at 1 epoch, the best at 3
    first, second, third = (search.next_job() for _ in range(3))
    for job, value in ((first, 0.5), (third, 0.7)):
        write_json(paths.trial_dir(job.config_id, job.budget) / "result.json", {"status": "SUCCEEDED"})
        settle(search, job.parameter_id, {"status": "SUCCEEDED", "final": {"default": value}})
    settle(
        search,
        second.parameter_id,
        {"status": "FAILED", "cause": "trial", "error": "BadZipFile: File is not a zip file"},
    )
    promoted = search.jobs[3]
    assert (promoted.config_id, promoted.budget) == (first.config_id, 3)
    (paths.trial_dir(third.config_id, third.budget) / "result.json").unlink()  # the folder emptied

    lines = revisit(search, paths)
    assert [job.status for job in (first, second, third)] == ["SUCCEEDED", "QUEUED", "QUEUED"]
    assert any(third.config_id in line and "holds no result" in line for line in lines), lines
    assert any(second.config_id in line and "damaged file" in line for line in lines), lines
    assert not search.finished
    for job in (search.next_job(), search.next_job()):  # the two pairs again, before anything new
        assert job in (second, third)
        write_json(paths.trial_dir(job.config_id, job.budget) / "result.json", {"status": "SUCCEEDED"})
        settle(search, job.parameter_id, {"status": "SUCCEEDED", "final": {"default": 0.1}})
    assert search.jobs[3] is promoted and len([j for j in search.jobs if j.budget == 3 and j.bracket == 0]) == 1
    assert revisit(search, paths) == []


def test_an_assignment_carries_where_its_rung_starts_through_nni_parameters():
    from seglib.hpo.trial import Assignment

    search = HyperBand(9, 3, seed=0)
    job = search.next_job()
    assignment = Assignment.of(search, job)
    again = Assignment.from_parameters(assignment.as_parameters(), 9, "trial-1")
    assert again == assignment and again.resume_from == job.resume_from == 0
    old = {k: v for k, v in assignment.as_parameters().items() if k != "RESUME_FROM"}  # an earlier seglib's
    assert Assignment.from_parameters(old, 9, "trial-1").resume_from is None


def test_a_failed_pair_is_tried_again_only_when_its_folder_was_deleted(tmp_path):
    """Deleting a trial's folder runs it again; a failure of its own, recorded, stays final."""
    from seglib.artifacts import write_json

    paths = ExperimentPaths.of(tmp_path)
    search = HyperBand(9, 3, seed=0)
    kept, deleted = search.next_job(), search.next_job()
    for job in (kept, deleted):
        write_json(paths.trial_dir(job.config_id, job.budget) / "result.json", {"status": "FAILED"})
        settle(search, job.parameter_id, {"status": "FAILED", "cause": "trial", "error": "ValueError: bad"})
    (paths.trial_dir(deleted.config_id, deleted.budget) / "result.json").unlink()
    paths.trial_dir(deleted.config_id, deleted.budget).rmdir()
    assert revisit(search, paths) == [
        f"{paths.trial_dir(deleted.config_id, deleted.budget)} was deleted: "
        f"{deleted.config_id}-b{deleted.budget:03d}, FAILED before, is tried again"
    ]
    assert (kept.status, deleted.status) == ("FAILED", "QUEUED")


@pytest.mark.parametrize("kind", ["hyperband", "random", "asha", "bohb"])
def test_a_job_done_again_is_handed_out_first_and_every_search_keeps_count(kind):
    """Search.redo on each search: the job goes back in the queue, the search is not finished, and
    what its indexes count (epochs committed, jobs out) is what a reload counts."""
    from seglib.hpo.asha import Asha
    from seglib.hpo.bohb import BOHB
    from seglib.hpo.hyperband import RandomSearch
    from seglib.hpo.schedule import Search

    search = {
        "hyperband": lambda: HyperBand(3, 3, seed=0),
        "random": lambda: RandomSearch(4, 3, seed=0),
        "asha": lambda: Asha(3, 3, seed=0),
        "bohb": lambda: BOHB(3, 3, seed=0),
    }[kind]()
    done = []
    while (job := search.next_job()) is not None:
        settle(search, job.parameter_id, {"status": "SUCCEEDED", "final": {"default": 1.0 / (job.parameter_id + 2)}})
        done.append(job)
    assert search.finished
    first, jobs = done[0], len(search.jobs)
    search.redo(first.parameter_id, "its folder was deleted")
    assert first.status == "QUEUED" and not search.finished
    reloaded = Search.from_state(search.to_state())
    assert (search.committed, search.handed_out) == (reloaded.committed, reloaded.handed_out)
    assert search.next_job() is first
    settle(search, first.parameter_id, {"status": "SUCCEEDED", "final": {"default": 0.9}})
    while (job := search.next_job()) is not None:  # whatever the decisions made before allow, nothing twice
        settle(search, job.parameter_id, {"status": "SUCCEEDED", "final": {"default": 0.5}})
    pairs = [(j.config_id, j.budget) for j in search.jobs]
    assert search.finished and len(pairs) == len(set(pairs)) and len(search.jobs) >= jobs


def test_a_trials_scores_are_its_kept_epochs_validation_as_a_second_pass_would_give_them():
    """A trial takes its scores from the validation training already did (no second pass): they
    must be what evaluate() gives its model in the trial's batch size, for the best epoch kept."""
    import numpy as np

    from seglib.hpo.trial import kept_scores
    from seglib.metrics import evaluate
    from seglib.settings import Settings
    from seglib.train import TrainOptions, train

    rng = np.random.default_rng(0)
    x = rng.random((40, 16, 16, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    settings = Settings(batch_size=3, base_filters=4, depth=2, learning_rate=0.1, keep_epoch="best")
    result = train(x[:20], y[:20], x[20:], y[20:], settings=settings, epochs=4, options=TrainOptions(verbose=0))
    assert result.kept_epoch < 4, "the best epoch must not be the last here, or the test cannot tell them apart"
    scores, again = kept_scores(result), evaluate(result.model, x[20:], y[20:], batch_size=3)
    assert set(scores) == {"loss", "accuracy", "jaccard", "precision", "recall", "mean_iou"}
    for name, value in scores.items():
        assert value == pytest.approx(again[name], rel=1e-5, abs=1e-6), name
    assert scores["loss"] == result.history["val_loss"][result.kept_epoch - 1]
