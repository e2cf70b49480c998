"""What the notebooks show: tables, figures and a live view of a running search."""

from __future__ import annotations

from pathlib import Path

from seglib.artifacts import Experiment, ModelRecord, Run
from seglib.hpo.export import format_progress
from seglib.hpo.hyperband import brackets, pass_epochs
from seglib.report import figures
from seglib.report.numbers import best_trial, fmt, fmt_seconds, spent, statuses_text
from seglib.settings import Settings


def show(path):
    """Display a saved figure in a notebook (returns the IPython object; the path elsewhere)."""
    try:
        from IPython.display import Image
    except ImportError:
        return path
    return Image(filename=str(path))


def show_report(path):
    """Display the written report's markdown in a notebook."""
    from IPython.display import Markdown

    return Markdown(Path(path).read_text())


def class_shares(run: Run, summary: dict):
    """Per-class pixel shares of each split, drawn into ``data/`` and shown (01_data)."""
    return show(figures.figure_class_shares(summary, run.paths.class_shares_figure, run.label))


def loss_curves(run: Run, name: str, record: ModelRecord):
    """Training and validation loss of the model ``name``, drawn into its folder and shown."""
    return show(figures.figure_history(record, run.paths.loss_figure(name), run.label))


def metrics_table(record: ModelRecord) -> None:
    """Print loss, accuracy, precision, recall and mean IoU of one model per split."""
    keys = ("loss", "accuracy", "precision", "recall", "mean_iou")
    lines = ["split  " + "".join(f"{k:>11}" for k in keys)]
    for split in ("train", "val", "test"):
        scores = getattr(record, split)
        if scores:
            lines.append(f"{split:<7}" + "".join(f"{fmt(scores.get(k)):>11}" for k in keys))
    print("\n".join(lines))


def schedule_table(settings: Settings) -> None:
    """Print the HyperBand brackets for the run's R and η (03_hyperband_hpo)."""
    R, eta = settings.max_budget, settings.eta
    lines = [f"HyperBand R = {R}, η = {eta}"]
    for b in brackets(R, eta):
        rungs = " -> ".join(f"{r.n_configs}x{r.budget}ep" for r in b.rungs)
        lines.append(f"  bracket s={b.s}: {rungs}  ({b.n_trials} trials, {b.epochs(True)} epochs with warm start)")
    totals = pass_epochs(R, eta)
    lines.append(
        f"  one pass: {totals['trials']} trials, {totals['warm_start']} epochs (from scratch: {totals['from_scratch']})"
    )
    print("\n".join(lines))


def experiment_summary(experiment: Experiment) -> str:
    """Trials, epochs, seconds and best value of one exported search."""
    used, top = spent(experiment.trials), best_trial(experiment.trials)
    return (
        f"{used['trials']} trials ({statuses_text(used['statuses'])}), {used['epochs']} epochs, "
        f"{fmt_seconds(used['seconds'])} of trial time; best validation loss {fmt(top.value if top else None)}"
        + (f" with {top.params}" if top else "")
    )


def live_progress():
    """A ``show(progress)`` callback: one line updated in place in a notebook, printed elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            handle = display(format_progress({}), display_id=True)
            return lambda p: handle.update(format_progress(p))
    except ImportError:
        pass
    return lambda p: print(format_progress(p), flush=True)


def whole_images(record: dict | None) -> None:
    """Print whole-image mean IoU per tiling mode (03_hyperband_hpo)."""
    if record is None:
        return
    modes = record["modes"]
    print(f"{len(record['images'])} whole images of held-out tiles {', '.join(record['tiles'])}:")
    for name, scores in modes.items():
        print(f"  {name:<10} mean IoU {fmt(scores['mean_iou'])}  ({fmt_seconds(scores['seconds'])})")
