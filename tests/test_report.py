"""seglib.report on a run folder whose artefacts are written here (seconds, no training).

The HyperBand trials come from seglib's own schedule state machine fed with made-up losses,
so the figures of brackets and rungs are drawn from a real schedule. The notebooks test
checks the same properties on a report from a real quick run.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from seglib import pipeline, report
from seglib.artifacts import (
    Best,
    ModelRecord,
    SearchSummary,
    TrialRow,
    write_experiment,
    write_json,
    write_model_record,
)
from seglib.hpo.asha import Asha
from seglib.hpo.bohb import BOHB
from seglib.hpo.hyperband import HyperBand, RandomSearch, brackets
from seglib.report.markdown import section_whole_images
from seglib.report.numbers import best_so_far, best_trial, fmt, fmt_seconds

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def fake_record(params: dict, epochs: int, loss0: float, rng: np.random.Generator) -> ModelRecord:
    def split_metrics(shift):
        iou = [float(v) for v in rng.uniform(0.1, 0.9, 6)]
        iou[5] = None  # a class absent from labels and predictions
        present = [v for v in iou if v is not None]
        return {
            "loss": loss0 + shift,
            "accuracy": 0.7 + shift,
            "precision": 0.81 + shift,
            "recall": 0.62 + shift,
            "jaccard": 0.5,
            "mean_iou": float(np.mean(present)),
            "per_class_iou": iou,
            "confusion": np.eye(6, dtype=int).tolist(),
        }

    recall = np.linspace(0, 1, 50)
    return ModelRecord(
        params=params,
        history={
            "loss": list(np.linspace(loss0 + 0.4, loss0, epochs)),
            "val_loss": list(np.linspace(loss0 + 0.5, loss0 + 0.05, epochs)),
        },
        train=split_metrics(-0.01),
        val=split_metrics(0.0),
        test=split_metrics(0.02),
        pr_curve={
            "precision": list(1 - 0.5 * recall**2),
            "recall": list(recall),
            "thresholds": list(recall),
            "average_precision": 0.77,
            "pixels": 1234,
        },
        epochs_trained=epochs,
        seconds=12.5,
        diverged=False,
        message="",
        best_val_loss=loss0,
        backend="tensorflow",
        loop="fit",
    )


def fake_samples(path: Path, rng: np.random.Generator, n: int = 10, size: int = 16) -> None:
    np.savez(
        path,
        indices=np.arange(n),
        images=rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        labels=rng.integers(0, 6, (n, size, size), dtype=np.uint8),
        predictions=rng.integers(0, 6, (n, size, size), dtype=np.uint8),
    )


def fake_experiment(folder: Path, search, tuner: str, seed: int, fail_one: bool = False) -> list[TrialRow]:
    """Drive a search's state machine with made-up losses; export it with the production writer."""
    rng = np.random.default_rng(seed)
    rows = []
    while (job := search.next_job()) is not None:
        epochs = job.budget - job.resume_from
        order = job.parameter_id + 1
        timing = {
            "epochs_trained": epochs,
            "seconds": 3.0 * epochs,
            "start_time": 1.7e9 + 30.0 * order,
            "end_time": 1.7e9 + 30.0 * order + 3.0 * epochs,
        }
        row = TrialRow(
            config_id=job.config_id,
            budget=job.budget,
            status="SUCCEEDED",
            params=search.params(job),
            parameter_id=job.parameter_id,
            bracket=job.s,
            rung=job.rung,
            resumed_from=job.resume_from,
            curve=[1.0] * epochs,
            **timing,
        )
        if fail_one and order == 2:
            search.fail(job.parameter_id, error="boom", epochs_trained=epochs)
            row.status, row.error = "FAILED", "boom"
        else:
            row.value = float(1.5 / job.budget**0.3 + rng.uniform(0, 0.2))
            search.report(job.parameter_id, value=row.value, epochs_trained=epochs)
        rows.append(row)
    best = min((r for r in rows if r.value is not None), key=lambda r: r.value)
    statuses = {s: sum(r.status == s for r in rows) for s in {r.status for r in rows}}
    summary = SearchSummary(
        tuner=tuner,
        engine="local",
        max_budget=search.state["max_budget"],
        eta=search.state["eta"] or 3,
        trials=len(rows),
        epochs_trained=sum(r.epochs_trained for r in rows),
        epochs_planned=69,
        statuses=statuses,
        finished=True,
        seed=seed,
    )
    write_experiment(
        folder,
        summary,
        rows,
        Best(best.params, best.value, best.config_id, best.budget, None, None, None, search.state["search_space"]),
    )
    return rows


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    return make_fake_run(tmp_path_factory.mktemp("run"))


