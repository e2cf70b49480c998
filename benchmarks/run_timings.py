"""Seconds of every stage of a run folder, as one JSON object (what gpu_full_run.sh brings back).

    .venv/bin/python benchmarks/run_timings.py RUN_DIR

Notebooks' wall seconds come from ``timings.json`` (written by ``seglib run``); the stages'
from the run's records: the baseline's and the tuned model's training, and each search's wall
time (first trial's start to last trial's end), trials, epochs and status counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from seglib.artifacts import RunPaths, read_experiment, read_json_or, read_model_record
from seglib.report.numbers import spent, wall_seconds


def timings(run_dir) -> dict:
    paths = RunPaths.of(run_dir)
    result = {"run": str(paths.root), **read_json_or(paths.root / "timings.json", {})}
    for name in ("baseline", "tuned"):
        if paths.metrics_file(name).is_file():
            record = read_model_record(paths.metrics_file(name), name)
            result[name] = {
                "seconds": round(record.seconds, 1),
                "epochs": record.epochs_trained,
                "val_loss": record.val["loss"],
                "val_precision": record.val["precision"],
                "val_recall": record.val["recall"],
                "test_mean_iou": (record.test or {}).get("mean_iou"),
            }
    for tuner in ("hyperband", "random"):
        folder = paths.search(tuner)
        if (folder / "trials.json").is_file():
            experiment = read_experiment(folder)
            used = spent(experiment.trials)
            result[tuner] = {
                "wall_seconds": round(wall_seconds(experiment.trials) or 0.0, 1),
                "trial_seconds": round(used["seconds"], 1),
                "trials": used["trials"],
                "epochs": used["epochs"],
                "statuses": used["statuses"],
                "finished": experiment.summary.finished,
                "best_value": experiment.best.value,
            }
    return result


if __name__ == "__main__":
    print(json.dumps(timings(Path(sys.argv[1])), indent=1))
