"""A study of the searches (benchmarks/compare_searches.py, seglib.report.study): its numbers, words and files.

The wording is checked on made-up spreads, both overlapping and separated; the curves and the
report section on searches driven with made-up losses (seconds); one tiny real study trains
(2 tuners x 2 seeds; the slow tier) and checks the files it leaves and the section the report
draws from them.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from test_report import IMAGE_LINK, fake_experiment, make_fake_run

from seglib import report
from seglib.artifacts import TrialRow, read_json
from seglib.hpo.hyperband import HyperBand, RandomSearch
from seglib.report import study
from seglib.report.study import anytime, band, best_at, search_name, spread, summarize, verdict

ROOT = Path(__file__).resolve().parents[1]
OVERLAPPING = "differences within the interquartile ranges: no tuner is better at this scale"


def compare_searches():
    spec = importlib.util.spec_from_file_location("compare_searches", ROOT / "benchmarks" / "compare_searches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spread_is_median_and_quartiles_of_the_finite_values():
    assert spread([1.0, 2.0, 3.0, 4.0, 5.0, None, float("nan")]) == {"median": 3.0, "q1": 2.0, "q3": 4.0, "n": 5}
    assert spread([None]) == {"median": None, "q1": None, "q3": None, "n": 0}


def test_overlapping_ranges_name_no_better_tuner():
    spreads = {
        "hyperband": spread([0.90, 0.92, 0.94]),
        "random": spread([0.91, 0.93, 0.95]),
        "asha": spread([0.89, 0.93, 0.96]),
    }
    text = verdict(spreads, "Loss")
    assert OVERLAPPING in text and "lowest median HyperBand" in text
    assert "is better" not in text.replace("no tuner is better", "")


def test_separated_ranges_name_the_better_tuner():
    spreads = {"hyperband": spread([0.80, 0.81, 0.82]), "random": spread([0.90, 0.91, 0.92])}
    text = verdict(spreads, "Loss")
    assert "HyperBand is better at this scale" in text
    assert "HyperBand's interquartile range lies below random search's" in text
    assert OVERLAPPING not in text


def test_two_close_tuners_ahead_of_a_third_are_not_ranked_between_themselves():
    spreads = {
        "hyperband": spread([0.80, 0.81, 0.82]),
        "asha": spread([0.805, 0.815, 0.825]),
        "random": spread([0.90, 0.91, 0.92]),
    }
    text = verdict(spreads, "Loss")
    assert "no single tuner is best: HyperBand overlaps ASHA" in text
    assert "below random search's" in text and "ASHA's interquartile range lies below random search's" in text


def test_higher_is_better_reverses_the_sides():
    separated = {"hyperband": spread([0.60, 0.61, 0.62]), "random": spread([0.50, 0.51, 0.52])}
    assert "HyperBand is better" in verdict(separated, "IoU", lower_is_better=False)
    assert "lies above random search's" in verdict(separated, "IoU", lower_is_better=False)
    assert "random search is better" in verdict(separated, "Loss")  # the same numbers as losses
    close = {"hyperband": spread([0.50, 0.55, 0.60]), "random": spread([0.52, 0.56, 0.58])}
    assert OVERLAPPING in verdict(close, "IoU", lower_is_better=False)


def test_a_single_tuner_or_too_few_seeds_are_not_compared():
    assert "nothing to compare" in verdict({"hyperband": spread([0.9])}, "Loss")
    two = {"hyperband": spread([0.80, 0.81]), "random": spread([0.90, 0.91, 0.92])}
    assert "too few seeds to compare (HyperBand has fewer than 3)" in verdict(two, "Loss")


def fake_study(folder: Path, seeds: int = 3) -> Path:
    """A study folder of HyperBand and random search runs driven with made-up losses (no training)."""
    for seed in range(seeds):
        rows = fake_experiment(
            folder / study.SEARCHES / search_name("hyperband", seed), HyperBand(9, 3, seed=seed), "hyperband", seed
        )
        epochs = sum(r.epochs_trained for r in rows)
        fake_experiment(
            folder / study.SEARCHES / search_name("random", seed), RandomSearch(epochs, 9, seed=seed), "random", seed
        )
    return folder


def test_anytime_steps_follow_the_order_trials_ended():
    trials = [
        TrialRow("c1", 1, "SUCCEEDED", {}, value=0.9, epochs_trained=1, start_time=10.0, end_time=12.0),
        TrialRow("c0", 1, "SUCCEEDED", {}, value=0.8, epochs_trained=1, start_time=0.0, end_time=5.0),
        TrialRow("c2", 3, "FAILED", {}, epochs_trained=2, start_time=12.0, end_time=20.0),
    ]
    steps = anytime(trials)
    assert steps == {"epochs": [1, 2, 4], "seconds": [5.0, 12.0, 20.0], "best": [0.8, 0.8, 0.8]}
    assert best_at(steps, "epochs", 0) is None and best_at(steps, "epochs", 3) == 0.8
    curve = band([steps, {"epochs": [2, 4], "seconds": [1.0, 9.0], "best": [1.0, 0.7]}], "epochs")
    assert curve["x"] == [2.0, 3.0, 4.0] and curve["median"] == [0.9, 0.9, 0.75]


def test_summary_compares_at_the_fewest_epochs_any_search_spent(tmp_path):
    fake_study(tmp_path)
    result = summarize(tmp_path)
    assert set(result["tuners"]) == {"hyperband", "random"}
    spent = [s["epochs"] for row in result["tuners"].values() for s in row["per_seed"].values()]
    assert result["equal_epochs"] == min(spent)
    for row in result["tuners"].values():
        assert row["seeds"] == [0, 1, 2]
        loss = row["best_val_loss_at_equal_epochs"]
        assert loss["n"] == 3 and loss["q1"] <= loss["median"] <= loss["q3"]
        assert row["held_out_mean_iou"]["n"] == 0  # no winner retrained in this folder
        assert len(row["curves"]["epochs"]["x"]) > 1 and len(row["curves"]["seconds"]["x"]) == study.GRID_POINTS


def test_an_unfinished_search_is_left_out(tmp_path):
    fake_study(tmp_path, seeds=2)
    trials = tmp_path / study.SEARCHES / search_name("random", 1) / "trials.json"
    record = read_json(trials)
    record["summary"]["finished"] = False
    trials.write_text(json.dumps(record))
    assert summarize(tmp_path)["tuners"]["random"]["seeds"] == [0]


def test_the_report_gains_which_search_to_use_when_the_run_holds_a_study(tmp_path):
    run_dir = make_fake_run(tmp_path / "run")
    assert "Which search to use" not in report.write_report(run_dir, run_dir / "docs").read_text()
    folder = fake_study(run_dir / "study")
    compare_searches().write_study(folder)
    text = report.write_report(run_dir, run_dir / "docs").read_text()
    section = text[text.index("## Which search to use") :]
    record = read_json(run_dir / "docs" / "run" / "study" / "study.json")
    loss = {t: row["best_val_loss_at_equal_epochs"] for t, row in record["tuners"].items()}
    assert verdict(loss, f"Best validation loss at {record['equal_epochs']} epochs") in section
    links = IMAGE_LINK.findall(section)
    assert len(links) == 2
    for link in links:
        assert (run_dir / "docs" / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# One trial of one epoch per search (R = 1), a small U-Net on a few of the quick profile's patches.
TINY = ["-p", "max_patches=24", "-p", "base_filters=4", "-p", "depth=2", "-p", "max_budget=1"]
TINY += ["-p", "epochs=1", "-p", "batch_size=8"]


@pytest.mark.slow  # 4 searches and 4 retrained winners: minutes on a 2-core CPU
def test_a_tiny_study_trains_and_leaves_its_files_and_the_report_section(tmp_path, capsys):
    out = tmp_path / "study"
    assert compare_searches().main(["--out", str(out), "--tuners", "hyperband,random", "--seeds", "2", *TINY]) == 0
    result = json.loads(capsys.readouterr().out.split("RESULT ", 1)[1])
    assert set(result["tuners"]) == {"hyperband", "random"}
    for name in (study.STUDY_FILE, *study.FIGURES.values()):
        assert (out / name).is_file(), name
    record = read_json(out / study.STUDY_FILE)
    for tuner, row in record["tuners"].items():
        assert row["seeds"] == [0, 1]
        for seed in (0, 1):
            assert (out / study.SEARCHES / search_name(tuner, seed) / "trials.json").is_file()
            iou = row["per_seed"][str(seed)]["held_out_mean_iou"]
            assert 0 <= iou <= 1
            assert (out / study.WINNERS / search_name(tuner, seed) / "model.keras").is_file()
    section = study.section_study(record)
    assert section.startswith("## Which search to use") and "| HyperBand | 2 |" in section
    assert "too few seeds to compare" in section  # 2 seeds: no verdict
    # run again: everything is reused, nothing trained
    assert compare_searches().main(["--out", str(out), "--tuners", "hyperband,random", "--seeds", "2", *TINY]) == 0
    assert read_json(out / study.STUDY_FILE)["tuners"] == record["tuners"]