def make_fake_run(out: Path, tuner: str = "hyperband") -> Path:
    """A run folder as notebooks 01-03 leave it, its main search ``tuner`` driven with made-up losses."""
    run = pipeline.start_run(out, "quick", None, {"max_budget": 9, "tuner": tuner})
    rng = np.random.default_rng(0)
    write_json(
        run.paths.data_summary, {"split": "tiles", "patches": 264, "counts": {"train": 159, "val": 45, "test": 60}}
    )
    for name, loss0 in (("baseline", 0.95), ("tuned", 0.81)):
        params = {"batch_size": 16, "learning_rate": 0.007, "activation": "relu"}
        write_model_record(run.paths.metrics_file(name), fake_record(params, 4, loss0, rng))
        fake_samples(run.paths.samples_file(name), rng)
    whole = {
        "modes": {
            m: {
                "per_class_iou": [0.5, 0.8, 0.4, 0.6, 0.7, None],
                "mean_iou": 0.6 + k / 100,
                "seconds": 1.0 + k,
                "confusion": np.eye(6, dtype=int).tolist(),
                "images": 3,
            }
            for k, m in enumerate(("tiles", "blend", "blend+tta"))
        },
        "images": ["Tile 6/images/a.jpg"] * 3,
        "tiles": ["Tile 6"],
        "shown": ["Tile 6/images/a.jpg"],
    }
    write_json(run.paths.whole_images("tuned"), whole)
    np.savez(
        run.paths.whole_images_samples("tuned"),
        **{f"{part}_0": rng.integers(0, 255, (20, 30, 3), dtype=np.uint8) for part in ("image", "mask", "prediction")},
    )
    main = {"hyperband": HyperBand(9, 3, seed=1), "asha": Asha(9, 3, seed=1), "bohb": BOHB(9, 3, seed=1)}[tuner]
    hpo_rows = fake_experiment(run.paths.search(tuner), main, tuner, seed=1, fail_one=True)
    fake_experiment(
        run.paths.search("random"), RandomSearch(sum(r.epochs_trained for r in hpo_rows), 9, seed=2), "random", seed=2
    )
    return out


@pytest.fixture(scope="module")
def written(fake_run) -> Path:
    return report.write_report(fake_run, fake_run / "docs")


def test_every_referenced_image_exists_and_is_a_png(written):
    links = IMAGE_LINK.findall(written.read_text())
    assert len(links) >= 8
    for link in links:
        path = written.parent / link
        assert path.is_file(), f"{written} references {link}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_has_every_seed_section_and_the_new_ones(written):
    text = written.read_text()
    for heading in (
        "# Explanation of HyperBand HPO",
        "## Successive halving",
        "## Search Space",
        "## Initial parameters",
        "## Experiment settings",
        "## Best Hyperparameters",
        "## 10 Segmented Images from the Validation Set",
        "## Training and Validation Loss vs. Epochs",
        "## Precision and Recall Curve",
        "## Precision and Recall Values",
        "## Per-class IoU on the held-out test set",
        "## HyperBand against random search at equal epochs",
        "## Compared with the seed report",
        "## Compute spent",
        "## Stamp",
        "## Whole held-out images",
    ):
        assert heading in text, f"missing section {heading!r}"
    assert "TODO" not in text


def test_numbers_in_the_text_come_from_the_metrics_files(fake_run, written):
    text = written.read_text()
    tuned = json.loads((fake_run / "tuned" / "metrics.json").read_text())
    baseline = json.loads((fake_run / "baseline" / "metrics.json").read_text())
    assert f"Validation Precision:\t{fmt(tuned['val']['precision'])}" in text
    assert f"Training Recall:\t{fmt(tuned['train']['recall'])}" in text
    assert f"**{fmt(baseline['test']['mean_iou'])}**" in text
    assert f"**{fmt(tuned['test']['mean_iou'])}**" in text
    best = json.loads((fake_run / "hpo" / "best.json").read_text())
    assert f"validation loss of **{fmt(best['value'])}**" in text
    for key, value in best["params"].items():
        assert f"{key!r}: {value!r}" in text


def test_schedule_and_trial_counts_match_the_schedule_and_export(fake_run, written):
    text = written.read_text()
    trials = json.loads((fake_run / "hpo" / "trials.json").read_text())["trials"]
    assert f"**{len(trials)} trials**" in text
    epochs = sum(t["epochs_trained"] for t in trials)
    assert f"**{epochs:,} epochs** in all" in text
    for bracket in brackets(9, 3):
        row = " → ".join(f"{r.n_configs}×{r.budget}" for r in bracket.rungs)
        assert f"| {bracket.s} | {row} | {bracket.n_trials} |" in text


