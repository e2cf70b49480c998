"""A study of the searches on real training: several seeds per tuner, summed up and put in words.

A study folder (``benchmarks/compare_searches.py``)::

    run.json, data/               the study's settings and its one split (as a run folder's)
    searches/<tuner>-seed<k>/     one search each (``seglib.hpo.tune``; resumable)
    winners/<tuner>-seed<k>/      that search's best configuration retrained and scored on the
                                  held-out tiles' whole images (``seglib.pipeline``)
    study.json                    per tuner: spreads over seeds (:func:`summarize`)
    anytime_epochs.png, anytime_wall.png

Every spread is a median with its interquartile range over the seeds; :func:`verdict` says
only what those ranges support.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from seglib.artifacts import Experiment, TrialRow, read_experiment, read_json, read_json_or
from seglib.hpo.hyperband import Search
from seglib.report.markdown import image
from seglib.report.numbers import fmt, fmt_seconds, wall_seconds

STUDY_FILE = "study.json"
SEARCHES = "searches"
WINNERS = "winners"
FIGURES = {"epochs": "anytime_epochs.png", "wall": "anytime_wall.png"}
WHOLE_IMAGE_MODE = "blend"  # the held-out score the study compares: blended windows, as seglib predict's default
GRID_POINTS = 80  # points of a wall-time anytime curve (epochs: every epoch)
MIN_SEEDS = 3  # fewer results than this per tuner: their interquartile range says nothing, no verdict
FOLDER = re.compile(r"^(?P<tuner>[a-z]+)-seed(?P<seed>\d+)$")


def search_name(tuner: str, seed: int) -> str:
    """The folder name of one (tuner, seed) search, under ``searches/`` and ``winners/``."""
    return f"{tuner}-seed{seed}"


def spread(values) -> dict:
    """Median, quartiles and count of ``values`` (finite ones); all None when there is none."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return {"median": None, "q1": None, "q3": None, "n": 0}
    q1, median, q3 = np.percentile(finite, [25, 50, 75])
    return {"median": float(median), "q1": float(q1), "q3": float(q3), "n": len(finite)}


# ---------------------------------------------------------------------------------------------
# Anytime curves: the best validation loss so far against cumulative epochs or wall time


def finished_order(trials: list[TrialRow]) -> list[TrialRow]:
    """Trials that ended, in the order they ended (the order their results became known)."""
    done = [t for t in trials if t.end_time is not None]
    return sorted(done, key=lambda t: (t.end_time, t.parameter_id or 0))


def anytime(trials: list[TrialRow]) -> dict:
    """Steps of the incumbent: after each finished trial, cumulative epochs, seconds since the
    search's first start, and the best validation loss so far (None before the first success)."""
    ordered = finished_order(trials)
    start = min((t.start_time for t in ordered if t.start_time is not None), default=None)
    epochs, seconds, best = [], [], []
    total, incumbent = 0, math.inf
    for t in ordered:
        total += t.epochs_trained
        if t.value is not None and math.isfinite(t.value):
            incumbent = min(incumbent, t.value)
        epochs.append(total)
        seconds.append(t.end_time - start if start is not None else None)
        best.append(incumbent if math.isfinite(incumbent) else None)
    return {"epochs": epochs, "seconds": seconds, "best": best}


def best_at(steps: dict, axis: str, x: float) -> float | None:
    """The incumbent's loss once ``x`` epochs (or seconds) were spent: the last step at or before ``x``."""
    value = None
    for at, best in zip(steps[axis], steps["best"]):
        if at is None or at > x:
            break
        value = best
    return value


def band(curves: list[dict], axis: str, points: int = GRID_POINTS) -> dict:
    """Median and quartiles over seeds of the incumbent's loss on a grid of ``axis``, where every seed has one."""
    starts, ends = [], []
    for steps in curves:
        known = [at for at, best in zip(steps[axis], steps["best"]) if best is not None and at is not None]
        if not known:
            return {"x": [], "median": [], "q1": [], "q3": []}
        starts.append(known[0])
        ends.append(steps[axis][-1])
    low, high = max(starts), min(ends)
    if high < low:
        return {"x": [], "median": [], "q1": [], "q3": []}
    grid = np.linspace(low, high, points) if axis == "seconds" else np.arange(low, high + 1)
    rows = {"x": [], "median": [], "q1": [], "q3": []}
    for x in grid:
        s = spread([best_at(steps, axis, float(x)) for steps in curves])
        rows["x"].append(float(x))
        for key in ("median", "q1", "q3"):
            rows[key].append(s[key])
    return rows


# ---------------------------------------------------------------------------------------------
# The study's numbers


