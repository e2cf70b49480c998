"""The run folder's contract: where each artefact lives, how it is written, what it holds.

Every module reads and writes run artefacts through this one, so a writer and its readers
cannot drift apart, and tests build their fixtures with the same writers production uses.
JSON is written atomically (a temporary file renamed into place: a kill never leaves half a
file) with NaN and infinities as null; a missing artefact names what writes it, a corrupt
one names itself and what to do.

A run folder (``seglib run``, notebooks 01-04)::

    run.json              profile, overrides, resolved settings, stamp      (01_data)
    data/                 split.npz, summary.json, class_shares.png         (01_data)
    baseline/, tuned/     model.keras, metrics.json, samples.npz, loss.png  (02, 03)
    hpo/, random/         one experiment each (below)                       (03)
    docs/                 the report                                        (04)

An experiment folder (``seglib hpo``, or ``hpo/`` and ``random/`` of a run)::

    experiment.json            what was started: engine, plan, settings (for resume)
    search_state.json          the schedule's whole state, rewritten after every change
    trial_code/                settings.json + split.npz: what every trial reads
    trials/<config>-b<budget>/ params.json, history.json, result.json, metrics.json,
                               model.keras, error.txt: one (configuration, budget) pair
    checkpoints/<config>/      per-epoch checkpoints of one configuration (warm start)
    nni/                       NNI's own records (nni engine)
    trials.json, trials.csv, best.json   the export
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from seglib.settings import HYPERPARAMETERS, TUNERS, Settings

DAMAGED_SUFFIX = ".damaged"  # a damaged artefact set aside (kept for a look, never read again)


class ArtifactError(ValueError):
    """An artefact that exists but cannot be used; the message names it and what to do."""


class ArtifactMissing(FileNotFoundError):
    """An artefact that is not there; the message names what writes it."""


# ---------------------------------------------------------------------------------------------
# Writing and reading


def atomic_write(path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` through a temporary file in its folder, then rename: all or nothing.

    The temporary file keeps the suffix, for writers that insist on one (Keras' ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp{os.getpid()}-{threading.get_ident()}{path.suffix}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def set_aside(path) -> Path:
    """Rename a damaged artefact to ``NAME.damaged`` (``.damaged-2``, ... if taken): kept, never read again."""
    path = Path(path)
    target = path.with_name(path.name + DAMAGED_SUFFIX)
    count = 1
    while target.exists():
        count += 1
        target = path.with_name(f"{path.name}{DAMAGED_SUFFIX}-{count}")
    os.replace(path, target)
    return target


def write_json(path, value) -> Path:
    """``value`` as indented JSON, atomically; NaN/inf as null, arrays and paths as plain values."""
    text = json.dumps(_plain(value), indent=1, allow_nan=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def read_json(path, producer: str = ""):
    """A JSON artefact; missing: names ``producer`` (what writes it); corrupt: names the file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        hint = f" (written by {producer}: run it first)" if producer else ""
        raise ArtifactMissing(f"{path} not found{hint}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ArtifactError(
            f"{path} is not valid JSON ({error}); it was damaged outside seglib (seglib writes it "
            "atomically): restore it from a copy, or start again in a new folder"
        ) from None


def read_json_or(path, default):
    """A JSON artefact, or ``default`` when it does not exist (yet)."""
    try:
        return read_json(path)
    except ArtifactMissing:
        return default


