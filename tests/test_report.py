"""seglib.report on a run folder whose artefacts are written here (seconds, no training).

The HyperBand trials come from seglib's own schedule state machine fed with made-up losses,
so the figures of brackets and rungs are drawn from a real schedule. The notebooks test
checks the same properties on a report from a real quick run.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from seglib import pipeline, report
from seglib.hpo.hyperband import HyperBand, brackets

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+)\)")


def fake_record(params: dict, epochs: int, loss0: float, rng: np.random.Generator) -> dict:
    def split_metrics(shift):
        iou = [float(v) for v in rng.uniform(0.1, 0.9, 6)]
        iou[5] = None  # a class absent from labels and predictions
        present = [v for v in iou if v is not None]
        return {
            "loss": loss0 + shift, "accuracy": 0.7 + shift, "precision": 0.81 + shift, "recall": 0.62 + shift,
            "jaccard": 0.5, "mean_iou": float(np.mean(present)), "per_class_iou": iou,
            "confusion": np.eye(6, dtype=int).tolist(),
        }

    recall = np.linspace(0, 1, 50)
    return {
        "params": params,
        "history": {"loss": list(np.linspace(loss0 + 0.4, loss0, epochs)), "val_loss": list(np.linspace(loss0 + 0.5, loss0 + 0.05, epochs))},
        "train": split_metrics(-0.01), "val": split_metrics(0.0), "test": split_metrics(0.02),
        "pr_curve": {"precision": list(1 - 0.5 * recall**2), "recall": list(recall), "thresholds": list(recall), "average_precision": 0.77, "pixels": 1234},
        "epochs_trained": epochs, "seconds": 12.5, "diverged": False,
    }


def fake_samples(folder: Path, rng: np.random.Generator, n: int = 10, size: int = 16) -> None:
    np.savez(
        folder / report.SAMPLES_FILE,
        indices=np.arange(n),
        images=rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8),
        labels=rng.integers(0, 6, (n, size, size), dtype=np.uint8),
        predictions=rng.integers(0, 6, (n, size, size), dtype=np.uint8),
    )


def fake_experiment(folder: Path, max_budget: int, eta: int, seed: int, fail_one: bool = False) -> list[dict]:
    """Drive seglib's HyperBand state machine with made-up losses and export it like a run."""
    hb = HyperBand(max_budget=max_budget, eta=eta, seed=seed)
    rng = np.random.default_rng(seed)
    order = 0
    while (job := hb.next_job()) is not None:
        order += 1
        epochs = job["budget"] - job["resume_from"]
        extra = {"epochs_trained": epochs, "seconds": 3.0 * epochs, "sequence": order,
                 "start_time": 1.7e9 + 10.0 * order, "end_time": 1.7e9 + 10.0 * order + 3.0 * epochs}
        if fail_one and order == 2:
            hb.fail(job["parameter_id"], error="diverged", **extra)
        else:
            hb.report(job["parameter_id"], value=float(1.5 / job["budget"] ** 0.3 + rng.uniform(0, 0.2)), **extra)
    trials = [{**job, "params": hb.state["configs"][job["config_id"]]["params"]} for job in hb.jobs]
    best = hb.best()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trials.json").write_text(json.dumps(trials))
    (folder / "best.json").write_text(json.dumps({"params": hb.state["configs"][best["config_id"]]["params"], "value": best["value"]}))
    return trials


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run")
    run = pipeline.start_run(out, "quick", None, {"max_budget": 9})
    rng = np.random.default_rng(0)
    pipeline.write_json(out / "data" / "summary.json", {"split": "tiles", "patches": 264, "counts": {"train": 159, "val": 45, "test": 60}})
    for name, loss0 in (("baseline", 0.95), ("tuned", 0.81)):
        folder = run.folder(name)
        params = {"batch_size": 16, "learning_rate": 0.007, "activation_type": "relu"}
        pipeline.write_json(folder / report.METRICS_FILE, fake_record(params, 4, loss0, rng))
        fake_samples(folder, rng)
    fake_experiment(out / "hpo", 9, 3, seed=1, fail_one=True)
    fake_experiment(out / "random", 9, 9, seed=2)
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
        "# Explanation of HyperBand HPO", "## Successive halving", "## Search Space", "## Initial parameters",
        "## Experiment settings", "## Best Hyperparameters", "## 10 Segmented Images from the Validation Set",
        "## Training and Validation Loss vs. Epochs", "## Precision and Recall Curve", "## Precision and Recall Values",
        "## Per-class IoU on the held-out test set", "## HyperBand against random search at equal budget",
        "## Compute spent", "## Stamp",
    ):
        assert heading in text, f"missing section {heading!r}"
    assert "TODO" not in text