def study_searches(study_dir, tuners=None, seeds=None) -> dict[str, dict[int, Experiment]]:
    """The finished searches of a study folder, by tuner then seed (unfinished ones are left out);
    only ``tuners`` and ``seeds`` when given."""
    found: dict[str, dict[int, Experiment]] = {}
    root = Path(study_dir) / SEARCHES
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        match = FOLDER.match(folder.name)
        if not match or not (folder / "trials.json").is_file():
            continue
        if (tuners is not None and match["tuner"] not in tuners) or (
            seeds is not None and int(match["seed"]) not in seeds
        ):
            continue
        experiment = read_experiment(folder, "benchmarks/compare_searches.py")
        if experiment.summary.finished:
            found.setdefault(match["tuner"], {})[int(match["seed"])] = experiment
    return found


def summarize(study_dir, tuners=None, seeds=None) -> dict:
    """``study.json``'s content: per tuner, the spreads over seeds the report words.

    ``equal_epochs`` is the fewest epochs any search of the study spent in all, and each
    search's best validation loss is read at that point of its anytime curve, so tuners are
    compared at the same training spent. Held-out scores come from ``winners/`` where the
    winner was retrained and scored (``whole_images.json``, mode :data:`WHOLE_IMAGE_MODE`).
    """
    study_dir = Path(study_dir)
    searches = study_searches(study_dir, tuners, seeds)
    curves = {tuner: {seed: anytime(e.trials) for seed, e in runs.items()} for tuner, runs in searches.items()}
    totals = [steps["epochs"][-1] for runs in curves.values() for steps in runs.values() if steps["epochs"]]
    equal = min(totals) if totals else None
    tuners = {}
    for tuner, runs in searches.items():
        per_seed = {}
        for seed, experiment in sorted(runs.items()):
            steps = curves[tuner][seed]
            whole = read_json_or(study_dir / WINNERS / search_name(tuner, seed) / "whole_images.json", None)
            per_seed[str(seed)] = {
                "best_val_loss": experiment.best.value,
                "best_val_loss_at_equal_epochs": best_at(steps, "epochs", equal) if equal is not None else None,
                "epochs": experiment.summary.epochs_trained,
                "trials": experiment.summary.trials,
                "wall_seconds": wall_seconds(experiment.trials),
                "trial_seconds": sum(t.seconds for t in experiment.trials),
                "params": experiment.best.params,
                "held_out_mean_iou": whole["modes"][WHOLE_IMAGE_MODE]["mean_iou"] if whole else None,
            }
        rows = per_seed.values()
        tuners[tuner] = {
            "title": Search.registry[tuner].title,
            "seeds": sorted(runs),
            "best_val_loss_at_equal_epochs": spread(r["best_val_loss_at_equal_epochs"] for r in rows),
            "wall_seconds": spread(r["wall_seconds"] for r in rows),
            "epochs": spread(r["epochs"] for r in rows),
            "held_out_mean_iou": spread(r["held_out_mean_iou"] for r in rows),
            "per_seed": per_seed,
            "curves": {"epochs": band(list(curves[tuner].values()), "epochs")},
        }
        tuners[tuner]["curves"]["seconds"] = band(list(curves[tuner].values()), "seconds")
    run = read_json_or(study_dir / "run.json", {})
    return {
        "profile": run.get("profile"),
        "overrides": run.get("overrides"),
        # without the command line: a continued study ran several, the first is not the study's
        "stamp": {k: v for k, v in run.get("stamp", {}).items() if k != "command"},
        "equal_epochs": equal,
        "held_out_mode": WHOLE_IMAGE_MODE,
        "tuners": tuners,
    }


# ---------------------------------------------------------------------------------------------
# Words


def separated(a: dict, b: dict, lower_is_better: bool = True) -> bool:
    """Whether spread ``a`` is better than ``b`` beyond both interquartile ranges."""
    if a["median"] is None or b["median"] is None:
        return False
    return a["q3"] < b["q1"] if lower_is_better else a["q1"] > b["q3"]