def finite_or_none(value):
    """``value`` as a float, or None when it is missing, not a number, NaN or infinite."""
    if isinstance(value, bool):
        return None
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _plain(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return _plain(value.tolist())
    return value


def _from_dict(cls, values: dict, source) -> object:
    """A record dataclass from its JSON form; unknown or missing fields name the file."""
    names = {f.name for f in dataclasses.fields(cls)}
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    unknown, missing = sorted(set(values) - names), sorted(required - set(values))
    if unknown or missing:
        raise ArtifactError(
            f"{source}: not a {cls.__name__} record (unknown fields {unknown}, missing {missing}); "
            "was it written by another seglib version? Rebuild it, or start again in a new folder"
        )
    return cls(**values)


# ---------------------------------------------------------------------------------------------
# Paths


@dataclass(frozen=True)
class RunPaths:
    """The paths of one run folder."""

    root: Path

    @classmethod
    def of(cls, root) -> RunPaths:
        return cls(Path(root).expanduser().resolve())

    run_file = property(lambda self: self.root / "run.json")
    data = property(lambda self: self.root / "data")
    split_file = property(lambda self: self.data / "split.npz")
    data_summary = property(lambda self: self.data / "summary.json")
    class_shares_figure = property(lambda self: self.data / "class_shares.png")
    docs = property(lambda self: self.root / "docs")

    def model_dir(self, name: str) -> Path:
        """``baseline/`` or ``tuned/``: one trained model and its evaluation."""
        return self.root / name

    def model_file(self, name: str) -> Path:
        return self.model_dir(name) / "model.keras"

    def metrics_file(self, name: str) -> Path:
        return self.model_dir(name) / "metrics.json"

    def samples_file(self, name: str) -> Path:
        return self.model_dir(name) / "samples.npz"

    def loss_figure(self, name: str) -> Path:
        return self.model_dir(name) / "loss.png"

    def checkpoints(self, name: str) -> Path:
        return self.model_dir(name) / "checkpoints"

    def whole_images(self, name: str) -> Path:
        """Whole held-out images segmented by the model ``name``: scores per tiling mode."""
        return self.model_dir(name) / "whole_images.json"

    def whole_images_samples(self, name: str) -> Path:
        """A few of those images with their masks and predictions, for the report's figure."""
        return self.model_dir(name) / "whole_images.npz"

    def search(self, tuner: str) -> Path:
        """The experiment folder of ``tuner`` (one of ``seglib.settings.TUNERS``): HyperBand's is ``hpo/``."""
        if tuner not in TUNERS:
            raise ValueError(f"unknown tuner {tuner!r}; expected one of {list(TUNERS)}")
        return self.root / ("hpo" if tuner == "hyperband" else tuner)

    def notebook(self, name: str) -> Path:
        return self.root / f"{name}.ipynb"


@dataclass(frozen=True)
class ExperimentPaths:
    """The paths of one experiment folder, shared by the driver, the engine and the trials.

    With several machines the folder must be shared storage mounted at the same path
    everywhere: a warm start reads a configuration's checkpoint wherever its next rung runs.
    """

    root: Path

    @classmethod
    def of(cls, root) -> ExperimentPaths:
        return cls(Path(root).expanduser().resolve())

    experiment_file = property(lambda self: self.root / "experiment.json")
    state_file = property(lambda self: self.root / "search_state.json")
    trial_code = property(lambda self: self.root / "trial_code")
    settings_file = property(lambda self: self.trial_code / "settings.json")
    split_file = property(lambda self: self.trial_code / "split.npz")
    trials = property(lambda self: self.root / "trials")
    checkpoints = property(lambda self: self.root / "checkpoints")
    nni_dir = property(lambda self: self.root / "nni")
    compile_cache = property(lambda self: self.root / "compile_cache")
    heartbeat_file = property(lambda self: self.root / "tuner_heartbeat.json")
    tuner_error_file = property(lambda self: self.root / "tuner_error.txt")
    lock_file = property(lambda self: self.root / "driver.lock")
    trials_json = property(lambda self: self.root / "trials.json")
    trials_csv = property(lambda self: self.root / "trials.csv")
    best_json = property(lambda self: self.root / "best.json")

    def trial_dir(self, config_id: str, budget: int) -> Path:
        return self.trials / trial_key(config_id, budget)

    def checkpoint_dir(self, config_id: str) -> Path:
        return self.checkpoints / config_id


def trial_key(config_id: str, budget: int) -> str:
    """The folder name of one (configuration, budget) pair: ``c0007-b020``."""
    return f"{config_id}-b{int(budget):03d}"


# ---------------------------------------------------------------------------------------------
# Records


class Status(str, Enum):
    """One status vocabulary, from the search's schedule to the export, for every engine.

    The schedule holds a pair QUEUED (not handed out yet), RUNNING (handed out), or finished:
    SUCCEEDED (a finite validation loss), DIVERGED (its loss became NaN: it ranks last) or
    FAILED (an error of its own configuration, recorded; never retried). The export tells a
    handed-out pair apart by its folder: RUNNING (its process is alive), WAITING (handed out
    again, its process not started yet) or INTERRUPTED (stopped from outside: handed out again
    when the search continues).
    """

    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    INTERRUPTED = "INTERRUPTED"
    SUCCEEDED = "SUCCEEDED"
    DIVERGED = "DIVERGED"
    FAILED = "FAILED"

    __str__ = str.__str__  # "SUCCEEDED" in f-strings and CSV, as in JSON


SUCCEEDED, DIVERGED, FAILED = Status.SUCCEEDED, Status.DIVERGED, Status.FAILED
INTERRUPTED, RUNNING, WAITING, QUEUED = Status.INTERRUPTED, Status.RUNNING, Status.WAITING, Status.QUEUED
# What a trial row can show (the export never shows QUEUED: a pair not started is no trial yet).
STATUSES = (SUCCEEDED, DIVERGED, FAILED, INTERRUPTED, RUNNING, WAITING)
FINISHED = (SUCCEEDED, DIVERGED)  # a pair with one of these is never trained again


@dataclass
class TrialRow:
    """One (configuration, budget) pair of a search, as ``trials.json`` holds it."""

    config_id: str
    budget: int  # epochs the configuration has in all after this trial
    status: str
    params: dict  # the hyperparameters, by their settings' names
    value: float | None = None  # best validation loss (SUCCEEDED only): what the search minimises
    parameter_id: int | None = None  # the order the search handed pairs out in
    bracket: int | None = None  # HyperBand's s
    rung: int | None = None
    resumed_from: int = 0  # the epoch this trial started from (its previous rung's budget)
    epochs_trained: int = 0
    curve: list = field(default_factory=list)  # validation loss per epoch trained
    train_curve: list = field(default_factory=list)
    precision: float | None = None  # Keras precision/recall at 0.5 on the validation set
    recall: float | None = None
    mean_iou: float | None = None
    metrics: dict | None = None  # the validation evaluation (seglib.metrics.evaluate)
    final: dict = field(default_factory=dict)  # what the trial reported to its engine
    seconds: float = 0.0  # training process time over all attempts
    first_epoch_seconds: float | None = None  # process start -> end of the first epoch
    start_time: float | None = None  # Unix seconds
    end_time: float | None = None
    trial_id: str | None = None  # the engine's id of the last attempt
    trial_ids: list = field(default_factory=list)
    attempts: int = 0
    reused_by: list = field(default_factory=list)  # ids that reported the recorded result again
    error: str | None = None
    host: str | None = None  # the machine the last attempt ran on
    model: str | None = None


@dataclass
class SearchSummary:
    """What one search did in all (``trials.json``'s ``summary``)."""

    tuner: str
    engine: str
    max_budget: int
    eta: int
    trials: int
    epochs_trained: int
    epochs_planned: int
    statuses: dict
    finished: bool
    seed: int = 0
    experiment_id: str | None = None


@dataclass
class Best:
    """The best pair of a search (``best.json``); fields are None when nothing succeeded."""

    params: dict | None
    value: float | None
    config_id: str | None
    budget: int | None
    trial_id: str | None
    metrics: dict | None
    model: str | None
    search_space: dict


@dataclass
class Experiment:
    """A search's export as the report reads it."""

    folder: Path
    summary: SearchSummary
    trials: list[TrialRow]
    best: Best


TRIAL_CSV_FIELDS = (
    "parameter_id",
    "config_id",
    "bracket",
    "rung",
    "budget",
    "resumed_from",
    "epochs_trained",
    "status",
    "value",
    "precision",
    "recall",
    "mean_iou",
    *HYPERPARAMETERS,
    "seconds",
    "first_epoch_seconds",
    "start_time",
    "end_time",
    "host",
    "trial_id",
    "trial_ids",
    "curve",
    "error",
)


def write_experiment(folder, summary: SearchSummary, rows: list[TrialRow], best: Best) -> Experiment:
    """``trials.json``, ``trials.csv`` and ``best.json`` of one search."""
    paths = ExperimentPaths.of(folder)
    write_json(paths.trials_json, {"summary": summary, "trials": rows})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=TRIAL_CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = {name: getattr(row, name, None) for name in TRIAL_CSV_FIELDS}
        flat.update({k: row.params.get(k) for k in HYPERPARAMETERS})
        flat["curve"] = json.dumps(_plain(row.curve))
        flat["trial_ids"] = " ".join(row.trial_ids)
        writer.writerow(flat)
    write_text(paths.trials_csv, buffer.getvalue())
    write_json(paths.best_json, best)
    return Experiment(paths.root, summary, rows, best)


def read_experiment(folder, producer: str = "notebooks/03_hyperband_hpo") -> Experiment:
    """A search's export, as :func:`write_experiment` wrote it."""
    paths = ExperimentPaths.of(folder)
    data = read_json(paths.trials_json, producer)
    best = read_json(paths.best_json, producer)
    try:
        summary, trials = data["summary"], data["trials"]
    except (TypeError, KeyError):
        raise ArtifactError(f"{paths.trials_json}: expected {{'summary': ..., 'trials': [...]}}") from None
    return Experiment(
        paths.root,
        _from_dict(SearchSummary, summary, paths.trials_json),
        [_from_dict(TrialRow, row, paths.trials_json) for row in trials],
        _from_dict(Best, best, paths.best_json),
    )


@dataclass
class ModelRecord:
    """A trained model's ``metrics.json``: how it was trained and how it scores.

    ``train``/``val``/``test`` hold :func:`seglib.metrics.evaluate`'s dict (None for an
    empty split); ``pr_curve`` the validation set's precision-recall curve.
    """

    params: dict  # the hyperparameters it was trained with
    history: dict  # per-epoch logs
    epochs_trained: int
    seconds: float
    diverged: bool
    message: str
    best_val_loss: float | None
    backend: str  # Keras backend
    loop: str  # seglib.train's training loop: "fit" or "jax"
    train: dict | None = None
    val: dict | None = None
    test: dict | None = None
    pr_curve: dict | None = None


def write_model_record(path, record: ModelRecord) -> Path:
    return write_json(path, record)


def read_model_record(path, producer: str) -> ModelRecord:
    return _from_dict(ModelRecord, read_json(path, producer), path)


# ---------------------------------------------------------------------------------------------
# The run record (run.json)


@dataclass(frozen=True)
class Run:
    """One run folder as notebook 01 started it: profile, overrides, resolved settings, stamp.

    The stamp names the data, backend and hardware; ``command`` in it is the ``seglib run``
    command line that made the run, when one did.
    """

    paths: RunPaths
    profile: str
    overrides: dict
    settings: Settings
    stamp: dict

    @property
    def label(self) -> str:
        """The one-line stamp every figure carries: data, profile, backend and hardware."""
        s = self.stamp
        return f"data: {s['data_label']} · profile: {self.profile_text} · {s['backend']} · {s['hardware']}"

    @property
    def profile_text(self) -> str:
        """``quick`` or ``quick (epochs=2, ...)``."""
        changes = ", ".join(f"{k}={v}" for k, v in self.overrides.items())
        return self.profile + (f" ({changes})" if changes else "")


def write_run(run: Run) -> Path:
    return write_json(
        run.paths.run_file,
        {"profile": run.profile, "overrides": run.overrides, "settings": run.settings.to_dict(), "stamp": run.stamp},
    )


def read_run(root) -> Run:
    paths = RunPaths.of(root)
    record = read_json(paths.run_file, "notebooks/01_data")
    try:
        settings = Settings.from_dict(record["settings"], str(paths.run_file))
        return Run(paths, record["profile"], dict(record["overrides"]), settings, record["stamp"])
    except (KeyError, TypeError):
        raise ArtifactError(
            f"{paths.run_file}: expected 'profile', 'overrides', 'settings' and 'stamp'; "
            "it was written by another seglib version: run notebooks/01_data again"
        ) from None
