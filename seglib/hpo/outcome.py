"""A trial's outcome, and the one rule every engine applies it to the search with.

Why a trial ended decides what happens to its pair: its own configuration's error is final,
the machine's (disk full, out of memory, data missing, a damaged file) halts the search until
it is fixed, an interruption hands the pair out again. When a search continues, an outcome
whose record is gone, or that a damaged file caused, is not taken as final (:func:`revisit`).
"""

from __future__ import annotations

import errno
import zipfile

from seglib.artifacts import (
    FAILED,
    FINISHED,
    INTERRUPTED,
    ArtifactError,
    ArtifactMissing,
    ExperimentPaths,
    Status,
    finite_or_none,
    read_json,
    set_aside,
)
from seglib.hpo.hyperband import Search

MAX_LOST = 3  # a pair whose trial process died this often without a word is FAILED
# Why a trial failed: its own configuration ("trial"), or the machine ("environment").
TRIAL_CAUSE, ENVIRONMENT_CAUSE = "trial", "environment"
ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM}
# How a damaged file reads in a recorded error (earlier seglib versions recorded these as the
# trial's own): zipfile's, seglib's checks of a model or checkpoint file, Keras' answer to a
# truncated model.
DAMAGED_FILE_ERRORS = ("BadZipFile", "cannot read model", "cannot read checkpoint", "File not found: filepath=")


class Interrupted(Exception):
    """The trial was stopped from outside (a signal, its manager or driver gone)."""


def classify(error: BaseException) -> tuple[Status, str]:
    """(status, cause) of a trial that raised ``error``: whose fault, and is it worth a retry."""
    if isinstance(error, (KeyboardInterrupt, Interrupted)):
        return INTERRUPTED, "interrupted"
    if isinstance(error, MemoryError) or (isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS):
        return FAILED, ENVIRONMENT_CAUSE
    if isinstance(error, zipfile.BadZipFile) or damaged_file(str(error)):
        return FAILED, ENVIRONMENT_CAUSE  # a file the trial read, not its configuration
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


def damaged_file(error: str | None) -> bool:
    """Whether a recorded error says a file the trial read was damaged."""
    return bool(error) and any(words in error for words in DAMAGED_FILE_ERRORS)


def revisit(search: Search, paths: ExperimentPaths) -> list[str]:
    """Hand out again the pairs whose recorded outcome does not stand; one line for each.

    A finished pair whose folder holds no readable result (deleted, emptied, damaged) has
    nothing to report: it is trained again (``seglib.hpo.trial`` trains the epochs its records
    lack). A pair FAILED by a damaged file (an earlier seglib recorded that as its own error)
    is tried again: checkpoints that do not load are now set aside; so is a FAILED pair whose
    folder was deleted (deleting a trial's folder is how to run it again). Either way the
    decisions its rung already made stand. A damaged ``result.json`` is set aside as ``.damaged``.
    """
    lines = []
    for job in search.jobs:
        folder = paths.trial_dir(job.config_id, job.budget)
        if job.status in FINISHED:
            result_file = folder / "result.json"
            try:
                result = read_json(result_file)
            except ArtifactMissing:
                result, why = None, f"{folder} holds no result"
            except ArtifactError:
                result, why = None, f"{result_file} is damaged (set aside as {set_aside(result_file).name})"
            else:
                why = f"{result_file} records no finished trial"
            if result is None or result.get("status") not in FINISHED:
                search.redo(job.parameter_id, why)
                lines.append(f"{why}: {folder.name} is trained again")
        elif job.status == FAILED and damaged_file(job.error):
            why = f"{folder.name} failed reading a damaged file ({job.error})"
            search.redo(job.parameter_id, why)
            lines.append(f"{why}: it is tried again")
        elif job.status == FAILED and not folder.exists():
            search.redo(job.parameter_id, f"{folder} was deleted")
            lines.append(f"{folder} was deleted: {folder.name}, FAILED before, is tried again")
    return lines