def test_numbers_in_the_text_come_from_the_metrics_files(fake_run, written):
    text = written.read_text()
    tuned = json.loads((fake_run / "tuned" / "metrics.json").read_text())
    baseline = json.loads((fake_run / "baseline" / "metrics.json").read_text())
    assert f"Validation Precision:\t{report.fmt(tuned['val']['precision'])}" in text
    assert f"Training Recall:\t{report.fmt(tuned['train']['recall'])}" in text
    assert f"**{report.fmt(baseline['test']['mean_iou'])}**" in text
    assert f"**{report.fmt(tuned['test']['mean_iou'])}**" in text
    best = json.loads((fake_run / "hpo" / "best.json").read_text())
    assert f"validation loss of **{report.fmt(best['value'])}**" in text
    for key, value in best["params"].items():
        assert f"{key!r}: {value!r}" in text


def test_schedule_and_trial_counts_match_the_schedule_and_export(fake_run, written):
    text = written.read_text()
    trials = json.loads((fake_run / "hpo" / "trials.json").read_text())
    assert f"**{len(trials)} trials**" in text
    epochs = sum(t["epochs_trained"] for t in trials)
    assert f"**{epochs:,} epochs** in all" in text
    for bracket in brackets(9, 3):
        row = " → ".join(f"{r.n_configs}×{r.budget}" for r in bracket.rungs)
        assert f"| {bracket.s} | {row} | {bracket.n_trials} |" in text


def test_stamp_names_data_profile_backend_and_hardware(fake_run, written):
    run = pipeline.open_run(fake_run)
    text = written.read_text()
    for value in (run.stamp["data_label"], run.stamp["profile"], run.stamp["backend"], run.stamp["hardware"]):
        assert value in text
    assert "max_budget=9" in run.stamp["profile"]
    assert "-p max_budget=9" in text


def test_missing_artefact_names_the_notebook_to_run(fake_run, tmp_path):
    (tmp_path / "run.json").write_text((fake_run / "run.json").read_text())
    with pytest.raises(FileNotFoundError, match="01_data"):
        report.write_report(tmp_path)


def test_trial_rows_tolerate_failed_and_nan_results():
    row = report.trial_row({"trial_id": "a", "status": "FAILED", "value": float("nan"), "budget": 3})
    assert row["value"] is None and row["budget"] == 3
    assert report.best_trial([row]) is None
    rows = [report.trial_row({"id": i, "value": v, "epochs_trained": 2, "sequence": i}) for i, v in enumerate([0.9, math.nan, 0.5, 0.7])]
    assert report.best_so_far(rows) == ([2, 4, 6, 8], [0.9, 0.9, 0.5, 0.5])


def test_record_model_writes_metrics_and_ten_samples(tmp_path):
    keras = pytest.importorskip("keras")
    from seglib.model import build_unet

    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (12, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 6, (12, 32, 32), dtype=np.uint8)
    x = images.astype("float32") / 255
    arrays = pipeline.Arrays(x[:6], labels[:6], x[6:], labels[6:], x[:2], labels[:2], images[6:])
    model = build_unet((32, 32, 3), base_filters=4, depth=2, seed=0)
    record = report.record_model(tmp_path, model, {"loss": [1.0], "val_loss": [1.1]}, arrays, {"batch_size": 2})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["val"]["precision"] == pytest.approx(record["val"]["precision"])
    assert len(saved["test"]["per_class_iou"]) == 6
    samples = np.load(tmp_path / "samples.npz")
    assert samples["images"].shape == (6, 32, 32, 3)  # only 6 validation patches: all of them
    assert samples["predictions"].shape == (6, 32, 32)


def test_sources_are_copied_beside_the_report(fake_run, written):
    for name in ("run.json", "tuned/metrics.json", "hpo/trials.json", "hpo/best.json"):
        assert (written.parent / report.SOURCES / name).read_bytes() == (fake_run / name).read_bytes()


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
    assert f"Validation Precision:\t{report.fmt(tuned['val']['precision'])}" in text
    assert f"Training Recall:\t{report.fmt(tuned['train']['recall'])}" in text
    assert f"**{report.fmt(baseline['test']['mean_iou'])}**" in text and f"**{report.fmt(tuned['test']['mean_iou'])}**" in text
    assert f"validation loss of **{report.fmt(best['value'])}**" in text
    assert run["stamp"]["hardware"] in text and run["stamp"]["data_label"] in text


def test_equal_budget_table_shows_each_tuners_wall_time_from_trial_start_and_end(fake_run, written):
    """Wall time = last trial end - first trial start, both in Unix seconds as the export writes them."""
    rows = [line for line in written.read_text().splitlines() if line.startswith(("| HyperBand |", "| random search |"))]
    assert len(rows) == 2, rows
    for row, folder in zip(rows, ("hpo", "random")):
        trials = json.loads((fake_run / folder / "trials.json").read_text())
        wall = max(t["end_time"] for t in trials) - min(t["start_time"] for t in trials)
        assert 100 < wall < 10_000  # seconds, not milliseconds
        assert f"| {report.fmt_seconds(wall)} |" in row, (row, report.fmt_seconds(wall))
