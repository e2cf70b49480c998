"""ASHA and BOHB as pure state machines: hand-worked promotion tables, epoch budgets, state round trips."""

from __future__ import annotations

import json
import math
import random

import pytest

from seglib.artifacts import DIVERGED, FAILED, SUCCEEDED
from seglib.hpo.asha import Asha, asha_rungs, expected_trials
from seglib.hpo.bohb import BOHB, OBSERVED, model_budget, n_min
from seglib.hpo.hyperband import HyperBand, RandomSearch, pass_epochs
from seglib.hpo.schedule import Search, charged_epochs
from seglib.hpo.search import plan
from seglib.hpo.space import search_space
from seglib.settings import MAIN_TUNERS, TUNERS, SettingError, profile

DIV, FAIL = "diverged", "failed"


def settle(search: Search, job, outcome) -> None:
    """Apply a table's outcome: a loss, DIV (NaN loss) or FAIL (the configuration's own error)."""
    if outcome == FAIL:
        search.fail(job.parameter_id, "boom", epochs_trained=0)
    elif outcome == DIV:
        search.report(job.parameter_id, None, diverged=True, epochs_trained=1)
    else:
        search.report(job.parameter_id, outcome, epochs_trained=job.budget - job.resume_from)


def pair(job) -> tuple:
    return (job.config_id, job.budget, job.resume_from)


# --- ASHA: promotions worked out by hand (R = 9, η = 3: rungs 1, 3, 9) -------------------------

# Each row: the pair the next request must hand out, and the outcome reported before the next
# request (one trial at a time). Comments say why the row is what it is.
PROMOTE_AS_SOON_AS_TOP_THIRD = [
    ("c0000", 1, 0, 0.5),
    ("c0001", 1, 0, 0.3),
    ("c0002", 1, 0, 0.9),  # rung 0: 3 finished, top 1/3 = c0001
    ("c0001", 3, 1, 0.25),  # promoted at once, resuming from its epoch-1 checkpoint
    ("c0003", 1, 0, 0.1),  # 4 finished, top 1 = c0003 (new best)
    ("c0003", 3, 1, 0.2),
    ("c0004", 1, 0, 0.8),
    ("c0005", 1, 0, 0.7),  # 6 finished, top 2 = c0003, c0001: both promoted already
    ("c0006", 1, 0, 0.6),
    ("c0007", 1, 0, 0.05),  # 8 finished, top 2 = c0007, c0003: c0007 waits
    ("c0007", 3, 1, 0.15),  # rung 1: 3 finished, top 1 = c0007
    ("c0007", 9, 3, 0.12),  # the highest rung first
    ("c0008", 1, 0, 0.4),  # 9 finished, top 3 = c0007, c0003, c0001: all promoted
    ("c0009", 1, 0, 0.95),
]
LATE_BEST_IS_PROMOTED_PAST_EARLIER_ONES = [
    ("c0000", 1, 0, 0.1),
    ("c0001", 1, 0, 0.2),
    ("c0002", 1, 0, 0.3),
    ("c0000", 3, 1, 0.5),
    ("c0003", 1, 0, 0.4),
    ("c0004", 1, 0, 0.5),
    ("c0005", 1, 0, 0.05),  # 6 finished, top 2 = c0005, c0000
    ("c0005", 3, 1, 0.6),
    ("c0006", 1, 0, 0.01),  # 7 finished, top 2 = c0006, c0005: a third promotion (ASHA's known excess)
    ("c0006", 3, 1, 0.7),  # rung 1: 3 finished, top 1 = c0000
    ("c0000", 9, 3, 0.45),
    ("c0007", 1, 0, 0.9),
]
DIVERGED_COUNT_FAILED_DO_NOT = [
    ("c0000", 1, 0, DIV),
    ("c0001", 1, 0, FAIL),  # not a finished trial: rung 0 has 1
    ("c0002", 1, 0, 0.3),
    ("c0003", 1, 0, 0.4),  # 3 finished (c0000 diverged among them), top 1 = c0002
    ("c0002", 3, 1, 0.2),
    ("c0004", 1, 0, DIV),
    ("c0005", 1, 0, DIV),
    ("c0006", 1, 0, DIV),  # 6 finished, top 2 = c0002, c0003
    ("c0003", 3, 1, FAIL),
    ("c0007", 1, 0, DIV),  # 7 finished: the top 2 are promoted; a diverged one never is
    ("c0008", 1, 0, DIV),
    ("c0009", 1, 0, DIV),  # 9 finished, top 3 = c0002, c0003, c0000 (diverged): nothing to promote
    ("c0010", 1, 0, 0.1),
]


