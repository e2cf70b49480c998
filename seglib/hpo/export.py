"""A search's trials as the report reads them: progress while it runs, the export when it ends.

Everything comes from the search state and the trial folders, which every engine writes the
same way, so the export cannot tell the engines apart except by the engine it names. The
trial folders hold what each trial really trained with (NNI 3.0 can pair a trial id with a
sibling's parameters in its own records, so those are not read).
"""

from __future__ import annotations

from seglib.artifacts import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STATUSES,
    SUCCEEDED,
    WAITING,
    Best,
    Experiment,
    ExperimentPaths,
    SearchSummary,
    Status,
    TrialRow,
    finite_or_none,
    read_json,
    read_json_or,
    write_experiment,
)
from seglib.hpo.hyperband import Job, Search
from seglib.hpo.records import process_alive, read_history


def load_search(paths: ExperimentPaths) -> Search | None:
    return Search.load(paths.state_file) if paths.state_file.is_file() else None


def collect_trials(paths: ExperimentPaths, search: Search | None = None) -> list[TrialRow]:
    """One row per (configuration, budget) pair the search handed out, in the order it did."""
    search = search or load_search(paths)
    if search is None:
        return []
    rows = []
    for job in search.jobs:
        folder = paths.trial_dir(job.config_id, job.budget)
        history = read_history(folder)
        if job.status == QUEUED and not history["attempts"]:
            continue  # never started: not a trial yet
        rows.append(_row(search, job, read_json_or(folder / "result.json", None) or {}, history))
    return rows


def _row(search: Search, job: Job, result: dict, history: dict) -> TrialRow:
    attempts = history.get("attempts", [])
    status = _status(job, result, attempts)
    metrics = result.get("metrics") or {}
    epochs = history.get("epochs", [])
    finished = [a.get("ended") for a in attempts if a.get("ended")]
    return TrialRow(
        config_id=job.config_id,
        budget=job.budget,
        status=status,
        params=search.params(job),
        value=finite_or_none((result.get("final") or {}).get("default")) if status == SUCCEEDED else None,
        parameter_id=job.parameter_id,
        bracket=job.s,
        rung=job.rung,
        resumed_from=result.get(
            "resumed_from", next((a["initial_epoch"] for a in attempts if "initial_epoch" in a), job.resume_from)
        ),
        epochs_trained=len(epochs),
        curve=[e.get("val_loss") for e in epochs],
        train_curve=[e.get("loss") for e in epochs],
        precision=metrics.get("precision"),
        recall=metrics.get("recall"),
        mean_iou=metrics.get("mean_iou"),
        metrics={k: v for k, v in metrics.items() if k != "confusion"} or None,
        final=result.get("final") or {},
        seconds=sum(a.get("seconds", 0.0) for a in attempts),
        first_epoch_seconds=next((a["first_epoch_seconds"] for a in attempts if "first_epoch_seconds" in a), None),
        start_time=attempts[0]["started"] if attempts else None,
        end_time=max(finished) if finished and status not in (RUNNING, WAITING) else None,
        trial_id=attempts[-1]["trial_id"] if attempts else None,
        trial_ids=list(dict.fromkeys(a["trial_id"] for a in attempts)),
        attempts=len(attempts),
        reused_by=history.get("reused_by", []),
        error=None if status == SUCCEEDED else _error(job, result),
        host=attempts[-1].get("host") if attempts else None,
        model=result.get("model"),
    )


def _status(job: Job, result: dict, attempts: list[dict]) -> Status:
    """A trial row's status (seglib.artifacts.Status) from its job and its folder.

    A pair the schedule counts as finished whose folder holds no result (deleted, emptied) is
    no success: INTERRUPTED, and trained again when the search continues (``outcome.revisit``).
    """
    if job.status in FINISHED:
        return Status(result["status"]) if result.get("status") in FINISHED else INTERRUPTED
    if job.status == FAILED:
        return FAILED
    if job.status == RUNNING:
        if any(a.get("status") == RUNNING and process_alive(a) for a in attempts):
            return RUNNING
        if job.attempts > len(attempts) and all(a.get("status") != RUNNING for a in attempts):
            return WAITING  # handed out (again), its process not started yet
    return INTERRUPTED  # stopped before it finished; handed out again by the search


def _error(job: Job, result: dict) -> str | None:
    """The trial's own last error, else the search's record of why it ended or was handed out again."""
    if job.status in FINISHED and result.get("status") not in FINISHED:
        return "its folder holds no result: it is trained again when the search continues"
    return result.get("error") or job.error or (job.interruptions or [None])[-1]


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    scored = [r for r in rows if r.status == SUCCEEDED and r.value is not None]
    return min(scored, key=lambda r: (r.value, -r.budget, r.parameter_id or 0)) if scored else None


def progress(out_dir) -> dict:
    """Counts and the best so far, from the folder alone (works while a search runs, or not)."""
    paths = ExperimentPaths.of(out_dir)
    search = load_search(paths)
    rows = collect_trials(paths, search)
    best = best_row(rows)
    return {
        **{status.lower(): sum(r.status == status for r in rows) for status in STATUSES},
        "trials": len(rows),
        "planned": search.planned_trials() if search else None,
        "epochs": sum(r.epochs_trained for r in rows),
        "finished": bool(search and search.finished),
        "halted": search.halted if search else None,
        "best_value": None if best is None else best.value,
        "best": None if best is None else {"config_id": best.config_id, "budget": best.budget, "params": best.params},
    }


def format_progress(p: dict) -> str:
    """The one-line live view of a search."""
    import time

    if not p:
        return "starting..."
    best = (
        "none yet"
        if p.get("best_value") is None
        else (
            f"{p['best_value']:.4f} ({p['best']['config_id']} at {p['best']['budget']} epochs, {p['best']['params']})"
        )
    )
    return (
        f"[{time.strftime('%H:%M:%S')}] {p['succeeded']} done, {p['running']} running, {p['failed']} failed, "
        f"{p['diverged']} diverged, {p['interrupted']} interrupted of {p['planned']} planned; "
        f"{p['epochs']} epochs trained; best val loss {best}"
    )


def export(out_dir) -> Experiment:
    """Write ``trials.json``, ``trials.csv`` and ``best.json`` into ``out_dir``; return them."""
    paths = ExperimentPaths.of(out_dir)
    record = read_json(paths.experiment_file, "seglib.hpo when it starts a search")
    search = load_search(paths)
    rows = collect_trials(paths, search)
    plan = record["plan"]
    summary = SearchSummary(
        tuner=plan["tuner"],
        engine=record["engine"],
        max_budget=plan["max_budget"],
        eta=plan["eta"],
        trials=len(rows),
        epochs_trained=sum(r.epochs_trained for r in rows),
        epochs_planned=plan["planned_epochs"],
        statuses={s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})},
        finished=bool(
            search and search.finished and not any(r.status in (RUNNING, WAITING, INTERRUPTED) for r in rows)
        ),
        seed=plan["seed"],
        experiment_id=(record.get("nni") or {}).get("experiment_id"),
    )
    top = best_row(rows)
    best = Best(
        params=None if top is None else top.params,
        value=None if top is None else top.value,
        config_id=None if top is None else top.config_id,
        budget=None if top is None else top.budget,
        trial_id=None if top is None else top.trial_id,
        metrics=None if top is None else top.metrics,
        model=None if top is None else top.model,
        search_space=record["search_space"],
    )
    return write_experiment(paths.root, summary, rows, best)
