"""The milestone report, rebuilt from a run folder: figures, markdown, and notebook views.

``write_report(run_dir)`` reads what notebooks 01-03 wrote (``seglib.artifacts``) and writes
``hyperparameter-optimization.md`` with its figures under ``images/`` and copies of the
records its numbers come from under ``run/``. ``seglib.report.figures`` draws,
``seglib.report.markdown`` writes the text from ``templates/``, ``seglib.report.display``
shows tables and figures in the notebooks. A run folder holding a study of the searches
(``study/``, or ``study_dir``: ``seglib.report.study``) adds "Which search to use".
"""

from __future__ import annotations

import os
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.artifacts import (
    ArtifactMissing,
    Experiment,
    ModelRecord,
    Run,
    read_experiment,
    read_json,
    read_json_or,
    read_model_record,
    read_run,
    write_json,
)
from seglib.hpo.hyperband import brackets
from seglib.report import figures, markdown, study

REPORT_NAME = "hyperparameter-optimization.md"
STUDY = "study"  # a run folder's study of the searches (seglib.report.study), when it has one
SOURCES = "run"  # beside the report: copies of the run's records its numbers come from
# ... with the main search's records from its own folder (hpo/ for HyperBand; see source_files)
SOURCE_FILES = (
    "run.json",
    "data/summary.json",
    "baseline/metrics.json",
    "tuned/metrics.json",
    "random/trials.json",
    "random/best.json",
    "tuned/whole_images.json",
)


@dataclass
class RunArtefacts:
    """Everything the report reads from one run folder."""

    run: Run
    data: dict
    baseline: ModelRecord
    tuned: ModelRecord
    hpo: Experiment  # the run's main search (its tuner setting: HyperBand, ASHA or BOHB)
    random: Experiment | None
    tuned_samples: dict
    whole: dict | None = None  # whole held-out images (tiles split only)
    whole_samples: dict | None = None


def load_artefacts(run_dir) -> RunArtefacts:
    """Read the artefacts notebooks 01-03 wrote; a missing one names the notebook to run."""
    run = read_run(run_dir)
    paths = run.paths
    data = read_json(paths.data_summary, "notebooks/01_data")
    baseline = read_model_record(paths.metrics_file("baseline"), "notebooks/02_baseline")
    tuned = read_model_record(paths.metrics_file("tuned"), "notebooks/03_hyperband_hpo")
    random_dir = paths.search("random")
    return RunArtefacts(
        run=run,
        data=data,
        baseline=baseline,
        tuned=tuned,
        hpo=read_experiment(paths.search(run.settings.tuner)),
        random=read_experiment(random_dir) if (random_dir / "trials.json").is_file() else None,
        tuned_samples=_samples(paths.samples_file("tuned"), "notebooks/03_hyperband_hpo"),
        whole=read_json_or(paths.whole_images("tuned"), None),
        whole_samples=_samples(paths.whole_images_samples("tuned"), "notebooks/03_hyperband_hpo")
        if paths.whole_images_samples("tuned").is_file()
        else None,
    )


def _samples(path: Path, producer: str) -> dict:
    if not path.is_file():
        raise ArtifactMissing(f"{path} not found (written by {producer}: run it first)")
    with np.load(path) as samples:
        return dict(samples)