@pytest.mark.parametrize(
    "table",
    [PROMOTE_AS_SOON_AS_TOP_THIRD, LATE_BEST_IS_PROMOTED_PAST_EARLIER_ONES, DIVERGED_COUNT_FAILED_DO_NOT],
    ids=["top-third", "late-best", "diverged-and-failed"],
)
def test_asha_hands_out_the_hand_worked_sequence(table):
    asha = Asha(9, 3, seed=0)
    for config_id, budget, resume_from, outcome in table:
        job = asha.next_job()
        assert pair(job) == (config_id, budget, resume_from)
        assert job.rung == asha_rungs(9, 3).index(budget)
        settle(asha, job, outcome)


def test_asha_promotes_the_highest_rung_first_when_two_are_ready():
    """Two trials end together: one completes rung 1's top third, one tops rung 0."""
    asha = Asha(9, 3, seed=0)
    for *_, outcome in PROMOTE_AS_SOON_AS_TOP_THIRD[:9]:  # up to c0006 at rung 0
        settle(asha, asha.next_job(), outcome)
    low, other = asha.next_job(), asha.next_job()  # c0007 and c0008 at rung 0, both running
    assert [pair(j) for j in (low, other)] == [("c0007", 1, 0), ("c0008", 1, 0)]
    settle(asha, low, 0.05)
    promoted = asha.next_job()
    assert pair(promoted) == ("c0007", 3, 1)
    settle(asha, other, 0.01)  # rung 0: 9 finished, top 3 = c0008, c0007, c0003: c0008 waits
    settle(asha, promoted, 0.15)  # rung 1: 3 finished, top 1 = c0007: waits too
    assert pair(asha.next_job()) == ("c0007", 9, 3)
    assert pair(asha.next_job()) == ("c0008", 3, 1)


@pytest.mark.parametrize(
    "max_budget, eta, epochs, expected_rungs",
    [(60, 3, 780, (2, 6, 20, 60)), (9, 3, 69, (1, 3, 9)), (3, 3, 11, (1, 3)), (1, 3, 5, (1,)), (16, 2, 100, None)],
)
def test_asha_rungs_are_hyperbands_most_aggressive_and_it_never_exceeds_its_epochs(
    max_budget, eta, epochs, expected_rungs
):
    if expected_rungs:
        assert asha_rungs(max_budget, eta) == expected_rungs
    rng = random.Random(7)
    asha = Asha(max_budget, eta, epochs, seed=1)
    running = []
    while True:  # up to 4 trials at once, ending in any order; some diverge or fail
        while len(running) < rng.randint(1, 4) and (job := asha.next_job()) is not None:
            running.append(job)
            assert asha.committed <= epochs
        if not running:
            break
        job = running.pop(rng.randrange(len(running)))
        settle(asha, job, rng.choice([rng.random()] * 8 + [DIV, FAIL]))
        assert asha.committed <= epochs
    assert asha.finished and asha.next_job() is None
    assert epochs - asha.committed < asha_rungs(max_budget, eta)[0]  # not even a new bottom trial fits
    assert sum(charged_epochs(job) for job in asha.jobs) == asha.committed
    pairs = [(job.config_id, job.budget) for job in asha.jobs]
    assert len(pairs) == len(set(pairs))


def test_asha_spends_exactly_one_warm_hyperband_pass_when_every_trial_succeeds():
    asha = Asha(60, 3, seed=0)
    while (job := asha.next_job()) is not None:
        settle(asha, job, random.Random(job.config_id).random() + 1 / job.budget)
    trained = sum(job.budget - job.resume_from for job in asha.jobs)
    assert trained == asha.committed == pass_epochs(60, 3)["warm_start"] == 780
    assert {job.budget for job in asha.jobs} == {2, 6, 20, 60}
    assert all(job.resume_from == (0 if job.rung == 0 else asha_rungs(60, 3)[job.rung - 1]) for job in asha.jobs)


def test_asha_caps_its_trials_and_plans_what_the_progress_line_shows():
    asha = Asha(9, 3, seed=0, max_trials=5)
    while (job := asha.next_job()) is not None:
        settle(asha, job, 1.0)
    assert len(asha.jobs) == 5 and asha.finished
    assert expected_trials(3, 3, 11) == 9  # 1,1,1, promote (2), 1,1,1, promote (2), 1 = 11 epochs
    settings = profile("quick", tuner="asha")
    the_plan = plan(settings)
    assert the_plan["tuner"] == "asha" and (the_plan["trials"], the_plan["planned_epochs"]) == (9, 11)
    assert plan(settings, max_epochs=5)["planned_epochs"] == 5


def test_a_trial_that_stops_early_gives_its_unused_epochs_back():
    asha = Asha(9, 3, epochs=5, seed=0)
    for loss in (0.3, 0.2, 0.1):
        settle(asha, asha.next_job(), loss)
    promoted = asha.next_job()
    assert pair(promoted) == ("c0002", 3, 1) and asha.committed == 5 and asha.next_job() is None
    asha.report(promoted.parameter_id, None, diverged=True, epochs_trained=1)  # NaN after 1 of its 2 epochs
    assert asha.committed == 4
    assert pair(asha.next_job()) == ("c0003", 1, 0) and asha.committed == 5