def test_stamp_names_data_profile_backend_and_hardware(fake_run, written):
    run = pipeline.open_run(fake_run)
    text = written.read_text()
    for value in (run.stamp["data_label"], run.profile_text, run.stamp["backend"], run.stamp["hardware"]):
        assert value in text
    assert "max_budget=9" in run.profile_text
    assert "-p max_budget=9" in text  # no `seglib run` command recorded: the report says how to repeat it


def test_missing_artefact_names_the_notebook_to_run(fake_run, tmp_path):
    (tmp_path / "run.json").write_text((fake_run / "run.json").read_text())
    with pytest.raises(FileNotFoundError, match="01_data"):
        report.write_report(tmp_path)


def test_best_so_far_skips_trials_without_a_value():
    failed = TrialRow(config_id="a", budget=3, status="FAILED", params={})
    assert best_trial([failed]) is None
    rows = [
        TrialRow(
            config_id=f"c{i}",
            budget=2,
            status="SUCCEEDED" if v is not None else "DIVERGED",
            params={},
            value=v,
            epochs_trained=2,
            parameter_id=i,
        )
        for i, v in enumerate([0.9, None, 0.5, 0.7])
    ]
    assert best_so_far(rows) == ([2, 4, 6, 8], [0.9, 0.9, 0.5, 0.5])


def test_record_model_writes_metrics_and_ten_samples(tmp_path):
    from seglib.artifacts import RunPaths, read_model_record
    from seglib.data import Arrays
    from seglib.evaluate import record_model
    from seglib.model import build_unet
    from seglib.train import TrainResult

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, (12, 32, 32), dtype=np.uint8)
    x = images.astype("float32") / 255
    arrays = Arrays(x[:6], labels[:6], x[6:], labels[6:], x[:2], labels[:2], images[6:])
    model = build_unet((32, 32, 3), base_filters=4, depth=2, seed=0)
    result = TrainResult(
        model, {"loss": [1.0], "val_loss": [1.1]}, False, 1, 0, 1.0, metadata={"backend": "tensorflow", "loop": "fit"}
    )
    paths = RunPaths.of(tmp_path)
    record = record_model(paths, "baseline", result, arrays, {"batch_size": 2})
    saved = read_model_record(paths.metrics_file("baseline"), "test")
    assert saved.val["precision"] == pytest.approx(record.val["precision"])
    assert len(saved.test["per_class_iou"]) == 6
    assert paths.model_file("baseline").is_file()
    samples = np.load(paths.samples_file("baseline"))
    assert samples["images"].shape == (6, 32, 32, 3)  # only 6 validation patches: all of them
    assert samples["predictions"].shape == (6, 32, 32)


def test_sources_are_copied_beside_the_report_without_this_machines_paths(fake_run, written):
    for name in ("run.json", "tuned/metrics.json", "hpo/trials.json", "hpo/best.json"):
        copied = json.loads((written.parent / report.SOURCES / name).read_text())
        original = json.loads((fake_run / name).read_text())
        assert copied == report.portable(original, fake_run.resolve())
    assert str(fake_run.resolve()) not in (written.parent / report.SOURCES / "hpo" / "trials.json").read_text()


def test_paths_in_copied_records_become_machine_independent(tmp_path):
    run_dir = tmp_path / "run"
    record = {
        "model": str(run_dir / "hpo" / "trials" / "c0001-b002" / "model.keras"),
        "settings": {"data": "/data/mine/Semantic segmentation dataset", "epochs": 4},
        "command": "seglib run --out runs/x --data '../shared/data/Semantic segmentation dataset' -p epochs=4",
    }
    assert report.portable(record, run_dir) == {
        "model": "hpo/trials/c0001-b002/model.keras",
        "settings": {"data": "Semantic segmentation dataset", "epochs": 4},
        "command": "seglib run --out runs/x --data 'PATH/Semantic segmentation dataset' -p epochs=4",
    }


COMMITTED = Path(__file__).resolve().parents[1] / "docs" / report.REPORT_NAME


