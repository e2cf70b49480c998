"""How the report counts and writes numbers: one format for a metric, sums over trials."""

from __future__ import annotations

import math

from seglib.artifacts import TrialRow

SPLIT_NAMES = {"train": "training set", "val": "validation set", "test": "held-out test set"}


def fmt(value, digits: int = 4) -> str:
    """How the report writes a metric (tests format metrics files the same way to compare)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def fmt_seconds(seconds: float) -> str:
    """Seconds with a readable larger unit beside them."""
    if seconds >= 3600:
        return f"{seconds:,.0f} s ({seconds / 3600:.2f} h)"
    if seconds >= 120:
        return f"{seconds:,.0f} s ({seconds / 60:.1f} min)"
    return f"{seconds:.1f} s"


def spent(trials: list[TrialRow]) -> dict:
    """Trials, epochs and seconds a search spent, and its trials by status."""
    statuses: dict[str, int] = {}
    for t in trials:
        statuses[t.status] = statuses.get(t.status, 0) + 1
    return {
        "trials": len(trials),
        "epochs": sum(t.epochs_trained for t in trials),
        "seconds": sum(t.seconds for t in trials),
        "statuses": statuses,
    }


def statuses_text(statuses: dict) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items())) or "none"


def best_trial(trials: list[TrialRow]) -> TrialRow | None:
    """The trial with the lowest finite validation loss."""
    scored = [t for t in trials if t.value is not None]
    return min(scored, key=lambda t: t.value) if scored else None


def best_so_far(trials: list[TrialRow]) -> tuple[list[int], list[float]]:
    """Cumulative epochs against the best value seen so far, in the order trials were handed out."""
    ordered = sorted(trials, key=lambda t: (t.parameter_id is None, t.parameter_id or 0, t.config_id))
    epochs, values, total, best = [], [], 0, math.inf
    for t in ordered:
        total += t.epochs_trained
        if t.value is not None:
            best = min(best, t.value)
        if math.isfinite(best):
            epochs.append(total)
            values.append(best)
    return epochs, values


def wall_seconds(trials: list[TrialRow]) -> float | None:
    """Seconds from the first trial's start to the last trial's end (Unix times, in seconds)."""
    starts = [t.start_time for t in trials if t.start_time]
    ends = [t.end_time for t in trials if t.end_time]
    return max(ends) - min(starts) if starts and ends else None