def drive(search: Search, score, steps: int | None = None, concurrency: int = 1, reload=None) -> list:
    """Hand out up to ``concurrency`` jobs, settle the oldest, repeat; ``reload(search)`` after every step."""
    order, running = [], []
    while steps is None or len(order) < steps:
        while len(running) < concurrency and (job := search.next_job()) is not None:
            order.append(job)
            running.append(job.parameter_id)
            search = reload(search) if reload else search
        if not running:
            break
        job = search.job(running.pop(0))
        settle(search, job, score(search, job))
        search = reload(search) if reload else search
    return order, search


def asha_score(search, job):
    value = random.Random(f"{job.config_id}-{job.budget}").random()
    return DIV if value < 0.1 else FAIL if value < 0.15 else value


@pytest.mark.parametrize("concurrency", [1, 3])
def test_asha_resumes_exactly_from_a_state_saved_after_every_step(tmp_path, concurrency):
    def reload(search):
        search.save(tmp_path / "state.json")
        return Search.load(tmp_path / "state.json")

    expected, reference = drive(Asha(9, 3, seed=4), asha_score, concurrency=concurrency)
    handed, resumed = drive(Asha(9, 3, seed=4), asha_score, concurrency=concurrency, reload=reload)
    assert [pair(j) for j in handed] == [pair(j) for j in expected]
    assert resumed.to_state() == reference.to_state()
    assert type(resumed) is Asha and resumed.finished


def test_asha_hands_an_interrupted_trial_out_again_before_anything_new():
    asha = Asha(9, 3, seed=0)
    first, second = asha.next_job(), asha.next_job()
    state = asha.to_state()  # killed here: both RUNNING
    again = Search.from_state(json.loads(json.dumps(state)))
    for job in (first, second):
        again.requeue(job.parameter_id, "the search's process was stopped")
    assert [again.next_job().parameter_id, again.next_job().parameter_id] == [0, 1]
    assert again.job(0).attempts == 2 and again.committed == 2


# --- BOHB ------------------------------------------------------------------------------------


def hb_score(search, job):
    """A loss that depends on the configuration's id and budget only, so HyperBand and BOHB rank alike."""
    value = random.Random(f"{job.config_id}-{job.budget}").random()
    return DIV if value < 0.08 else FAIL if value < 0.12 else value


def schedule_of(jobs) -> list[tuple]:
    return [(j.config_id, j.bracket, j.s, j.rung, j.budget, j.resume_from) for j in jobs]


@pytest.mark.parametrize("max_budget, eta, concurrency", [(9, 3, 1), (9, 3, 4), (60, 3, 1), (27, 3, 5), (8, 2, 3)])
def test_bohb_hands_out_hyperbands_exact_schedule(max_budget, eta, concurrency):
    hyperband, _ = drive(HyperBand(max_budget, eta, seed=2), hb_score, concurrency=concurrency)
    bohb_jobs, bohb = drive(BOHB(max_budget, eta, seed=2), hb_score, concurrency=concurrency)
    assert schedule_of(bohb_jobs) == schedule_of(hyperband)
    assert bohb.finished and bohb.planned_trials() == pass_epochs(max_budget, eta)["trials"]


def lr_score(search, job):
    """Lower near learning rate 10^-2.5, whatever the other hyperparameters: a region a model can find."""
    return abs(math.log10(search.params(job)["learning_rate"]) + 2.5) + 1.0 / job.budget


def test_bohb_models_the_largest_budget_with_enough_trials_and_proposes_a_third_at_random():
    order, bohb = drive(BOHB(60, 3, seed=0), lr_score)
    first_job = {}
    for job in order:
        first_job.setdefault(job.config_id, job.parameter_id)
    needed = n_min(bohb.state["search_space"])
    modelled, random_draws = [], []
    for config_id, config in bohb.state["configs"].items():
        before = [j for j in bohb.jobs if j.parameter_id < first_job[config_id] and j.status in OBSERVED]
        observed = {}
        for job in before:
            observed.setdefault(job.budget, []).append(job)
        expected = model_budget(observed, needed)
        if expected is None:
            assert config["model_budget"] is None, config_id  # random until a budget has n_min trials
        else:
            assert config["model_budget"] in (None, expected), (config_id, config, expected)
            (modelled if config["model_budget"] else random_draws).append(config)
    assert list(bohb.state["configs"].values())[needed - 1]["model_budget"] is None
    assert modelled and {c["model_budget"] for c in modelled} > {2}  # the budget moves up as rungs fill
    share = len(random_draws) / (len(random_draws) + len(modelled))
    assert 0.15 < share < 0.5, share  # a third at random, whatever the model
    # log10(learning rate) is uniform on [-4, -1] when drawn at random: 0.75 from -2.5 on average
    distance = lambda configs: sum(abs(math.log10(c["params"]["learning_rate"]) + 2.5) for c in configs) / len(configs)
    assert distance(modelled) < 0.8 * 0.75 < distance(random_draws)  # the model proposes where the losses are low


