"""A trial's outcome, and the one rule every engine applies it to the search with.

Why a trial ended decides what happens to its pair: its own configuration's error is final,
the machine's (disk full, out of memory, data missing) halts the search until it is fixed, an
interruption hands the pair out again.
"""

from __future__ import annotations

import errno

from seglib.artifacts import FAILED, FINISHED, INTERRUPTED, ArtifactError, ArtifactMissing, Status, finite_or_none
from seglib.hpo.hyperband import Search

MAX_LOST = 3  # a pair whose trial process died this often without a word is FAILED
# Why a trial failed: its own configuration ("trial"), or the machine ("environment").
TRIAL_CAUSE, ENVIRONMENT_CAUSE = "trial", "environment"
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}


class Interrupted(Exception):
    """The trial was stopped from outside (a signal, its manager or driver gone)."""


def classify(error: BaseException) -> tuple[Status, str]:
    """(status, cause) of a trial that raised ``error``: whose fault, and is it worth a retry."""
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return INTERRUPTED, "interrupted"
    if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS):
        return FAILED, ENVIRONMENT_CAUSE
    from seglib.data import DataError

    if isinstance(error, (DataError, ArtifactMissing, ArtifactError)):
        return FAILED, ENVIRONMENT_CAUSE
    text = f"{type(error).__name__} {error}"
    if "RESOURCE_EXHAUSTED" in text or "ResourceExhausted" in text or "out of memory" in text.lower():
        return FAILED, ENVIRONMENT_CAUSE  # the framework's out-of-memory errors (GPU or host)
    return FAILED, TRIAL_CAUSE


def describe(error: BaseException) -> str:
    """One line for people: the exception, with the errno's name where there is one."""
    name = errno.errorcode.get(getattr(error, "errno", None) or -1)
    return f"{type(error).__name__}: {error}" + (f" ({name})" if name and name not in str(error) else "")


def final_value(value) -> tuple[float | None, bool]:
    """(loss, diverged) from a trial's final metric: a dict with 'default' or a number."""
    if isinstance(value, dict):
        diverged = bool(value.get("diverged"))
        value = value.get("default")
    else:
        diverged = False
    value = finite_or_none(value)
    return (value, diverged) if value is not None else (None, True)


def settle(search: Search, parameter_id: int, record: dict | None, lost: str | None = None) -> str | None:
    """Apply one trial's outcome to ``search``; return a reason when the search must halt.

    SUCCEEDED/DIVERGED: reported. FAILED by its own configuration: failed (never retried;
    its rung goes on with fewer survivors). FAILED by the machine (disk full, out of memory,
    data missing): handed out again later, and the search halts until the cause is fixed and
    it is resumed. INTERRUPTED (stopped from outside): handed out again. No record at all
    (the process died without a word, ``lost`` says how): handed out again, up to
    :data:`MAX_LOST` times, then failed.
    """
    job = search.job(parameter_id)
    if not job.handed_out:
        return None
    status = (record or {}).get("status")
    if status in FINISHED:
        metric, diverged = final_value(record.get("final"))
        search.report(
            parameter_id,
            metric,
            diverged,
            trial_id=(record.get("trial_ids") or [None])[-1],
            epochs_trained=record.get("epochs_trained"),
        )
        return None
    if status == FAILED and record.get("cause") == ENVIRONMENT_CAUSE:
        search.requeue(parameter_id, record["error"])
        search.halt(record["error"])
        return record["error"]
    if status == FAILED:
        search.fail(parameter_id, record.get("error"), epochs_trained=record.get("epochs_trained"))
        return None
    if status == INTERRUPTED:
        search.requeue(parameter_id, record.get("error"))
        return None
    job.lost += 1
    if job.lost >= MAX_LOST:
        search.fail(parameter_id, f"the trial process died {job.lost} times without a result ({lost})")
    else:
        search.requeue(parameter_id, lost or "the trial process died without a result")
    return None
