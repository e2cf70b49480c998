"""The pure HyperBand schedule: budgets, counts and epoch totals worked out by hand."""

from __future__ import annotations

import json
import math
import random

import pytest

from seglib.hpo.hyperband import HyperBand, RandomSearch, Search, brackets, pass_epochs
from seglib.hpo.space import DEFAULT_SEARCH_SPACE, sample, search_space


def test_original_schedule_budgets_and_counts():
    schedule = brackets(60, 3)
    assert [b.s for b in schedule] == [3, 2, 1, 0]
    assert [[(r.n_configs, r.budget) for r in b.rungs] for b in schedule] == [
        [(27, 2), (9, 6), (3, 20), (1, 60)],
        [(12, 6), (4, 20), (1, 60)],
        [(6, 20), (2, 60)],
        [(4, 60)],
    ]


def test_full_pass_trains_920_epochs_from_scratch_and_780_warm():
    assert pass_epochs(60, 3) == {"from_scratch": 920, "warm_start": 780, "trials": 69}


def test_small_pass_used_by_the_nni_tests():
    # s=2: 9x1, 3x3, 1x9; s=1: 5x3, 1x9; s=0: 3x9
    assert [[(r.n_configs, r.budget) for r in b.rungs] for b in brackets(9, 3)] == [
        [(9, 1), (3, 3), (1, 9)],
        [(5, 3), (1, 9)],
        [(3, 9)],
    ]
    assert pass_epochs(9, 3) == {"from_scratch": 78, "warm_start": 69, "trials": 22}


def test_exact_powers_do_not_lose_a_bracket_to_rounding():
    assert [b.s for b in brackets(243, 3)] == [5, 4, 3, 2, 1, 0]
    assert brackets(243, 3)[0].rungs[0].budget == 1


@pytest.mark.parametrize("max_budget, eta", [(0, 3), (9, 1), (9.5, 3)])
def test_bad_arguments_are_refused(max_budget, eta):
    with pytest.raises(ValueError, match="HyperBand"):
        brackets(max_budget, eta)


def test_search_space_defaults_and_overrides():
    assert search_space() == DEFAULT_SEARCH_SPACE
    space = search_space({"batch_size": {"_type": "choice", "_value": [8]}, "activation": None})
    assert space["batch_size"] == {"_type": "choice", "_value": [8]}
    assert "activation" not in space
    assert DEFAULT_SEARCH_SPACE["activation"]["_value"] == ["relu", "tanh", "swish", None]


# --- the state machine ---------------------------------------------------------------------


def drain(hb: HyperBand, score, fail=lambda job: False) -> list[dict]:
    """Run every job to completion one at a time; return the jobs in the order handed out."""
    order = []
    while (job := hb.next_job()) is not None:
        order.append(job)
        if fail(job):
            hb.fail(job.parameter_id, "boom", epochs_trained=0)
        else:
            hb.report(job.parameter_id, score(job))
    return order


def test_a_full_pass_issues_the_schedule_and_trains_780_epochs_warm():
    hb = HyperBand(60, 3, seed=1)
    jobs = drain(hb, lambda job: random.Random(job.config_id).random())
    assert hb.finished and len(jobs) == 69
    assert sum(job.budget - job.resume_from for job in jobs) == 780
    pairs = [(job.config_id, job.budget) for job in jobs]
    assert len(set(pairs)) == len(pairs)
    assert sorted({job.budget for job in jobs}) == [2, 6, 20, 60]


def test_promotion_takes_the_lowest_losses_and_resumes_from_the_previous_rung():
    hb = HyperBand(9, 3, seed=0)
    loss = {}
    first = [hb.next_job() for _ in range(9)]  # bracket s=2, rung 0
    assert {job.budget for job in first} == {1}
    for k, job in enumerate(first):
        loss[job.config_id] = float(k)
        hb.report(job.parameter_id, float(k))
    promoted = [hb.next_job() for _ in range(3)]
    assert [job.config_id for job in promoted] == [first[k].config_id for k in range(3)]
    assert {(job.budget, job.resume_from) for job in promoted} == {(3, 1)}


def test_nan_missing_and_diverged_never_go_ahead_of_finite_results():
    hb = HyperBand(9, 3, seed=0)
    first = [hb.next_job() for _ in range(9)]
    bad = {0: math.nan, 1: None, 2: 0.0}  # 2 reports a tiny loss but flagged diverged
    for k, job in enumerate(first):
        if k in (0, 1):
            hb.report(job.parameter_id, bad[k])
        elif k == 2:
            hb.report(job.parameter_id, 0.0, diverged=True)
        else:
            hb.report(job.parameter_id, 10.0 + k)
    promoted = [hb.next_job() for _ in range(3)]
    assert [job.config_id for job in promoted] == [first[k].config_id for k in (3, 4, 5)]
    json.dumps(hb.state, allow_nan=False)  # NaN never enters the state file


