"""The simulated GPU timeline (benchmarks/gpu_timeline.py): it runs, and packing never predicts more time."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from seglib.hpo.schedule import Job
from seglib.hpo.simulate import PackedCost, Running

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_load("synthetic")
timeline = _load("gpu_timeline")


def _running(*batch_sizes, activation="relu"):
    job = Job(parameter_id=0, config_id="c", bracket=0, s=0, rung=0, budget=1, resume_from=0)
    return [Running(job, {"batch_size": b, "activation": activation}, i, 0.0) for i, b in enumerate(batch_sizes)]


def test_a_pack_step_costs_the_fixed_cost_once_and_every_slot_s_patches():
    cost = PackedCost(pad=lambda b: 8 if b <= 8 else 16, slots=4)
    round_seconds, shares = cost.shares(_running(1, 3, 8, 9))
    # batches 1, 3, 8 share one pack of 4 x 8 patches; batch 9 is alone in a pack of 4 x 16
    assert round_seconds == pytest.approx(2 * 0.007 + 0.00019 * (4 * 8 + 4 * 16))
    assert sum(shares) == pytest.approx(round_seconds)
    assert shares[0] == pytest.approx((0.007 + 0.00019 * 32) / 3)
    assert cost.speeds(_running(1, 3)) == [pytest.approx(1 / (0.007 + 0.00019 * 32))] * 2


def test_concatenated_packs_charge_each_trial_its_own_patches():
    cost = PackedCost(concatenate=True, pack_patches=64)
    round_seconds, shares = cost.shares(_running(1, 31, 40))  # 72 patches: two packs of 64
    assert round_seconds == pytest.approx(2 * (0.007 + 0.00019 * 64))
    assert shares[1] / shares[0] == pytest.approx(31)


def test_the_timeline_runs_and_packing_never_predicts_more_than_one_stream():
    single = timeline.single_stream(0)
    assert set(single["seconds"]) == set(timeline.STAGES)
    assert 0 < single["seconds"]["baseline"] < single["seconds"]["hyperband"]
    assert single["programs"] == 13  # 12 (activation, padded batch) programs and the report's prediction
    # and a validation program per (activation, padded batch): padded as the training batches
    assert single["validation_programs"] == 12
    compiles = 13 * 38.0 + single["validation_programs"] * timeline.VALIDATION_COMPILE
    assert single["seconds"]["compiles"] == pytest.approx(compiles)
    designs = [
        timeline.Design(4, 16, 8, False),
        timeline.Design(0, 32, 8, True, 64),
        timeline.Design(0, 32, 1, True, 64, concatenate=True),
    ]
    for scale in (1.0, timeline.GPUS["L4"]):
        one = timeline.single_stream(0, scale)
        for design in designs:
            chosen, result = timeline.best_design(0, [timeline.DESIGNS[0], design], scale)
            assert result["total"] <= one["total"], (scale, chosen)
    # On the H200 every design packs, and beats the single stream.
    assert timeline.packed(0, designs[0])["total"] < single["total"]
    # A pack of one trains exactly the single stream's steps: no stage costs more.
    alone = timeline.packed(0, timeline.DESIGNS[0])
    for stage in timeline.STAGES:
        assert alone["seconds"][stage] <= single["seconds"][stage] + 1e-6, stage


def test_the_full_profile_in_windows_loses_less_with_the_compile_cache_carried():
    cold, warm = timeline.windows(0, carry_cache=False), timeline.windows(0, carry_cache=True)
    assert cold["windows"] and warm["windows"] and warm["windows"] < cold["windows"]
    for split in (cold, warm):
        rows = split["rows"]
        assert [row["window"] for row in rows] == list(range(1, split["windows"] + 1))
        assert rows[-1]["finished"] and not any(row["finished"] for row in rows[:-1])
        for row in rows:
            used = timeline.WINDOW_START + sum(row["seconds"].values())
            assert used <= timeline.WINDOW_SECONDS + 1e-6, row
            assert row["seconds"]["baseline"] > 0, row  # every window trains the baseline again
        assert rows[-1]["trials_done"] == {"hyperband": 69, "random": 13}
    # the first window is the same either way; after it, a carried program loads instead of compiling
    assert cold["rows"][0] == warm["rows"][0]
    assert warm["rows"][1]["compiling_seconds"] < cold["rows"][1]["compiling_seconds"]
    assert warm["rows"][1]["seconds"]["baseline"] < cold["rows"][1]["seconds"]["baseline"]


def test_a_trial_longer_than_a_window_is_named_and_the_windows_stop():
    # seed 1 draws a random-search configuration of batch 1 for 60 epochs: 62,640 steps
    split = timeline.windows(1, carry_cache=True)
    assert split["windows"] is None
    assert "a random trial of batch 1 and 60 epochs needs" in split["why"]
    last = split["rows"][-1]
    assert last["interrupted"]["seconds_alone"] > timeline.WINDOW_SECONDS - timeline.WINDOW_START
    # a longer window lets it finish
    assert timeline.windows(1, carry_cache=True, limit=1200)["windows"]


def test_the_engine_packs_like_batch_sizes_together_because_mixed_ones_cost_more_than_one_at_a_time():
    single = timeline.single_stream(0)["total"]
    as_handed_out = timeline.engine_packs(0, 8, in_order=True)
    assert as_handed_out["total"] > single  # predicted: packing 8 unlike batch sizes loses
    two = timeline.engine_packs(0, 2)
    assert two["packs"] > 0 and two["total"] < single
    assert two["total"] < timeline.engine_packs(0, 2, in_order=True)["total"]
    assert timeline.engine_packs(0, 8)["total"] < as_handed_out["total"]


def test_a_pack_costs_its_smallest_batch_s_steps_at_its_largest_padded_batch_in_every_slot():
    cost = timeline.TrainingCost(pad=lambda b: max(8, 1 << (b - 1).bit_length()), train_patches=64)
    job = timeline.HyperBand(3, 3).next_job()  # 1 epoch from 0
    members = [(job, {"batch_size": 2, "activation": "relu"}), (job, {"batch_size": 9, "activation": "tanh"})]
    seconds, compiling = timeline.pack_seconds(cost, members, slots=4)
    assert compiling == pytest.approx(timeline.PACKED_COMPILE * 38.0)  # validation: 0 patches, no programs
    step = 0.007 + 0.00019 * 1.15 * 4 * 16  # 4 slots of batch 9 padded to 16
    assert seconds == pytest.approx(compiling + 2 * 0.5 + 32 * step)  # 64 / 2 = 32 steps
    again, compiled_again = timeline.pack_seconds(cost, members, slots=4)
    assert compiled_again == 0 and again == pytest.approx(seconds - compiling)


def test_windows_too_short_for_the_tuned_model_and_the_report_are_named_not_repeated(monkeypatch):
    # a report of 400 s: after the start (30 s), the baseline (46 s) and the tuned model (51 s)
    # it does not fit in 560 s, and every later window would try the same again
    monkeypatch.setattr(timeline, "REPORT_SECONDS", 400.0)
    split = timeline.windows(0, carry_cache=True)
    assert split["windows"] is None and "the tuned model and the report do not fit" in split["why"], split["why"]
    assert split["rows"][-1]["trials_done"] == {"hyperband": 69, "random": 13}
    assert len(split["rows"]) == 7  # the six windows of the run, then one that shows it cannot end


def test_compiling_ahead_trains_the_same_and_waits_only_for_what_is_not_compiled_yet():
    single = timeline.single_stream(0)
    one, four = timeline.compiled_ahead(0, 1, 1.0), timeline.compiled_ahead(0, 4, 1.5)
    for ahead in (one, four):
        for stage in ("baseline", "hyperband", "random", "tuned", "report"):
            assert ahead["seconds"][stage] == pytest.approx(single["seconds"][stage])
        assert 0 < ahead["seconds"]["compiles"] < single["seconds"]["compiles"]
        assert ahead["total"] == pytest.approx(sum(ahead["seconds"].values()))
    assert four["seconds"]["compiles"] < one["seconds"]["compiles"]
    never = timeline.compiled_ahead(0, 1, 1e9)  # compiles that never end: the search's first trial waits
    assert never["total"] > single["total"]