def write_report(run_dir, docs_dir=None, study_dir=None) -> Path:
    """Write ``hyperparameter-optimization.md`` and its figures for the run in ``run_dir``.

    ``study_dir``: a study folder of the searches (default: ``run_dir/study`` when it holds
    ``study.json``) whose section "Which search to use" ends the report.
    """
    a = load_artefacts(run_dir)
    docs = Path(docs_dir) if docs_dir else a.run.paths.docs
    images = docs / markdown.IMAGES
    images.mkdir(parents=True, exist_ok=True)
    stamp, s = a.run.label, a.run.settings
    title = markdown.tuner_title(a.hpo)
    schedule = brackets(s.max_budget, s.eta)
    split = "test" if a.tuned.test else "val"
    drawn = {
        "halving": figures.figure_successive_halving(schedule[0], s.eta, images / "successive_halving.png", stamp),
        "brackets": figures.figure_brackets(schedule, s.max_budget, s.eta, images / "brackets.png", stamp),
        "trials": figures.figure_trials(a.hpo.trials, images / "trials_by_rung.png", stamp, title),
        "samples": figures.figure_samples(a.tuned_samples, images / "segmented_validation.png", stamp),
        "loss": figures.figure_loss(a.tuned, a.baseline, images / "loss.png", stamp),
        "pr": figures.figure_pr(a.tuned, a.baseline, images / "pr.png", stamp),
        "iou": figures.figure_iou(a.baseline, a.tuned, split, images / "iou.png", stamp),
        "comparison": figures.figure_search_comparison(
            a.hpo.trials, a.random.trials if a.random else None, images / "hyperband_vs_random.png", stamp, title
        ),
    }
    if a.whole_samples:
        drawn["whole_images"] = figures.figure_whole_images(a.whole_samples, images / "whole_images.png", stamp)
    header = (
        "<!-- Generated by seglib.report from a run folder; do not edit by hand. "
        "How it was made is at the end. -->\n\n"
        f"> Run: {stamp}.{markdown.scope_note(a.run)}\n\n"
    )
    text = header + "\n".join(
        [
            markdown.section_hyperband(a.run, a.hpo, drawn),
            markdown.section_results(a.run, a.hpo, a.baseline, a.tuned, drawn, a.whole),
            markdown.section_beyond(a.run, a.data, a.hpo, a.random, a.baseline, a.tuned, drawn, a.whole),
        ]
    )
    study_dir = Path(study_dir) if study_dir else a.run.paths.root / STUDY
    if (study_dir / study.STUDY_FILE).is_file():
        text += "\n" + study_section(study_dir, docs)
    path = docs / REPORT_NAME
    path.write_text(text)
    copy_sources(a.run.paths.root, docs / SOURCES, a.run.paths.search(s.tuner).name)
    return path


def study_section(study_dir: Path, docs: Path) -> str:
    """Section "Which search to use" from ``study_dir``; its figures to ``images/``, its record to ``run/study/``."""
    record = study.load_study(study_dir)
    shown = {}
    for alt, name in (("anytime, epochs", study.FIGURES["epochs"]), ("anytime, wall time", study.FIGURES["wall"])):
        if (study_dir / name).is_file():
            shutil.copyfile(study_dir / name, docs / markdown.IMAGES / name)
            shown[alt] = name
    write_json(docs / SOURCES / STUDY / study.STUDY_FILE, portable(record, study_dir.resolve()))
    return study.section_study(record, shown)


def source_files(main_folder: str = "hpo") -> tuple[str, ...]:
    """The run's records the report's numbers come from, the main search's in ``main_folder``."""
    return (*SOURCE_FILES[:4], f"{main_folder}/trials.json", f"{main_folder}/best.json", *SOURCE_FILES[4:])


def copy_sources(run_dir: Path, target: Path, main_folder: str = "hpo") -> None:
    """Copy the small JSON files the report's numbers come from next to it (docs/run/).

    The run folder is not committed; these files are, so a test can check the committed
    report's numbers against the files they came from. They carry no path of the machine that
    made them (:func:`portable`): a path inside the run folder becomes relative to it, any
    other (the dataset's folder) its last component.
    """
    for name in source_files(main_folder):
        source = Path(run_dir) / name
        if source.is_file():
            write_json(target / name, portable(read_json(source), Path(run_dir).resolve()))


def portable(value, run_dir: Path):
    """``value`` (plain JSON) with absolute paths made machine-independent (see :func:`copy_sources`)."""
    if isinstance(value, dict):
        return {key: portable(item, run_dir) for key, item in value.items()}
    if isinstance(value, list):
        return [portable(item, run_dir) for item in value]
    if isinstance(value, str) and os.path.isabs(value):
        path = Path(value)
        return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else path.name
    if isinstance(value, str) and " --" in value and "/" in value:  # a command line: its path arguments
        return shlex.join(portable_argument(word, run_dir) for word in shlex.split(value))
    return value


def portable_argument(word: str, run_dir: Path) -> str:
    if os.path.isabs(word) or word.startswith(".."):
        path = Path(word)
        return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else f"PATH/{path.name}"
    return word
