"""The in-process engine: the same search as NNI's, the same exports, and a kill that loses nothing."""

from __future__ import annotations

import json
import os
import signal

import pytest
from hpo_helpers import (
    ONE_BATCH_SIZE,
    TINY_OVERRIDES,
    cli_args,
    epochs_in_history,
    handed_out,
    processes_of,
    replayed,
    spare_port,
    start_driver,
    wait_for,
)

from seglib import hpo
from seglib.settings import profile

TINY = profile("quick", **TINY_OVERRIDES)
SPACE = hpo.search_space(ONE_BATCH_SIZE)


@pytest.fixture
def env(tmp_path, monkeypatch, embedded_root):
    monkeypatch.setenv("SEGLIB_CACHE", str(tmp_path / "cache"))
    return embedded_root


def comparable(experiment) -> list[tuple]:
    """The trials, by configuration and budget (NNI, with two at once, may hand them out in another order)."""
    return sorted(
        (r.config_id, r.budget, r.status, r.resumed_from, r.epochs_trained, round(r.value or 0.0, 3))
        for r in experiment.trials
    )


@pytest.mark.slow
@pytest.mark.nni
def test_local_and_nni_engines_run_the_same_search_with_the_same_exports(tmp_path, env):
    settings = TINY.replace(data=str(env), seed=3)
    local = hpo.tune(tmp_path / "local", settings.replace(engine="local"), space=SPACE)
    nni = hpo.tune(
        tmp_path / "nni",
        settings.replace(engine="nni"),
        space=SPACE,
        backend="tensorflow",
        port=spare_port(),
    )
    assert (local.summary.engine, nni.summary.engine) == ("local", "nni")
    assert local.summary.finished and nni.summary.finished
    assert comparable(local) == comparable(nni)  # same pairs, statuses, warm starts, losses (3 decimals)
    header = lambda out: (out / "trials.csv").read_text().splitlines()[0]
    assert header(tmp_path / "local") == header(tmp_path / "nni")
    assert (
        json.loads((tmp_path / "local" / "trials.json").read_text())["trials"][0].keys()
        == json.loads((tmp_path / "nni" / "trials.json").read_text())["trials"][0].keys()
    )


def test_a_second_run_of_a_finished_search_trains_nothing(tmp_path, env):
    settings = TINY.replace(data=str(env), engine="local", max_budget=1)
    first = hpo.tune(tmp_path / "s", settings, space=SPACE)
    again = hpo.tune(tmp_path / "s", settings, space=SPACE)  # resume="auto": the export, at once
    assert comparable(again) == comparable(first) and first.summary.finished
    with pytest.raises(hpo.search.SearchExists, match="--resume"):
        hpo.tune(tmp_path / "s", settings, space=SPACE, resume=False)


@pytest.mark.slow
def test_killed_mid_pass_then_resumed_trains_no_pair_twice_and_loses_no_finished_trial(tmp_path, env):
    """kill -9 of the local engine after some trials finished and one is mid-way; then --resume."""
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(ONE_BATCH_SIZE))
    out = tmp_path / "killed"
    args = cli_args(env, max_budget=3, engine="local", space=space_file)
    driver = start_driver(out, args)

    def finished_and_one_running():
        rows = hpo.progress(out)
        return rows["succeeded"] >= 2 and rows["running"] >= 1

    wait_for(finished_and_one_running, 600, driver)
    before = {(r.config_id, r.budget): r for r in hpo.export(out).trials if r.status == "SUCCEEDED"}
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    resumed = start_driver(out, [*args, "--resume"])
    _, err = resumed.communicate(timeout=900)
    assert resumed.returncode == 0, err[-3000:]

    reference = hpo.tune(
        tmp_path / "uninterrupted",
        TINY.replace(data=str(env), engine="local", max_budget=3, seed=3),
        space=hpo.search_space(ONE_BATCH_SIZE),
    )
    after = hpo.export(out)
    assert after.summary.finished
    rows = {(r.config_id, r.budget): r for r in after.trials}
    assert len(rows) == len(after.trials), "a pair was trained twice"
    for key, row in before.items():  # finished before the kill: kept as it was
        assert (
            rows[key].status == "SUCCEEDED"
            and rows[key].value == row.value
            and rows[key].trial_ids[0] == row.trial_ids[0]
        )
    for row in after.trials:
        epochs = epochs_in_history(out, row)
        assert len(epochs) == len(set(epochs)), f"{row.config_id} budget {row.budget} trained an epoch twice: {epochs}"
        assert row.epochs_trained == row.budget - row.resumed_from
        history = json.loads((out / "trials" / f"{row.config_id}-b{row.budget:03d}" / "history.json").read_text())
        assert all(a["status"] != "RUNNING" for a in history["attempts"]), history["attempts"]
        if row.attempts > 1:  # the trial running at the kill: it resumed from its last epoch's checkpoint
            first, second = history["attempts"][:2]
            done_before = sum(1 for e in history["epochs"] if e["trial_id"] == first["trial_id"])
            assert first["status"] == "INTERRUPTED" and second["initial_epoch"] == row.resumed_from + done_before
    assert any(r.attempts > 1 for r in after.trials), "the trial running at the kill ran again"
    assert sorted(rows) == sorted((r.config_id, r.budget) for r in reference.trials)  # the same trial set
    assert not processes_of(out)


def check_warm_started_pairs(out, experiment) -> None:
    """Every pair once, each trained from the rung below's checkpoint exactly to its budget."""
    pairs = [(r.config_id, r.budget) for r in experiment.trials]
    assert len(pairs) == len(set(pairs)), "a (configuration, budget) was trained twice"
    budgets = {r.config_id: sorted(b for c, b in pairs if c == r.config_id) for r in experiment.trials}
    for row in experiment.trials:
        below = [b for b in budgets[row.config_id] if b < row.budget]
        assert row.status == "SUCCEEDED" and row.resumed_from == (below[-1] if below else 0), row
        assert epochs_in_history(out, row) == list(range(row.resumed_from + 1, row.budget + 1))


@pytest.mark.slow
@pytest.mark.parametrize("tuner", ["asha", "bohb"])
def test_asha_and_bohb_run_in_process_with_warm_start_and_hyperbands_epochs(tmp_path, env, tuner):
    """The run's tuner setting picks the search; its folder, exports and warm start are HyperBand's."""
    from seglib.hpo.hyperband import brackets, pass_epochs

    settings = TINY.replace(data=str(env), engine="local", max_budget=3, seed=3, tuner=tuner)
    out = tmp_path / tuner
    experiment = hpo.tune(out, settings, space=SPACE)
    assert experiment.summary.tuner == tuner and experiment.summary.finished
    check_warm_started_pairs(out, experiment)
    assert experiment.summary.epochs_trained == pass_epochs(3, 3)["warm_start"] == 11  # one warm pass's epochs
    state = json.loads((out / "search_state.json").read_text())
    assert state["kind"] == tuner
    if tuner == "bohb":  # HyperBand's schedule: s=1: 3x1 -> 1x3; s=0: 2x3
        schedule = [
            (b.s, i, r.budget) for b in brackets(3, 3) for i, r in enumerate(b.rungs) for _ in range(r.n_configs)
        ]
        assert sorted((r.bracket, r.rung, r.budget) for r in experiment.trials) == sorted(schedule)
    assert {r.budget for r in experiment.trials} == {1, 3}
    assert handed_out(experiment.trials) == replayed(settings, SPACE, experiment.trials)  # the search's own decisions
    assert experiment.best.value == min(r.value for r in experiment.trials)
