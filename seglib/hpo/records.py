"""A trial folder's records: its result, its history of epochs and attempts, its processes.

Each (configuration, budget) pair owns ``trials/<config>-b<budget>/``. ``history.json`` holds
every epoch and every attempt (which process, on which machine, how it ended); ``result.json``
the pair's outcome. Engines and the export read these; they are the source of truth.
"""

from __future__ import annotations

import os
from pathlib import Path

from seglib.artifacts import FINISHED, INTERRUPTED, RUNNING, read_json_or, write_json
from seglib.system import machine_name


def read_result(trial_dir: Path) -> dict | None:
    """A pair's recorded result if it can be reused (SUCCEEDED or DIVERGED), else None."""
    result = read_json_or(Path(trial_dir) / "result.json", None)
    return result if result and result.get("status") in FINISHED else None


def read_history(trial_dir: Path) -> dict:
    return read_json_or(Path(trial_dir) / "history.json", None) or {"epochs": [], "attempts": []}


def attempt_ids(trial_dir: Path) -> set[str]:
    """Engine trial ids that ran (or re-reported) this pair, from its folder."""
    history = read_history(trial_dir)
    return {a.get("trial_id") for a in history.get("attempts", [])} | set(history.get("reused_by", []))


def process_alive(attempt: dict) -> bool:
    """Whether an attempt's process still runs (only knowable on the machine that ran it)."""
    if attempt.get("host") not in (None, machine_name()):
        return True  # another machine's: its engine reports its end
    try:
        os.kill(int(attempt["pid"]), 0)
    except (ProcessLookupError, KeyError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def close_dead_attempts(trial_dir: Path, reason: str = "its process is gone", trial_id: str | None = None) -> bool:
    """Mark attempts still RUNNING whose process is gone as INTERRUPTED; True if any was.

    ``trial_id``: an attempt its engine reported ended, on whatever machine it ran (another
    machine's process cannot be checked from here).
    """
    history = read_history(trial_dir)
    dead = [
        a
        for a in history.get("attempts", [])
        if a.get("status") == RUNNING and (a.get("trial_id") == trial_id or not process_alive(a))
    ]
    for attempt in dead:
        attempt.update(status=INTERRUPTED, error=attempt.get("error") or reason)
    if dead:
        write_json(Path(trial_dir) / "history.json", history)
    return bool(dead)