@pytest.mark.skipif(not COMMITTED.is_file(), reason="no committed report in docs/")
def test_committed_report_images_exist_and_numbers_match_its_run_files():
    text = COMMITTED.read_text()
    for link in IMAGE_LINK.findall(text):
        assert (COMMITTED.parent / link).is_file(), f"docs/{link} is referenced but missing"
    sources = COMMITTED.parent / report.SOURCES
    tuned = json.loads((sources / "tuned" / "metrics.json").read_text())
    baseline = json.loads((sources / "baseline" / "metrics.json").read_text())
    best = json.loads((sources / "hpo" / "best.json").read_text())
    run = json.loads((sources / "run.json").read_text())
    assert f"Validation Precision:\t{fmt(tuned['val']['precision'])}" in text
    assert f"Training Recall:\t{fmt(tuned['train']['recall'])}" in text
    assert f"**{fmt(baseline['test']['mean_iou'])}**" in text and f"**{fmt(tuned['test']['mean_iou'])}**" in text
    assert f"validation loss of **{fmt(best['value'])}**" in text
    assert run["stamp"]["hardware"] in text and run["stamp"]["data_label"] in text


def test_equal_budget_table_shows_each_tuners_wall_time_from_trial_start_and_end(fake_run, written):
    """Wall time = last trial end - first trial start, both in Unix seconds as the export writes them."""
    rows = [
        line for line in written.read_text().splitlines() if line.startswith(("| HyperBand |", "| random search |"))
    ]
    assert len(rows) == 2, rows
    for row, folder in zip(rows, ("hpo", "random")):
        trials = json.loads((fake_run / folder / "trials.json").read_text())["trials"]
        wall = max(t["end_time"] for t in trials) - min(t["start_time"] for t in trials)
        assert 100 < wall < 10_000  # seconds, not milliseconds
        assert f"| {fmt_seconds(wall)} |" in row, (row, fmt_seconds(wall))


def test_random_search_row_spent_the_epochs_hyperband_spent(fake_run, written):
    """Equal epochs, and failed trials counted in their tuner's row."""
    text = written.read_text()
    spent = [
        json.loads((fake_run / f / "trials.json").read_text())["summary"]["epochs_trained"] for f in ("hpo", "random")
    ]
    assert spent[0] == spent[1]
    hyperband_row = next(line for line in text.splitlines() if line.startswith("| HyperBand |"))
    assert "1 failed" in hyperband_row and f"| {spent[0]:,} |" in hyperband_row


def test_seed_comparison_table_names_the_seeds_figures(written):
    text = written.read_text()
    assert "| tuned model: validation precision / recall | 0.8623 / 0.8404 |" in text
    assert "| best validation loss of the search | 0.9070 |" in text


def test_report_reads_the_originals_settings_from_the_settings_module(written):
    from seglib.settings import original

    o = original()
    assert f"R = {o.max_budget}, η = {o.eta}" in written.read_text()


def test_whole_image_scores_come_from_their_record(fake_run, written):
    text = written.read_text()
    whole = json.loads((fake_run / "tuned" / "whole_images.json").read_text())
    means = [fmt(whole["modes"][m]["mean_iou"]) for m in ("tiles", "blend", "blend+tta")]
    assert f"| **mean IoU** | **{means[0]}** | **{means[1]}** | **{means[2]}** |" in text
    assert "(Tile 6: 3 images)" in text and "images/whole_images.png" in text
    row = f"| tuned model: held-out whole images, mean IoU (blended) | not reported | {means[1]} (3 images of Tile 6) |"
    assert row in text, "the comparison with the seed names the held-out whole-image score"
    assert (written.parent / "run" / "tuned" / "whole_images.json").is_file()


@pytest.mark.parametrize(
    "tta, augmented, said",
    [
        (0.50, False, "matches or beats them (0.5000)"),
        (0.30, False, "this model trained without flips or rotations"),
        (0.30, True, "although the model trained on all eight views"),
    ],
)
def test_the_whole_image_comment_follows_the_scores_and_the_training(tta, augmented, said):
    mode = {"per_class_iou": [0.4] * 6, "seconds": 1.0}
    modes = {
        "tiles": {**mode, "mean_iou": 0.35},
        "blend": {**mode, "mean_iou": 0.40},
        "blend+tta": {**mode, "mean_iou": tta},
    }
    whole = {"modes": modes, "tiles": ["Tile 6"], "images": ["a.jpg"]}
    text = section_whole_images(whole, {"whole_images": Path("images/whole_images.png")}, augmented=augmented)
    assert "Blended windows match or beat non-overlapping ones (mean IoU 0.4000 against 0.3500)." in text
    assert said in text
    assert ("never saw" in text) == (tta < 0.40 and not augmented)


