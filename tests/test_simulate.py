"""Searches on a virtual clock (seglib.hpo.simulate) and the synthetic objective they are compared on."""

from __future__ import annotations

import importlib.util
import math
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from seglib.artifacts import SUCCEEDED
from seglib.hpo.hyperband import HyperBand, RandomSearch
from seglib.hpo.schedule import Search
from seglib.hpo.simulate import CostModel, TrainingCost, simulate
from seglib.hpo.space import sample, search_space
from seglib.settings import profile

ROOT = Path(__file__).resolve().parents[1]


def _load_synthetic():
    spec = importlib.util.spec_from_file_location("synthetic", ROOT / "benchmarks" / "synthetic.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["synthetic"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


synthetic = _load_synthetic()


class Durations(CostModel):
    """Each job takes the seconds listed for its parameter_id."""

    def __init__(self, seconds):
        self.seconds = seconds

    def work(self, job, params, worker):
        return self.seconds[job.parameter_id]


class Epochs(CostModel):
    """One second per epoch trained."""

    def work(self, job, params, worker):
        return job.budget - job.resume_from


class SharedDevice(Durations):
    """Every running job on one device, which each gets an equal share of."""

    def speeds(self, running):
        return [1.0 / len(running)] * len(running)


def by_learning_rate(params, budget):
    return params["learning_rate"]


def timeline(result):
    return [(t.parameter_id, t.worker, t.start, t.end) for t in result.trials]


# --- the clock, worked out by hand -----------------------------------------------------------


def test_two_workers_with_known_durations():
    # 4 one-epoch trials of 3, 1, 2 and 4 s on 2 workers:
    # t=0 w0 takes p0 (ends 3), w1 p1 (ends 1); t=1 w1 takes p2 (ends 3);
    # t=3 p0 and p2 end, w0 takes p3 (ends 7) and w1 finds nothing left: idle 3 -> 7.
    result = simulate(RandomSearch(epochs=4, budget=1), by_learning_rate, Durations([3, 1, 2, 4]), workers=2)
    assert timeline(result) == [(1, 1, 0, 1), (0, 0, 0, 3), (2, 1, 1, 3), (3, 0, 3, 7)]
    assert result.makespan == 7
    assert result.busy == [7, 3]
    assert result.idle == [0, 4]
    assert result.utilisation == pytest.approx(10 / 14)
    assert result.epochs == 4


def test_a_promoted_job_trains_its_increment_and_an_idle_worker_waits():
    # R = 3, η = 3: bracket s=1 is 3 configurations x 1 epoch then the best x 3 epochs;
    # bracket s=0 is 2 x 3 epochs. One second per epoch, 2 workers:
    # t=0 p0 (w0), p1 (w1) end at 1; t=1 p2 (w0) ends 2, bracket s=0 opens: p3 (w1) ends 4;
    # t=2 the rung is complete: the best, p5, resumes from epoch 1 (2 s) on w0, ends 4;
    # t=4 p5 and p3 end (recorded in worker order); p4 (w0) ends 7, w1 has nothing left to do.
    search = HyperBand(3, 3, seed=0)
    result = simulate(search, by_learning_rate, Epochs(), workers=2)
    assert timeline(result) == [(0, 0, 0, 1), (1, 1, 0, 1), (2, 0, 1, 2), (5, 0, 2, 4), (3, 1, 1, 4), (4, 0, 4, 7)]
    assert (search.job(5).budget, search.job(5).resume_from) == (3, 1)
    assert search.job(5).config_id == min(search.jobs[:3], key=lambda j: search.params(j)["learning_rate"]).config_id
    assert result.busy == [7, 4] and result.makespan == 7
    assert search.finished and all(job.status == SUCCEEDED for job in search.jobs)


def test_jobs_sharing_one_device_slow_each_other():
    # work 2 s and 4 s at half speed each: the first ends at 4; the second, alone, 2 s later.
    result = simulate(RandomSearch(epochs=2, budget=1), by_learning_rate, SharedDevice([2, 4]), workers=2)
    assert timeline(result) == [(0, 0, 0, 4), (1, 1, 0, 6)]
    assert result.busy == [4, 6]


def test_the_reported_value_and_a_diverged_trial():
    values = iter([0.5, math.nan, 0.25])
    search = RandomSearch(epochs=3, budget=1)
    result = simulate(search, lambda params, budget: next(values), Durations([1, 1, 1]))
    assert [t.value for t in result.trials] == [0.5, None, 0.25]
    assert [job.status.name for job in search.jobs] == ["SUCCEEDED", "DIVERGED", "SUCCEEDED"]
    assert search.best().parameter_id == 2


def test_max_trials_and_the_state_saved_after_every_change(tmp_path):
    saved = []
    search = HyperBand(9, 3, seed=0)
    result = simulate(search, by_learning_rate, Epochs(), workers=3, max_trials=5, after_change=saved.append)
    assert len(result.trials) == 5 and not search.finished
    assert len(saved) == 10  # handed out, then finished
    assert result.decisions == 10 and result.hook_seconds >= 0


def test_a_time_limit_hands_the_running_jobs_back_and_a_second_run_finishes_them():
    # 4 one-epoch trials of 3, 1, 2 and 4 s on 2 workers, stopped at 2 s:
    # p1 ends at 1 and p2 starts on w1; at 2 p0 (1 s left) and p2 (1 s left) are cut and requeued.
    search = RandomSearch(epochs=4, budget=1)
    first = simulate(search, by_learning_rate, Durations([3, 1, 2, 4]), workers=2, until=2)
    assert timeline(first) == [(1, 1, 0, 1)]
    assert [(t.parameter_id, t.worker, t.start, t.end, t.value) for t in first.interrupted] == [
        (0, 0, 0, 2, None),
        (2, 1, 1, 2, None),
    ]
    assert first.makespan == 2 and first.busy == [2, 2]
    assert not search.finished
    assert search.job(0).status.name == "QUEUED" and search.job(0).interruptions == ["stopped at 2 s"]
    # The next run hands the interrupted jobs out again first, whole: what they did is lost.
    second = simulate(search, by_learning_rate, Durations([3, 1, 2, 4]), workers=2)
    assert timeline(second) == [(2, 1, 0, 2), (0, 0, 0, 3), (3, 1, 2, 6)]
    assert search.finished and all(job.status == SUCCEEDED for job in search.jobs)


def test_training_cost_of_the_h200_figures():
    cost = TrainingCost(pad=lambda b: max(8, 1 << (b - 1).bit_length()))
    # batch 16: 66 steps of 7 ms + 16 x 0.19 ms; batch 20 runs padded to 32: 53 steps of 7 + 32 x 0.19 ms
    assert cost.epoch_seconds(16) == pytest.approx(66 * 0.01004)
    assert cost.epoch_seconds(20) == pytest.approx(53 * 0.01308)
    job = HyperBand(3, 3).next_job()
    relu16 = {"batch_size": 16, "activation": "relu"}
    first = cost.work(job, relu16, 0)
    assert first == pytest.approx(2.0 + 38.0 + 1 * 66 * 0.01004)
    assert cost.work(job, relu16, 1) == pytest.approx(first - 38.0)  # compiled once, for every worker
    assert cost.work(job, {"batch_size": 9, "activation": "relu"}, 0) < 38  # 9 pads to 16: the same program
    assert cost.work(job, {"batch_size": 17, "activation": "relu"}, 0) > 38  # 17 pads to 32: another one
    assert cost.work(job, {"batch_size": 16, "activation": "tanh"}, 0) > 38


def test_validation_runs_at_the_trials_own_batch_size_and_compiles_each_shape_once():
    cost = TrainingCost(
        pad=lambda b: max(8, 1 << (b - 1).bit_length()), validation_patches=261, validation_compile_seconds=5.0
    )
    # batch 5: 52 batches of 5 and a last one of 1, each a third of a training step of its shape
    assert cost.validation_seconds(5) == pytest.approx((52 * (0.007 + 5 * 0.00019) + 0.007 + 0.00019) / 3)
    assert cost.epoch_seconds(5) == pytest.approx(209 * (0.007 + 8 * 0.00019) + cost.validation_seconds(5))
    job = HyperBand(3, 3).next_job()  # 1 epoch
    relu = {"activation": "relu"}
    # the training program (relu, 8) and validation programs of batch 5 and 1
    assert cost.work(job, relu | {"batch_size": 5}, 0) == pytest.approx(2.0 + 38.0 + 2 * 5.0 + cost.epoch_seconds(5))
    # batch 6 pads to 8 (compiled); 261 = 43 x 6 + 3: validation programs of 6 and 3 are new
    assert cost.work(job, relu | {"batch_size": 6}, 0) == pytest.approx(2.0 + 2 * 5.0 + cost.epoch_seconds(6))
    # batch 1: its validation shape (1) was compiled for batch 5's last batch
    assert cost.work(job, relu | {"batch_size": 1}, 0) == pytest.approx(2.0 + cost.epoch_seconds(1))
    assert cost.work(job, {"activation": "tanh", "batch_size": 1}, 0) == pytest.approx(
        2.0 + 38.0 + 5.0 + cost.epoch_seconds(1)
    )


def test_padded_validation_has_the_training_shape():
    cost = TrainingCost(
        pad=lambda b: max(8, 1 << (b - 1).bit_length()),
        validation_patches=261,
        validation_compile_seconds=5.0,
        pad_validation=True,
    )
    # batch 5: 53 batches padded to 8
    assert cost.validation_seconds(5) == pytest.approx(53 * (0.007 + 8 * 0.00019) / 3)
    job = HyperBand(3, 3).next_job()
    first = cost.work(job, {"activation": "relu", "batch_size": 5}, 0)
    assert first == pytest.approx(2.0 + 38.0 + 5.0 + cost.epoch_seconds(5))
    # batch 6 and 1 pad to 8: nothing new to compile
    assert cost.work(job, {"activation": "relu", "batch_size": 6}, 0) == pytest.approx(2.0 + cost.epoch_seconds(6))
    assert cost.work(job, {"activation": "relu", "batch_size": 1}, 0) == pytest.approx(2.0 + cost.epoch_seconds(1))


def test_an_unusable_worker_count_or_cost_model_is_refused():
    with pytest.raises(ValueError, match="at least 1 worker"):
        simulate(HyperBand(3, 3), by_learning_rate, Epochs(), workers=0)

    class Paused(Epochs):
        def speeds(self, running):
            return [0.0] * len(running)

    with pytest.raises(ValueError, match="paused every running job"):
        simulate(HyperBand(3, 3), by_learning_rate, Paused())


# --- the synthetic objective -----------------------------------------------------------------


@pytest.mark.parametrize("ranking", ["well", "badly"])
def test_the_synthetic_optimum_is_known(ranking):
    objective = synthetic.Synthetic(60, ranking, noise=0.0)
    best, value = objective.optimum()
    assert objective(best, 60) == value == objective.final(best)
    assert objective.regret(best) == 0
    rng = random.Random(0)
    others = [sample(search_space(), rng) for _ in range(500)]
    assert min(objective.final(x) for x in others) > value
    assert all(objective(x, 60) == pytest.approx(objective.final(x)) for x in others[:50])
    assert all(objective(x, 2) > objective(x, 20) > objective(x, 60) for x in others[:50])  # losses fall


def test_the_synthetic_noise_is_a_function_of_seed_configuration_and_budget():
    x = {"batch_size": 8, "learning_rate": 0.01, "activation": "relu"}
    objective = synthetic.Synthetic(60, "well", seed=3)
    assert objective(x, 2) == objective(x, 2) != synthetic.Synthetic(60, "well", seed=4)(x, 2)


def _rank_correlation(a, b) -> float:
    return float(np.corrcoef(np.argsort(np.argsort(a)), np.argsort(np.argsort(b)))[0, 1])


@pytest.mark.parametrize("max_budget", [60, 81])
def test_low_fidelities_rank_well_or_badly(max_budget):
    rng = random.Random(1)
    configs = [sample(search_space(), rng) for _ in range(300)]
    for ranking in ("well", "badly"):
        objective = synthetic.Synthetic(max_budget, ranking)
        final = [objective.final(x) for x in configs]
        early = [objective(x, 2) for x in configs]
        top_early = np.argsort(early)[:10]
        mean_regret_of_top_early = np.mean([objective.regret(configs[i]) for i in top_early])
        mean_regret = np.mean([objective.regret(x) for x in configs])
        assert _rank_correlation([objective(x, max_budget) for x in configs], final) > 0.95
        if ranking == "well":
            assert _rank_correlation(early, final) > 0.8
            assert mean_regret_of_top_early < mean_regret / 4
        else:  # the best-looking after 2 epochs are worse than configurations drawn at random
            assert _rank_correlation(early, final) < 0.3
            assert mean_regret_of_top_early > mean_regret


# --- every registered tuner at the full profile's scale --------------------------------------


def run_tuner(kind: str, max_budget: int, seed: int, workers: int = 4, ranking: str = "well"):
    settings = profile("full", max_budget=max_budget, eta=3, seed=seed, max_trials=None)
    cls = Search.registry[kind]
    search = cls.create(settings, search_space(), cls.planned(settings)[1])
    result = simulate(search, synthetic.Synthetic(max_budget, ranking, seed=seed), TrainingCost(), workers)
    return search, result


@pytest.mark.parametrize("max_budget", [60, 81])
@pytest.mark.parametrize("kind", sorted(Search.registry))
def test_every_tuner_runs_to_its_end_deterministically(kind, max_budget):
    search, result = run_tuner(kind, max_budget, seed=0)
    assert search.finished
    assert len(result.trials) == len(search.jobs) > 0
    assert all(job.status == SUCCEEDED for job in search.jobs)
    assert result.epochs == sum(job.budget - job.resume_from for job in search.jobs)
    assert all(job.epochs_trained == job.budget - job.resume_from for job in search.jobs)
    settings = profile("full", max_budget=max_budget, max_trials=None)
    assert result.epochs == Search.registry[kind].planned(settings)[1]  # each spends what it plans
    again_search, again = run_tuner(kind, max_budget, seed=0)
    assert again.trials == result.trials and again_search.to_state() == search.to_state()
    _, other = run_tuner(kind, max_budget, seed=1)
    assert other.trials != result.trials


def test_asynchronous_rungs_keep_four_workers_busier_than_synchronous_hyperband():
    # HyperBand opens its next bracket while a rung waits, so it idles only near its end:
    # compare medians over seeds, not one seed.
    use = {
        kind: np.median([run_tuner(kind, 60, seed)[1].utilisation for seed in range(10)])
        for kind in ("hyperband", "asha")
    }
    assert use["asha"] > use["hyperband"], use


def test_a_job_ending_at_the_limit_is_reported_and_the_others_handed_back():
    # at 1 s p1 ends exactly at the limit: it counts; p0 (3 s) is cut and requeued
    search = RandomSearch(epochs=4, budget=1)
    result = simulate(search, by_learning_rate, Durations([3, 1, 2, 4]), workers=2, until=1)
    assert timeline(result) == [(1, 1, 0, 1)]
    assert [(t.parameter_id, t.end) for t in result.interrupted] == [(0, 1)]
    assert search.job(0).status.name == "QUEUED" and result.busy == [1, 1]
    simulate(search, by_learning_rate, Durations([3, 1, 2, 4]), workers=2)
    assert search.finished