def test_bohb_proposals_are_reproducible_from_the_state(tmp_path):
    def reload(search):
        search.save(tmp_path / "state.json")
        return Search.load(tmp_path / "state.json")

    expected, reference = drive(BOHB(9, 3, seed=5), lr_score, concurrency=2)
    handed, resumed = drive(BOHB(9, 3, seed=5), lr_score, concurrency=2, reload=reload)
    assert schedule_of(handed) == schedule_of(expected)
    assert resumed.state["configs"] == reference.state["configs"]
    assert any(c["model_budget"] for c in reference.state["configs"].values())
    other, _ = drive(BOHB(9, 3, seed=6), lr_score, concurrency=2)
    assert [resumed.params(j) for j in handed] != [resumed.params(j) for j in other]


def test_a_loaded_bohb_state_proposes_the_same_next_configuration(tmp_path):
    _, bohb = drive(BOHB(27, 3, seed=1), lr_score, steps=30)  # the model is in use by then
    bohb.save(tmp_path / "state.json")
    loaded = Search.load(tmp_path / "state.json")
    for _ in range(12):  # the rest of a bracket's first rung, proposed one by one
        ours, theirs = bohb.next_job(), loaded.next_job()
        assert pair(ours) == pair(theirs) and bohb.params(ours) == loaded.params(theirs)
        settle(bohb, ours, lr_score(bohb, ours))
        settle(loaded, theirs, lr_score(loaded, theirs))
    assert any(c["model_budget"] for c in loaded.state["configs"].values())


def test_bohb_counts_diverged_and_failed_trials_as_observations():
    bohb = BOHB(9, 3, seed=0)
    for outcome in (DIV, FAIL, 0.5, DIV):
        settle(bohb, bohb.next_job(), outcome)
    assert [j.status for j in bohb.jobs] == [DIVERGED, FAILED, SUCCEEDED, DIVERGED]
    assert len(bohb._observed[1]) == 4 == n_min(bohb.state["search_space"])
    proposals = [bohb.proposal(f"c{k:04d}") for k in range(100, 112)]
    assert {p["model_budget"] for p in proposals} == {None, 1}


@pytest.mark.parametrize(
    "entry, words",
    [
        ({"_type": "normal", "_value": [0, 1]}, "'normal'"),
        ({"_type": "quniform", "_value": [1, 9, 2]}, "'quniform'"),
        ({"_type": "choice", "_value": [[1, 2], [3]]}, "a choice among lists"),
    ],
)
def test_bohb_refuses_a_space_its_model_cannot_represent(entry, words):
    with pytest.raises(ValueError, match=r"entry 'x' is .*" + words.replace("(", r"\(")) as error:
        BOHB(9, 3, space=search_space({"x": entry}))
    assert "--tuner hyperband" in str(error.value)


# --- the registry and the one setting --------------------------------------------------------


def test_every_search_reloads_as_itself_and_names_itself(tmp_path):
    searches = {
        "hyperband": HyperBand(9, 3),
        "asha": Asha(9, 3),
        "bohb": BOHB(9, 3),
        "random": RandomSearch(9, 3),
    }
    assert sorted(searches) == sorted(TUNERS)
    for kind, search in searches.items():
        search.next_job()
        search.save(tmp_path / f"{kind}.json")
        loaded = Search.load(tmp_path / f"{kind}.json")
        assert type(loaded) is type(search) and loaded.kind == kind and loaded.title
        assert loaded.to_state() == search.to_state()


def test_the_tuner_setting_names_a_main_search():
    assert profile("quick").tuner == "hyperband" and set(MAIN_TUNERS) == set(TUNERS) - {"random"}
    assert profile("quick", tuner="bohb").tuner == "bohb"
    with pytest.raises(SettingError, match=r"tuner='random': expected one of \['hyperband', 'asha', 'bohb'\]"):
        profile("quick", tuner="random")


def test_a_folder_holding_one_search_refuses_another_by_name(tmp_path):
    from seglib.artifacts import write_json
    from seglib.hpo.search import SearchExists, tune

    write_json(tmp_path / "experiment.json", {"plan": {"tuner": "asha"}, "engine": "local"})
    with pytest.raises(SearchExists, match=r"holds a search of tuner asha, not bohb: continue it with --tuner asha"):
        tune(tmp_path, profile("quick"), "bohb")