def test_whole_images_scored_without_the_8_fold_average_get_two_columns_and_say_why():
    mode = {"per_class_iou": [0.4] * 6, "seconds": 1.0}
    whole = {
        "modes": {"tiles": {**mode, "mean_iou": 0.35}, "blend": {**mode, "mean_iou": 0.40}},
        "tiles": ["Tile 6"],
        "images": ["a.jpg"],
    }
    text = section_whole_images(whole, {}, augmented=True)
    assert "| class | tiles | blend |\n" in text and "| **mean IoU** | **0.3500** | **0.4000** |" in text
    assert "two ways" in text and "(`--tta`)" not in text
    assert "not scored (the setting `whole_image_tta` is off" in text


@pytest.mark.parametrize("tuner, title", [("asha", "ASHA"), ("bohb", "BOHB")])
def test_a_run_whose_main_search_is_asha_or_bohb_gets_its_report(tmp_path, tuner, title):
    """The report reads the main search from its own folder and names it where it speaks of it."""
    run_dir = make_fake_run(tmp_path / "run", tuner)
    text = report.write_report(run_dir, run_dir / "docs").read_text()
    assert f"## {title} against random search at equal epochs" in text
    assert f"{title}'s best trial reached a validation loss" in text and f"seglib's {title}" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {title} |"))
    spent = json.loads((run_dir / tuner / "trials.json").read_text())["summary"]["epochs_trained"]
    assert "1 failed" in row and f"| {spent:,} |" in row
    assert "# Explanation of HyperBand HPO" in text  # the rungs and brackets both build on
    sources = run_dir / "docs" / report.SOURCES
    copied = json.loads((sources / tuner / "best.json").read_text())
    assert copied == report.portable(json.loads((run_dir / tuner / "best.json").read_text()), run_dir.resolve())
    assert not (sources / "hpo").exists()


@pytest.mark.parametrize(
    "data, shown",
    [
        ("/home/alice/aerial/Semantic segmentation dataset", '--data "$DATA"'),
        ("--data=../shared/aerial", '--data "$DATA"'),
        ("kaggle", "--data kaggle"),
    ],
)
def test_the_rebuild_command_shows_the_data_folder_as_a_placeholder(tmp_path, data, shown):
    """A machine's own path means nothing to a reader: the command repeats with "$DATA", said what it is."""
    from seglib.artifacts import Run, RunPaths
    from seglib.report.markdown import _rebuild
    from seglib.settings import profile

    words = [
        "seglib",
        "run",
        "--out",
        "runs/r",
        *([data] if data.startswith("--") else ["--data", data]),
        "-p",
        "eta=2",
    ]
    stamp = {"data_label": "Semantic segmentation dataset (aerial)", "command": shlex.join(words)}
    text = _rebuild(Run(RunPaths.of(tmp_path), "quick", {"eta": 2}, profile("quick", eta=2), stamp))
    assert f"seglib run --out runs/r {shown} -p eta=2\n" in text, text
    assert "/home/" not in text and "../shared" not in text
    assert ("`DATA` the dataset's folder" in text) == (data != "kaggle")


def test_the_notebooks_views_print_their_numbers_outside_a_notebook(fake_run, capsys):
    """seglib.report.display, as notebooks 01-04 call it; outside IPython every view prints."""
    from seglib.artifacts import read_experiment, read_model_record
    from seglib.report import display

    run = pipeline.open_run(fake_run)
    display.schedule_table(run.settings)
    display.metrics_table(read_model_record(run.paths.metrics_file("tuned"), "test"))
    summary = display.experiment_summary(read_experiment(run.paths.search("hyperband")))
    show = display.live_progress()
    show({})
    out = capsys.readouterr().out
    assert out.startswith(f"HyperBand R = {run.settings.max_budget}, η = {run.settings.eta}\n"), out
    assert "one pass:" in out and "\nval " in out and out.rstrip().endswith("starting..."), out
    assert "trials (" in summary and "best validation loss" in summary, summary


def test_the_report_says_when_the_models_trained_with_another_recipe_than_the_originals():
    from seglib.report.markdown import recipe_note
    from seglib.settings import original, profile

    assert recipe_note(original()) == "" and recipe_note(profile("quick")) == ""
    note = recipe_note(profile("best-cpu"))
    assert "not the original's" in note
    assert "learning rate 0.001, the 8 symmetries and colour jitter, a constant learning rate" in note
    assert "the best epoch's weights" in note
    cosine = recipe_note(profile("best-cpu", lr_schedule="cosine", warmup_epochs=1, augment="d4", keep_epoch="last"))
    assert "the 8 symmetries of a square, a cosine schedule with 1 warm-up epoch, the last epoch's weights" in cosine