def test_failures_leave_fewer_survivors_and_the_bracket_still_finishes():
    hb = HyperBand(9, 3, seed=0)
    # every rung-0 trial of bracket s=2 fails except one: one survivor, no IndexError
    jobs = drain(hb, lambda job: 1.0, fail=lambda job: job.bracket == 0 and job.rung == 0 and job.parameter_id > 0)
    assert hb.finished
    rung1 = [job for job in jobs if job.bracket == 0 and job.rung == 1]
    assert [job.config_id for job in rung1] == [jobs[0].config_id]


def test_a_bracket_whose_rung_all_failed_ends_early():
    hb = HyperBand(9, 3, seed=0)
    jobs = drain(hb, lambda job: 1.0, fail=lambda job: job.bracket == 0)
    assert hb.finished
    assert [job for job in jobs if job.bracket == 0 and job.rung > 0] == []


def test_state_round_trip_mid_run_continues_exactly(tmp_path):
    reference = HyperBand(9, 3, seed=5)
    expected = drain(reference, lambda job: random.Random(job.config_id).random())

    hb = HyperBand(9, 3, seed=5)
    handed = []
    for _ in range(12):
        job = hb.next_job()
        handed.append(job)
        hb.report(job.parameter_id, random.Random(job.config_id).random())
        hb.save(tmp_path / "state.json")
        hb = HyperBand.load(tmp_path / "state.json")
    handed += drain(hb, lambda job: random.Random(job.config_id).random())
    strip = lambda jobs: [(j.config_id, j.budget, j.resume_from) for j in jobs]
    assert strip(handed) == strip(expected)
    assert hb.state["configs"] == reference.state["configs"]


def test_requeued_job_is_handed_out_again_with_the_same_id():
    hb = HyperBand(9, 3, seed=0)
    job = hb.next_job()
    hb.requeue(job.parameter_id)
    assert hb.next_job().parameter_id == job.parameter_id


def test_sampling_follows_nni_semantics():
    rng = random.Random(0)
    draws = [sample(DEFAULT_SEARCH_SPACE, rng) for _ in range(2000)]
    assert {d["batch_size"] for d in draws} == set(range(1, 32))
    assert {d["activation"] for d in draws} == {"relu", "tanh", "swish", None}
    lrs = [d["learning_rate"] for d in draws]
    assert min(lrs) >= 1e-4 and max(lrs) <= 0.1
    assert 0.4 < sum(lr < 10**-2.5 for lr in lrs) / len(lrs) < 0.6  # log-uniform: median at 10^-2.5


def test_search_space_keys_are_the_settings_names():
    from seglib.settings import HYPERPARAMETERS

    assert tuple(DEFAULT_SEARCH_SPACE) == HYPERPARAMETERS


def test_halted_search_hands_out_nothing_until_unhalted():
    hb = HyperBand(9, 3, seed=0)
    job = hb.next_job()
    hb.requeue(job.parameter_id, "disk full")
    hb.halt("disk full")
    assert hb.next_job() is None and not hb.finished
    hb.unhalt()
    again = hb.next_job()
    assert again.parameter_id == job.parameter_id and again.attempts == 2
    assert again.interruptions == ["disk full"]


@pytest.mark.parametrize("epochs, budget, expected", [(11, 3, [3, 3, 3, 2]), (9, 3, [3, 3, 3]), (2, 3, [2])])
def test_random_search_spends_exactly_the_epochs_it_is_given(epochs, budget, expected):
    rs = RandomSearch(epochs, budget, seed=0)
    jobs = drain(rs, lambda job: 1.0)
    assert [job.budget for job in jobs] == expected and rs.finished
    assert all(job.resume_from == 0 and job.rung == 0 for job in jobs)


def test_random_search_draws_more_when_a_trial_stops_early_and_ends_on_failures():
    rs = RandomSearch(9, 3, seed=0)
    first = rs.next_job()
    rs.report(first.parameter_id, None, diverged=True, epochs_trained=1)  # diverged after 1 epoch
    rest = drain(rs, lambda job: 1.0)
    assert [job.budget for job in rest] == [3, 3, 2]  # 1 + 3 + 3 + 2 = 9 epochs in all
    failing = RandomSearch(4, 3, seed=0)
    assert len(drain(failing, lambda job: 1.0, fail=lambda job: True)) == 4  # each failure counts one epoch
    assert failing.finished


