"""The searches on real training: each tuner × several seeds, their anytime curves and winners' held-out scores.

Runs every (tuner, seed) search on the in-process engine in its own folder of the study
folder, one after another, on one split; retrains each search's best configuration as the
pipeline retrains the tuned model and scores it on the held-out tiles' whole images; then
writes ``study.json`` and the anytime curves (``seglib.report.study`` describes the folder).
Everything is resumable: run the same command again after a kill and it continues, nothing
finished is trained again. The report's "Which search to use" section reads the study folder.

Prints one ``RESULT`` line: per tuner, the median best validation loss at equal epochs, its
interquartile range, and the winners' median held-out mean IoU.

    .venv/bin/python benchmarks/compare_searches.py --out runs/study            # quick, embedded data
    .venv/bin/python benchmarks/compare_searches.py --out runs/study --seeds 5 --tuners hyperband,random
    .venv/bin/python benchmarks/compare_searches.py --out runs/study-real --data "$DATA"
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from seglib import hpo, pipeline
from seglib.artifacts import write_json
from seglib.cli import parse_parameters
from seglib.report import figures
from seglib.report.study import FIGURES, SEARCHES, STUDY_FILE, WHOLE_IMAGE_MODE, WINNERS, search_name, summarize
from seglib.settings import PROFILES, TUNERS


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path, help="study folder (created, or continued)")
    parser.add_argument("--profile", default="quick", choices=sorted(PROFILES), help="settings profile (default quick)")
    parser.add_argument("--data", default=None, help="dataset folder (default: the embedded dataset)")
    parser.add_argument("--tuners", default=",".join(TUNERS), help=f"comma-separated (default {','.join(TUNERS)})")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per tuner: 0 .. N-1 (default 5)")
    parser.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="any other setting (repeatable)"
    )
    parser.add_argument("--no-winners", action="store_true", help="skip retraining and scoring the winners")
    args = parser.parse_args(argv)
    args.tuners = [t.strip() for t in args.tuners.split(",") if t.strip()]
    unknown = sorted(set(args.tuners) - set(TUNERS))
    if unknown:
        parser.error(f"--tuners: unknown {unknown}; expected some of {list(TUNERS)}")
    return args


def run_study(args, command: str | None = None) -> dict:
    """Seed by seed, each tuner's search and then its winner; ``study.json`` and the figures after each.

    Seeds outermost: a study stopped early (or killed) has about as many seeds for every tuner.
    """
    overrides = {"engine": "local", **parse_parameters(args.param)}
    run = pipeline.start_run(args.out, args.profile, args.data, overrides, command=command)
    pipeline.prepare_data(run)
    root = run.paths.root
    seeds = range(args.seeds)
    for seed in seeds:
        for tuner in args.tuners:
            folder = root / SEARCHES / search_name(tuner, seed)
            started = time.perf_counter()
            experiment = hpo.tune(
                folder,
                run.settings.replace(seed=seed),
                tuner,
                resume="auto",
                split_file=run.paths.split_file,
            )
            print(
                f"{folder.name}: {experiment.summary.trials} trials, {experiment.summary.epochs_trained} epochs, "
                f"best val loss {experiment.best.value} ({time.perf_counter() - started:.0f} s this time)",
                flush=True,
            )
            if not args.no_winners:
                score_winner(run, tuner, seed)
            write_study(root, args.tuners, seeds)  # a killed study still has the numbers of what it finished
    return write_study(root, args.tuners, seeds)


def score_winner(run, tuner: str, seed: int) -> None:
    """Retrain a search's best configuration as the tuned model is retrained; score the held-out whole images."""
    from seglib.artifacts import read_experiment

    best = read_experiment(run.paths.root / SEARCHES / search_name(tuner, seed)).best
    if not best.params:
        print(f"{tuner} seed {seed}: no successful trial, no winner to retrain", flush=True)
        return
    name = f"{WINNERS}/{search_name(tuner, seed)}"
    started = time.perf_counter()
    pipeline.train_and_record(run, name, best.params)
    whole = pipeline.segment_held_out(run, name, modes=(WHOLE_IMAGE_MODE,))
    iou = whole["modes"][WHOLE_IMAGE_MODE]["mean_iou"] if whole else None
    print(f"{name}: held-out mean IoU {iou} ({time.perf_counter() - started:.0f} s)", flush=True)


def write_study(root: Path, tuners=None, seeds=None) -> dict:
    """``study.json`` and the two anytime figures from what the study folder holds now (of ``tuners``, ``seeds``)."""
    study = summarize(root, tuners, seeds)
    stamp = study["stamp"] or {}
    label = (
        f"data: {stamp.get('data_label', '?')} · profile: {study['profile']} · "
        f"{stamp.get('backend', '?')} · {stamp.get('hardware', '?')}"
    )
    if study["tuners"]:
        for axis, name in FIGURES.items():
            figures.figure_anytime(study["tuners"], "seconds" if axis == "wall" else "epochs", root / name, label)
    write_json(root / STUDY_FILE, study)
    return study


def main(argv=None) -> int:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/compare_searches.py", *(sys.argv[1:] if argv is None else argv)])
    study = run_study(args, command)
    result = {
        tuner: {
            "seeds": len(row["seeds"]),
            "val_loss_at_equal_epochs": row["best_val_loss_at_equal_epochs"],
            "held_out_mean_iou": row["held_out_mean_iou"]["median"],
            "wall_seconds": row["wall_seconds"]["median"],
        }
        for tuner, row in study["tuners"].items()
    }
    print("RESULT " + json.dumps({"equal_epochs": study["equal_epochs"], "tuners": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