def verdict(spreads: dict[str, dict], what: str, lower_is_better: bool = True) -> str:
    """One sentence on ``spreads`` (tuner -> :func:`spread`) saying only what their ranges support.

    A tuner is called better than another only when its interquartile range lies wholly on
    the better side of the other's; ranges that overlap are said to be within each other. A
    tuner with fewer than :data:`MIN_SEEDS` results stops any verdict.
    """
    scored = {name: s for name, s in spreads.items() if s["median"] is not None}
    if len(scored) < 2:
        return f"{what}: fewer than two tuners have a result, so there is nothing to compare."
    few = sorted(name for name, s in scored.items() if s["n"] < MIN_SEEDS)
    if few:
        return (
            f"{what}: too few seeds to compare ({_list([_name(n) for n in few])} "
            f"{'has' if len(few) == 1 else 'have'} fewer than {MIN_SEEDS}); no tuner is called better."
        )
    ranked = sorted(scored, key=lambda name: scored[name]["median"], reverse=not lower_is_better)
    beats = {
        name: [other for other in ranked if other != name and separated(scored[name], scored[other], lower_is_better)]
        for name in ranked
    }
    if not any(beats.values()):
        return (
            f"{what}: differences within the interquartile ranges: no tuner is better at this scale "
            f"(lowest median {_name(ranked[0])}, but every range overlaps every other)."
            if lower_is_better
            else f"{what}: differences within the interquartile ranges: no tuner is better at this scale "
            f"(highest median {_name(ranked[0])}, but every range overlaps every other)."
        )
    better = "below" if lower_is_better else "above"
    clauses = [
        f"{_name(name)}'s interquartile range lies {better} {_list([_name(o) for o in others])}'s"
        for name, others in beats.items()
        if others
    ]
    top = ranked[0]
    if len(beats[top]) == len(ranked) - 1:
        lead = f"{_name(top)} is better at this scale"
    else:
        tied = [o for o in ranked if o != top and o not in beats[top]]
        lead = f"no single tuner is best: {_name(top)} overlaps {_list([_name(o) for o in tied])}"
    return f"{what}: {lead} ({'; '.join(clauses)}); other differences are within the interquartile ranges."


def _name(tuner: str) -> str:
    return Search.registry[tuner].title if tuner in Search.registry else tuner


def _list(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def cell(s: dict, digits: int = 4) -> str:
    """``median [q1–q3]`` as the study's table shows a spread."""
    if s["median"] is None:
        return "n/a"
    return f"{fmt(s['median'], digits)} [{fmt(s['q1'], digits)}–{fmt(s['q3'], digits)}]"


def seconds_cell(s: dict) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{fmt_seconds(s['median'])} [{s['q1']:.0f}–{s['q3']:.0f} s]"


def study_table(study: dict) -> str:
    """The study's table in markdown: one row per tuner."""
    header = (
        f"| tuner | seeds | best val loss at {study['equal_epochs']} epochs, median [IQR] | "
        f"wall time, median [IQR] | held-out whole-image mean IoU of the winner, median [IQR] |"
    )
    lines = [header, "|---|---|---|---|---|"]
    for row in study["tuners"].values():
        lines.append(
            f"| {row['title']} | {len(row['seeds'])} | {cell(row['best_val_loss_at_equal_epochs'])} | "
            f"{seconds_cell(row['wall_seconds'])} | {cell(row['held_out_mean_iou'])} |"
        )
    return "\n".join(lines)


def section_study(study: dict, figures: dict | None = None) -> str:
    """ "Which search to use": the study's table, its curves and what its spread supports."""
    tuners = study["tuners"]
    seeds = sorted({len(row["seeds"]) for row in tuners.values()})
    loss = verdict(
        {t: row["best_val_loss_at_equal_epochs"] for t, row in tuners.items()},
        f"Best validation loss at {study['equal_epochs']} epochs",
    )
    iou = verdict(
        {t: row["held_out_mean_iou"] for t, row in tuners.items()},
        "Held-out whole-image mean IoU of the retrained winners",
        lower_is_better=False,
    )
    figures = figures or {}
    shown = "\n\n".join(image(name, alt) for alt, name in figures.items())
    profile = study.get("profile") or "?"
    changes = ", ".join(f"{k}={v}" for k, v in (study.get("overrides") or {}).items())
    stamp = study.get("stamp") or {}
    return "\n".join(
        [
            "## Which search to use",
            "",
            f"Each tuner ran {_list([str(n) for n in seeds])} times (seeds of the configurations drawn and of "
            f"training) on one split, on the in-process engine, at profile {profile}"
            f"{f' ({changes})' if changes else ''}, data: {stamp.get('data_label', '?')}, "
            f"{stamp.get('hardware', '?')}. Every search spends about the epochs of one HyperBand pass; each is "
            f"compared at the fewest any spent ({study['equal_epochs']}). Each search's best configuration was "
            f"retrained like the tuned model and scored on the held-out tiles' whole images "
            f"({study['held_out_mode']} windows). Spreads are the median and the interquartile range over seeds.",
            "",
            study_table(study),
            "",
            f"- {loss}",
            f"- {iou}",
            "",
            shown,
            "",
        ]
    )


def load_study(study_dir) -> dict:
    """A study folder's ``study.json``."""
    return read_json(Path(study_dir) / STUDY_FILE, "benchmarks/compare_searches.py")