def test_random_search_draws_its_own_configurations_and_reloads_as_itself(tmp_path):
    rs, hb = RandomSearch(9, 3, seed=0), HyperBand(9, 3, seed=0)
    rs.next_job(), hb.next_job()
    assert rs.state["configs"]["c0000"]["params"] != hb.state["configs"]["c0000"]["params"]
    rs.save(tmp_path / "state.json")
    assert type(Search.load(tmp_path / "state.json")) is RandomSearch


def test_a_damaged_state_file_names_itself(tmp_path):
    from seglib.artifacts import ArtifactError

    state = tmp_path / "search_state.json"
    HyperBand(9, 3).save(state)
    state.write_text(state.read_text()[:40])
    with pytest.raises(ArtifactError, match=r"search_state\.json is not valid JSON"):
        Search.load(state)


def test_a_version_2_state_is_read_in_version_3_words(tmp_path):
    """A search started by an earlier seglib (its own job words) goes on after an upgrade."""
    hb = HyperBand(9, 3, seed=0)
    done, sent = hb.next_job(), hb.next_job()
    hb.report(done.parameter_id, 0.5)
    hb.report(hb.next_job().parameter_id, float("nan"))
    old = hb.to_state()
    old["version"] = 2
    for job in old["jobs"]:
        job["diverged"] = job["status"] == "DIVERGED"
        job["status"] = {"SUCCEEDED": "done", "DIVERGED": "done", "RUNNING": "sent", "QUEUED": "queued"}[job["status"]]
    (tmp_path / "state.json").write_text(json.dumps(old))
    loaded = Search.load(tmp_path / "state.json")
    assert [j.status for j in loaded.jobs[:3]] == ["SUCCEEDED", "RUNNING", "DIVERGED"]
    assert loaded.job(sent.parameter_id).status == "RUNNING" and loaded.to_state()["version"] == 3


def test_every_tuner_name_has_one_registered_search():
    from seglib.settings import TUNERS

    assert sorted(Search.registry) == sorted(TUNERS)


def test_an_engine_takes_what_a_search_plans_ahead_and_packs_like_batch_sizes_together():
    from seglib.hpo.asha import Asha
    from seglib.hpo.bohb import BOHB
    from seglib.hpo.schedule import hand_out, packs

    assert HyperBand.plans_ahead and RandomSearch.plans_ahead
    assert not Asha.plans_ahead and not BOHB.plans_ahead  # later jobs hang on results to come
    search = HyperBand(9, 3, seed=0)  # brackets of 9, 5 and 3 configurations at first
    handed = hand_out(search, None)
    assert len(handed) == 9 + 5 + 3 == len({job.config_id for job in handed})
    assert hand_out(search, None) == []  # every rung now waits for its trials
    grouped = packs(search, handed, 4)
    # each bracket's first rung (1, 3 and 9 epochs) in packs of its own, like batch sizes together
    assert [len(pack) for pack in grouped] == [4, 4, 1, 4, 1, 3]
    assert [{job.budget for job in pack} for pack in grouped] == [{1}, {1}, {1}, {3}, {3}, {9}]
    for budget in (1, 3, 9):
        batches = [search.params(job)["batch_size"] for pack in grouped for job in pack if job.budget == budget]
        assert batches == sorted(batches) and len(set(batches)) > 1
    again = HyperBand(9, 3, seed=0)
    assert [job.config_id for job in hand_out(again, 2)] == ["c0000", "c0001"]


def test_what_comes_is_the_handed_jobs_then_every_drawn_configuration_then_the_space():
    from seglib.hpo.schedule import coming, hand_out
    from seglib.hpo.space import grid

    space = search_space({"batch_size": {"_type": "randint", "_value": [2, 5]}})  # 2, 3, 4
    assert grid(space) == [
        {"batch_size": b, "activation": a} for b in (2, 3, 4) for a in DEFAULT_SEARCH_SPACE["activation"]["_value"]
    ]
    assert grid(search_space()) and not grid(search_space(), limit=10)  # 31 x 4 combinations: none past the limit
    huge = search_space(
        {"batch_size": {"_type": "randint", "_value": [1, 2**40]}, "other": {"_type": "choice", "_value": [1, 2]}}
    )
    assert grid(huge) == []  # counted, not listed, before the limit refuses it
    assert grid(search_space({"other": {"_type": "choice", "_value": [1, 2]}})) == grid(search_space())  # not a setting
    search = HyperBand(9, 3, space=space, seed=0)
    handed = hand_out(search, 1)
    upcoming = coming(search, handed)
    drawn = [config["params"] for config in search.state["configs"].values()]
    assert len(drawn) == 9  # the first bracket drew its rung when it opened
    assert upcoming[0] == search.params(handed[0]) and upcoming[1:10] == drawn
    assert upcoming[10:] == grid(space)
