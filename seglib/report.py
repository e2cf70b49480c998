"""The milestone report: figures and markdown rebuilt from a run folder's artefacts.

``record_model`` writes what a trained model contributes to a run (metrics, curves, sample
predictions); ``write_report`` reads the run folder and writes
``hyperparameter-optimization.md`` with its figures under ``images/``. Every number in the
text is read from the run's files and every figure carries the run's stamp (data, profile,
backend, hardware), so a report can never describe a run it did not come from.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.hpo.trial import finite_or_none
from seglib.pipeline import Run, open_run, read_json, write_json

REPORT_NAME = "hyperparameter-optimization.md"
IMAGES = "images"
SOURCES = "run"  # beside the report: copies of the run's metrics files its numbers come from
SOURCE_FILES = (
    "run.json", "data/summary.json", "baseline/metrics.json", "tuned/metrics.json",
    "hpo/trials.json", "hpo/best.json", "random/trials.json", "random/best.json",
)
METRICS_FILE = "metrics.json"
SAMPLES_FILE = "samples.npz"
N_SAMPLES = 10
SAMPLE_SEED = 0
NEGLIGIBLE_CHANGE = 0.01  # relative loss difference below which the report calls two models even
SEED_BEST_LOSS = 0.9069907069206238  # the seed report's best validation loss (its own data and split)


# ---------------------------------------------------------------------------------------
# Recording a trained model into the run folder


def record_model(folder, model, history: dict, arrays, params: dict, extra: dict | None = None) -> dict:
    """Evaluate ``model`` on train, validation and test; write metrics.json and samples.npz.

    ``arrays`` has x_train, y_train, x_val, y_val, x_test, y_test and images_val (uint8).
    The precision-recall curve and the sample predictions come from the validation set,
    as in the seed report; IoU is also measured on the held-out test set.
    """
    from seglib.metrics import evaluate, pr_curve

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {"params": params, "history": {k: [float(v) for v in vs] for k, vs in history.items()}, **(extra or {})}
    for split in ("train", "val", "test"):
        x, y = getattr(arrays, f"x_{split}"), getattr(arrays, f"y_{split}")
        record[split] = evaluate(model, x, y) if len(x) else None
    probs = predict(model, arrays.x_val)
    record["pr_curve"] = pr_curve(arrays.y_val, probs)
    write_json(folder / METRICS_FILE, record)
    pick = sample_indices(len(arrays.x_val))
    np.savez_compressed(
        folder / SAMPLES_FILE,
        indices=pick,
        images=arrays.images_val[pick],
        labels=np.asarray(arrays.y_val)[pick].astype(np.uint8),
        predictions=probs[pick].argmax(-1).astype(np.uint8),
    )
    return record


def predict(model, x, batch_size: int = 16) -> np.ndarray:
    """Softmax outputs in batches, as float32 numpy."""
    parts = [np.asarray(model.predict_on_batch(x[i : i + batch_size]), dtype=np.float32) for i in range(0, len(x), batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0,), np.float32)


def sample_indices(n: int, k: int = N_SAMPLES, seed: int = SAMPLE_SEED) -> np.ndarray:
    """The same ``k`` validation patches for every model of a run (sorted, deterministic)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=min(k, n), replace=False))


# ---------------------------------------------------------------------------------------
# Reading the run


@dataclass
class RunArtefacts:
    """Everything the report reads from one run folder."""

    run: Run
    data: dict
    baseline: dict
    tuned: dict
    hpo: dict  # {"trials": [...], "best": {...}}
    random: dict | None
    baseline_samples: dict
    tuned_samples: dict


def load_artefacts(run_dir) -> RunArtefacts:
    """Read the artefacts notebooks 01-03 wrote; a missing one names the notebook to run."""
    run = open_run(run_dir)
    out = run.out_dir
    random_dir = out / "random"
    return RunArtefacts(
        run=run,
        data=read_json(out / "data" / "summary.json", "data summary", "notebooks/01_data"),
        baseline=read_json(out / "baseline" / METRICS_FILE, "baseline metrics", "notebooks/02_baseline"),
        tuned=read_json(out / "tuned" / METRICS_FILE, "tuned model metrics", "notebooks/03_hyperband_hpo"),
        hpo=load_experiment(out / "hpo"),
        random=load_experiment(random_dir) if (random_dir / "trials.json").is_file() else None,
        baseline_samples=dict(np.load(out / "baseline" / SAMPLES_FILE)),
        tuned_samples=dict(np.load(out / "tuned" / SAMPLES_FILE)),
    )


def load_experiment(folder) -> dict:
    """An experiment's export (``trials.json`` + ``best.json``), trials normalised by :func:`trial_row`."""
    folder = Path(folder)
    trials = read_json(folder / "trials.json", "experiment trials", "notebooks/03_hyperband_hpo")
    if isinstance(trials, dict):
        trials = trials.get("trials", [])
    best = read_json(folder / "best.json", "best configuration", "notebooks/03_hyperband_hpo")
    return {"trials": [trial_row(t) for t in trials], "best": best, "folder": str(folder)}


def _first(record: dict, *names, default=None):
    for name in names:
        if name in record and record[name] is not None:
            return record[name]
    return default


NO_RESULT = ("DIVERGED", "FAILED", "INTERRUPTED", "USER_CANCELED", "EARLY_STOPPED", "SYS_CANCELED")


def trial_row(trial: dict) -> dict:
    """One exported trial in the fields the report uses (tolerates the exporter's aliases)."""
    final = _first(trial, "final", "result", "metrics", default={})
    value = _first(trial, "value", "best_val_loss", "val_loss", "default", default=None)
    if value is None and isinstance(final, dict):
        value = _first(final, "default", "val_loss", "loss")
    elif value is None and isinstance(final, (int, float)):
        value = final
    curve = _first(trial, "curve", "intermediate", "val_loss_curve", default=[]) or []
    if curve and isinstance(curve[0], dict):
        curve = [_first(c, "default", "val_loss", "value") for c in curve]
    budget = _first(trial, "budget", "trial_budget", default=None)
    status = str(_first(trial, "status", default="SUCCEEDED"))
    if status.upper() in NO_RESULT:
        value = None  # a diverged trial's finite penalty is for NNI's ranking, not a loss to plot
    return {
        "id": str(_first(trial, "trial_id", "id", "trialJobId", default="?")),
        "config": str(_first(trial, "config_id", "parameter_id", "config", default=_first(trial, "trial_id", "id", default="?"))),
        "params": _first(trial, "params", "parameters", "hyperparameters", default={}),
        "bracket": _first(trial, "s", "bracket", default=None),  # HyperBand's s (s_max first)
        "rung": _first(trial, "rung", default=None),
        "budget": int(budget) if budget is not None else None,
        "epochs": int(_first(trial, "epochs_trained", "epochs", default=0) or 0),
        "resumed_from": int(_first(trial, "resumed_from", "resume_from", "initial_epoch", "start_epoch", default=0) or 0),
        "status": status,
        "seconds": float(_first(trial, "seconds", "duration_s", "duration", default=0.0) or 0.0),
        "value": finite_or_none(value),
        "curve": [finite_or_none(v) for v in curve],
        "order": _first(trial, "sequence", "order", "start_time", "started", default=None),
        "start_time": _first(trial, "start_time", default=None),
        "end_time": _first(trial, "end_time", default=None),
        "final": final if isinstance(final, dict) else {},
    }


def best_trial(trials: list[dict]) -> dict | None:
    """The trial with the lowest finite value."""
    scored = [t for t in trials if t["value"] is not None]
    return min(scored, key=lambda t: t["value"]) if scored else None


def compute_summary(trials: list[dict]) -> dict:
    """Trials, epochs and seconds an experiment spent, by status."""
    statuses: dict[str, int] = {}
    for t in trials:
        statuses[t["status"]] = statuses.get(t["status"], 0) + 1
    return {
        "trials": len(trials),
        "epochs": sum(t["epochs"] for t in trials),
        "seconds": sum(t["seconds"] for t in trials),
        "statuses": statuses,
    }


def best_so_far(trials: list[dict]) -> tuple[list[int], list[float]]:
    """Cumulative epochs against the best value seen so far, in the trials' order."""
    ordered = sorted(trials, key=lambda t: (t["order"] is None, str(t["order"]) if t["order"] is not None else "", t["id"]))
    epochs, values, spent, best = [], [], 0, math.inf
    for t in ordered:
        spent += t["epochs"]
        if t["value"] is not None:
            best = min(best, t["value"])
        if math.isfinite(best):
            epochs.append(spent)
            values.append(best)
    return epochs, values


# ---------------------------------------------------------------------------------------
# Figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig, path: Path, stamp: str) -> str:
    """Save ``fig`` with the run's stamp along its bottom edge; return the file name."""
    plt = _pyplot()
    fig.text(0.5, -0.01, stamp, ha="center", va="top", fontsize=7, color="0.35", wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def figure_successive_halving(bracket, eta: int, path: Path, stamp: str) -> str:
    """One bracket as successive halving: every configuration's bar ends where it was stopped."""
    plt = _pyplot()
    rungs = bracket.rungs
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    colors = plt.cm.viridis(np.linspace(0.15, 0.85, len(rungs)))
    for config in range(rungs[0].n_configs):
        reached = max(i for i, rung in enumerate(rungs) if config < rung.n_configs)
        previous = 0
        for i in range(reached + 1):
            ax.barh(config, rungs[i].budget - previous, left=previous, color=colors[i], height=0.8, edgecolor="white", linewidth=0.3)
            previous = rungs[i].budget
    for i, rung in enumerate(rungs):
        ax.axvline(rung.budget, color=colors[i], linestyle=":", linewidth=1)
        ax.text(rung.budget, 1.01, f"rung {i}\n{rung.n_configs}×{rung.budget} ep", transform=ax.get_xaxis_transform(), ha="center", va="bottom", fontsize=8)
    ax.set_xlabel("epochs trained (budget)")
    ax.set_ylabel("configuration")
    ax.invert_yaxis()
    fig.suptitle(f"Successive halving in bracket s = {bracket.s}: keep the best 1/{eta} at each rung", y=1.06)
    return save_figure(fig, path, stamp)


def figure_brackets(schedule, max_budget: int, eta: int, path: Path, stamp: str) -> str:
    """Every bracket of one HyperBand pass: configurations per rung, labelled with their budget."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(schedule), figsize=(2.4 * len(schedule) + 1, 3.2), sharey=True, squeeze=False)
    for ax, bracket in zip(axes[0], schedule):
        n = [r.n_configs for r in bracket.rungs]
        ax.bar(range(len(n)), n, color=plt.cm.viridis(np.linspace(0.15, 0.85, len(n))))
        for i, rung in enumerate(bracket.rungs):
            ax.text(i, rung.n_configs, f"{rung.n_configs}×{rung.budget}", ha="center", va="bottom", fontsize=8)
        ax.set_xticks(range(len(n)), [str(r.budget) for r in bracket.rungs])
        ax.set_xlabel("budget (epochs)")
        ax.set_title(f"bracket s={bracket.s}\n{bracket.n_trials} trials, {bracket.epochs(True)} ep", fontsize=9)
    axes[0][0].set_ylabel("configurations")
    fig.suptitle(f"HyperBand brackets for R = {max_budget}, η = {eta}", fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, stamp)


def figure_trials(trials: list[dict], path: Path, stamp: str) -> str:
    """The run's own trials: final validation loss by budget, one panel per bracket, promotions joined."""
    plt = _pyplot()
    groups = sorted({t["bracket"] for t in trials if t["bracket"] is not None}, reverse=True) or [None]
    unplaced = sum(1 for t in trials if t["bracket"] is None)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(3.2 * max(len(groups), 1) + 1, 3.4), sharey=True, squeeze=False)
    for ax, bracket in zip(axes[0], groups):
        members = [t for t in trials if t["bracket"] == bracket]
        by_config: dict[str, list[dict]] = {}
        for t in members:
            by_config.setdefault(t["config"], []).append(t)
        for config_trials in by_config.values():
            points = sorted((t["budget"] or t["epochs"], t["value"]) for t in config_trials if t["value"] is not None)
            if len(points) > 1:
                ax.plot(*zip(*points), color="0.6", linewidth=0.8, zorder=1)
        done = [t for t in members if t["value"] is not None]
        failed = [t for t in members if t["value"] is None]
        ax.scatter([t["budget"] or t["epochs"] for t in done], [t["value"] for t in done], s=18, zorder=2, label="trial")
        if failed:
            ax.scatter([t["budget"] or t["epochs"] for t in failed], [np.nan] * len(failed), marker="x", color="red")
            ax.text(0.02, 0.02, f"{len(failed)} without a result", transform=ax.transAxes, fontsize=8, color="red")
        budgets = sorted({t["budget"] for t in members if t["budget"]})
        if budgets and max(budgets) / max(min(budgets), 1) >= 9:
            ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(f"bracket s={bracket if bracket is not None else '?'}: {len(members)} trials", fontsize=9)
        ax.set_xlabel("budget (epochs)")
    axes[0][0].set_ylabel("validation loss (best epoch)")
    note = f"; {unplaced} trial(s) without a bracket (lost before HyperBand placed them) not shown" if unplaced and groups != [None] else ""
    fig.suptitle(f"This run's HyperBand trials by bracket and rung (lines join a promoted configuration){note}", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, stamp)


def figure_search_comparison(hyperband: list[dict], random: list[dict] | None, path: Path, stamp: str) -> str:
    """Best validation loss so far against epochs spent, HyperBand and random search."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, trials, style in (("HyperBand", hyperband, "-"), ("random search", random, "--")):
        if trials:
            x, y = best_so_far(trials)
            ax.step(x, y, style, where="post", label=f"{name} ({len(trials)} trials)")
    ax.set_xlabel("epochs spent (cumulative)")
    ax.set_ylabel("best validation loss so far")
    ax.set_title("HyperBand against random search at equal budget")
    ax.legend()
    return save_figure(fig, path, stamp)


def figure_loss(tuned: dict, baseline: dict, path: Path, stamp: str) -> str:
    """Training and validation loss against epochs: the tuned model, the baseline superimposed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, record, style in (("tuned", tuned, "-"), ("baseline (pre-HPO)", baseline, "--")):
        history = record["history"]
        for key, color in (("loss", "tab:blue"), ("val_loss", "tab:orange")):
            values = history.get(key) or []
            label = f"{name} {'training' if key == 'loss' else 'validation'}"
            ax.plot(range(1, len(values) + 1), values, style, color=color, label=label, alpha=1.0 if name == "tuned" else 0.6)
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + focal)")
    ax.set_title("Training and validation loss vs epochs")
    ax.legend(fontsize=8)
    return save_figure(fig, path, stamp)


def figure_pr(tuned: dict, baseline: dict, path: Path, stamp: str) -> str:
    """Precision-recall curve on the validation set (pixels x classes pooled, as the original)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, record, style in (("tuned", tuned, "-"), ("baseline", baseline, "--")):
        pr = record.get("pr_curve") or {}
        if pr:
            ax.plot(pr["recall"], pr["precision"], style, label=f"{name} (AP {pr['average_precision']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall curve, validation set")
    ax.legend()
    return save_figure(fig, path, stamp)


def figure_iou(baseline: dict, tuned: dict, class_names, split: str, path: Path, stamp: str) -> str:
    """Per-class IoU of baseline and tuned model on one split."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.38
    x = np.arange(len(class_names))
    for offset, (name, record) in zip((-width / 2, width / 2), (("baseline", baseline), ("tuned", tuned))):
        values = [v if v is not None else 0.0 for v in record[split]["per_class_iou"]]
        ax.bar(x + offset, values, width, label=f"{name} (mean {record[split]['mean_iou']:.3f})")
    ax.set_xticks(x, class_names)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-class IoU on the {SPLIT_NAMES[split]}")
    ax.legend(fontsize=8)
    return save_figure(fig, path, stamp)


def colorize(labels: np.ndarray, palette) -> np.ndarray:
    """Class indices to RGB with the dataset's own mask colours."""
    colors = np.array([_rgb(c) for c in palette], dtype=np.uint8)
    return colors[np.clip(labels, 0, len(colors) - 1)]


def _rgb(color) -> tuple[int, int, int]:
    if isinstance(color, str):
        color = color.lstrip("#")
        return tuple(int(color[i : i + 2], 16) for i in (0, 2, 4))
    return tuple(int(c) for c in color)


def figure_samples(samples: dict, palette, class_names, path: Path, stamp: str) -> str:
    """Validation patches as rows of image | mask | prediction."""
    plt = _pyplot()
    n = len(samples["images"])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for row in range(n):
        panels = (samples["images"][row], colorize(samples["labels"][row], palette), colorize(samples["predictions"][row], palette))
        for col, (panel, title) in enumerate(zip(panels, ("image", "mask", "prediction"))):
            ax = axes[row][col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
        axes[row][0].set_ylabel(f"val #{int(samples['indices'][row])}", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(_rgb(c)) / 255) for c in palette]
    fig.legend(handles, class_names, loc="lower center", ncol=len(class_names), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return save_figure(fig, path, stamp)


# ---------------------------------------------------------------------------------------
# The markdown


SPLIT_NAMES = {"train": "training set", "val": "validation set", "test": "held-out test set"}


def fmt(value, digits: int = 4) -> str:
    """How the report writes a metric (tests format metrics files the same way to compare)."""
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
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


def _better(tuned: float | None, baseline: float | None) -> str:
    if tuned is None or baseline is None:
        return "one of them has no finite loss"
    change = (tuned - baseline) / abs(baseline) if baseline else 0.0
    if abs(change) < NEGLIGIBLE_CHANGE:
        return f"within {NEGLIGIBLE_CHANGE:.0%} of each other: no meaningful difference in this run"
    if change < 0:
        return f"{-change:.1%} lower: the tuning paid off on validation"
    return f"{change:.1%} higher: this run's search did not beat the initial parameters"


def _pretty_space(space: dict) -> str:
    return "{\n" + ",\n".join(f"    {k!r}: {v!r}" for k, v in space.items()) + "\n}"


def _params_block(params: dict) -> str:
    lines = ",\n".join(f"    {k!r}: {v!r}" for k, v in params.items())
    return "```python\n{\n" + lines + "\n}\n```"


def _table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def _image(name: str, alt: str) -> str:
    return f"![{alt}]({IMAGES}/{name})"


def section_hyperband(a: RunArtefacts, figures: dict) -> str:
    """"HyperBand explained": the method, with figures drawn from the run's own schedule."""
    from seglib.hpo.hyperband import brackets, pass_epochs

    p = a.run.profile
    R, eta = p.max_budget, p.eta
    schedule = brackets(R, eta)
    totals = pass_epochs(R, eta)
    top = schedule[0]
    rows = [[b.s, " → ".join(f"{r.n_configs}×{r.budget}" for r in b.rungs), b.n_trials, b.epochs(False), b.epochs(True)] for b in schedule]
    trials = a.hpo["trials"]
    spent = compute_summary(trials)
    resumed = sum(1 for t in trials if t["resumed_from"] > 0)
    full = pass_epochs(60, 3)
    original_table = ""
    if (R, eta) != (60, 3):
        original_rows = [[b.s, " → ".join(f"{r.n_configs}×{r.budget}" for r in b.rungs), b.n_trials, b.epochs(False), b.epochs(True)] for b in brackets(60, 3)]
        original_table = (
            "For comparison, the original's (and the `full` profile's) R = 60, η = 3:\n\n"
            + _table(["bracket s", "rungs (configs × epochs)", "trials", "epochs from scratch", "epochs with warm start"], original_rows)
            + "\n"
        )
    return f"""# Explanation of HyperBand HPO

Training a U-Net to convergence is expensive, and most hyperparameter settings are visibly
poor long before they converge: a diverging learning rate or a weak activation shows up in the
first few epochs. **HyperBand** (Li et al., 2018, *JMLR* 18(185)) spends its budget on that
observation. It treats the number of training epochs as a *resource* and asks two questions at
once: which configurations are promising, and how early can we tell?

## Successive halving

The building block is **successive halving**. Sample `n` configurations at random from the
search space, train each for a small budget `r` epochs, keep the best `1/η` of them (here
η = {eta}) by validation loss, train the survivors `η` times longer, and repeat until one
configuration has been trained for the maximum budget `R`. Each step is a **rung**. Because the
number of survivors falls by `η` while the budget rises by `η`, every rung costs about the same
number of epochs, and the total cost of the bracket is only a few times that of training one
configuration fully — yet `n` configurations were looked at.

{_image(figures["halving"], "successive halving")}

*The largest bracket of this run (R = {R}, η = {eta}): {top.rungs[0].n_configs} configurations
start at {top.rungs[0].budget} epoch(s); each rung keeps the best 1/{eta}. A bar ends where its
configuration was stopped.*

Successive halving has one weakness: the starting pair `(n, r)` is a bet. Many configurations
at a tiny budget find good settings quickly if early losses predict final losses, but throw
away slow starters (a low learning rate, for instance) that would have won. Few
configurations at a large budget are safe but see little of the search space.

## Brackets: hedging the bet

HyperBand does not choose: it runs successive halving several times with different
trade-offs, one **bracket** per `s = s_max … 0`, where `s_max = ⌊log_η R⌋`. Bracket `s`
starts `n = ⌈(s_max + 1)/(s + 1) · η^s⌉` configurations at `r = R·η^(−s)` epochs. The most
aggressive bracket (`s = s_max`) is pure exploration; the last (`s = 0`) is plain random
search at the full budget `R`. Every bracket costs about the same, so the hedge costs at most
a factor `s_max + 1` over the best single choice. For this run, R = {R} and η = {eta} give
`s_max = {top.s}`:

{_table(["bracket s", "rungs (configs × epochs)", "trials", "epochs from scratch", "epochs with warm start"], rows)}

{_image(figures["brackets"], "HyperBand brackets")}

One pass hands out **{totals['trials']} trials**. Trained from scratch at every rung, as NNI's
built-in HyperBand does, it costs {totals['from_scratch']:,} epochs; seglib resumes a promoted
configuration from its own checkpoint of the previous rung (**warm start**), so it trains only
the extra epochs: {totals['warm_start']:,} epochs. At the original's R = 60, η = 3 the same pass
is {full['trials']} trials and {full['from_scratch']:,} against {full['warm_start']:,} epochs. The
original project ran NNI's HyperBand but its trials ignored the budget and trained 50 epochs
every time, so HyperBand bought it nothing over random search; here the budget is the number of
epochs a trial trains.

{original_table}
## How seglib runs it on NNI

NNI is the engine: its manager starts trial processes, keeps their results and serves the
web UI; the tuner that decides *what* to run is seglib's HyperBand, running inside NNI's
dispatcher. Each trial receives a configuration and a budget `TRIAL_BUDGET`, trains that many
epochs in all (one budget unit = one epoch), reports its validation loss after every epoch and
its best validation loss at the end. A configuration promoted to the next rung resumes from
its own checkpoint, with its optimizer state, and trains only the difference. A trial whose
loss becomes NaN stops at once and reports a finite penalty, so it ranks last instead of
being promoted; a crashed trial is recorded with its error and its rung goes on with fewer
survivors. HyperBand's state is written after every change, so an interrupted experiment
resumes without training any (configuration, budget) pair twice.

## This run's trials

{_image(figures["trials"], "trials by bracket and rung")}

*Each point is one trial: a configuration trained to a rung's budget, scored by its best
validation loss. Grey lines join a configuration promoted from one rung to the next.*

This run finished **{spent['trials']} trials** ({_statuses(spent['statuses'])}), trained
**{spent['epochs']:,} epochs** in all ({resumed} of them resumed from a previous rung's
checkpoint) and spent {fmt_seconds(spent['seconds'])} of trial time{_wall_text(trials)}.
"""


def wall_seconds(trials: list[dict]) -> float | None:
    """Seconds from the first trial's start to the last trial's end (Unix times, in seconds)."""
    starts = [t["start_time"] for t in trials if t.get("start_time")]
    ends = [t["end_time"] for t in trials if t.get("end_time")]
    return max(ends) - min(starts) if starts and ends else None


def _wall_text(trials: list[dict]) -> str:
    wall = wall_seconds(trials)
    return f" over {fmt_seconds(wall)} of wall time" if wall else ""


def _statuses(statuses: dict) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in sorted(statuses.items())) or "none"


def section_results(a: RunArtefacts, figures: dict) -> str:
    """Every section of the seed report, filled from this run."""
    from seglib.hpo.hyperband import search_space

    p = a.run.profile
    tuned, baseline = a.tuned, a.baseline
    best = a.hpo["best"]
    best_params = _first(best, "params", "parameters", default=tuned["params"])
    best_value = _first(best, "value", "val_loss", "default", default=None)
    if best_value is None:
        top = best_trial(a.hpo["trials"])
        best_value = top["value"] if top else None
    space = _first(a.hpo["best"], "search_space", default=None) or search_space()
    trials_cap = p.max_trials if p.max_trials is not None else "one full HyperBand pass"
    return f"""# Hyperparameter Optimization Performance Results (with HyperBand minimizing loss)

## Search Space

The search space is the original's: batch size, learning rate and the activation of every
3×3 convolution (`None` is linear).

```python
search_space = {_pretty_space(space)}
```

## Initial parameters

The pre-HPO baseline trains with the profile's initial values (the original's seed repo):

{_params_block(baseline["params"])}

## Experiment settings

```python
tuner = "seglib HyperBand on NNI"   # minimising validation loss
max_budget_R = {p.max_budget}            # epochs
eta = {p.eta}
max_trial_number = {trials_cap!r}
trial_concurrency = {p.concurrency}
precision = {p.precision!r}               # every model of the run: baseline, trials, tuned
```

## Best Hyperparameters

{_params_block(best_params)}

HyperBand's best trial reached a validation loss of **{fmt(best_value)}**. Retrained with the
baseline's {p.epochs} epochs, the tuned model's final validation loss is
**{fmt(tuned['val']['loss'])}** against the baseline's **{fmt(baseline['val']['loss'])}**
({_better(tuned['val']['loss'], baseline['val']['loss'])}).
(The seed reported {SEED_BEST_LOSS:.4f} on its own data, patches and split; the numbers are not
comparable across runs with different data, profile or split.)

## 10 Segmented Images from the Validation Set

Each row is a validation patch: the image, the human mask and the tuned model's prediction,
in the dataset's own class colours.

{_image(figures["samples"], "validation image | mask | prediction")}

## Training and Validation Loss vs. Epochs

The tuned model's curves, with the pre-HPO baseline's superimposed (dashed).

{_image(figures["loss"], "loss vs epochs")}

## Precision and Recall Curve

Precision against recall on the validation set, every pixel and class pooled as the original
computed it with scikit-learn's `precision_recall_curve` (on a deterministic sample of
{tuned['pr_curve']['pixels']:,} pixels × 6 classes).

{_image(figures["pr"], "precision-recall curve")}

## Precision and Recall Values

Keras precision and recall (threshold 0.5 on the softmax), as the original:

```
Training Precision:	{fmt(tuned['train']['precision'])}
Training Recall:	{fmt(tuned['train']['recall'])}
Validation Precision:	{fmt(tuned['val']['precision'])}
Validation Recall:	{fmt(tuned['val']['recall'])}
```

Baseline for comparison: training precision {fmt(baseline['train']['precision'])}, recall
{fmt(baseline['train']['recall'])}; validation precision {fmt(baseline['val']['precision'])},
recall {fmt(baseline['val']['recall'])}.
"""


def section_beyond(a: RunArtefacts, figures: dict, class_names) -> str:
    """What the seed lacks: IoU on held-out data, HyperBand vs random search, compute, stamp."""
    tuned, baseline = a.tuned, a.baseline
    split = "test" if tuned.get("test") else "val"
    iou_rows = [[name, fmt(b), fmt(t)] for name, b, t in zip(class_names, baseline[split]["per_class_iou"], tuned[split]["per_class_iou"])]
    iou_rows.append(["**mean IoU**", f"**{fmt(baseline[split]['mean_iou'])}**", f"**{fmt(tuned[split]['mean_iou'])}**"])
    hb = compute_summary(a.hpo["trials"])
    hb_best = best_trial(a.hpo["trials"])
    comparison = ""
    if a.random:
        rs = compute_summary(a.random["trials"])
        rs_best = best_trial(a.random["trials"])
        rows = [
            ["HyperBand", hb["trials"], f"{hb['epochs']:,}", fmt_seconds(hb["seconds"]), fmt(hb_best["value"] if hb_best else None)],
            ["random search", rs["trials"], f"{rs['epochs']:,}", fmt_seconds(rs["seconds"]), fmt(rs_best["value"] if rs_best else None)],
        ]
        header = ["tuner", "trials", "epochs", "trial time", "best validation loss"]
        walls = [wall_seconds(trials) for trials in (a.hpo["trials"], a.random["trials"])]
        if any(walls):
            header.insert(4, "wall time")
            for row, wall in zip(rows, walls):
                row.insert(4, fmt_seconds(wall) if wall else "n/a")
        comparison = _table(header, rows)
    else:
        comparison = "*Random search was not run for this run (its folder `random/` is absent).*"
    work = [
        ("baseline training", 1, _epochs_of(baseline), baseline.get("seconds", 0.0)),
        ("HyperBand trials", hb["trials"], hb["epochs"], hb["seconds"]),
    ]
    if a.random:
        work.append(("random-search trials", rs["trials"], rs["epochs"], rs["seconds"]))
    work.append(("tuned model retraining", 1, _epochs_of(tuned), tuned.get("seconds", 0.0)))
    compute_rows = [[name, runs, f"{epochs:,}", fmt_seconds(seconds)] for name, runs, epochs, seconds in work]
    total = [sum(w[i] for w in work) for i in (1, 2, 3)]
    compute_rows.append(["**total**", f"**{total[0]}**", f"**{total[1]:,}**", f"**{fmt_seconds(total[2])}**"])
    s = a.run.stamp
    d = a.data
    device = "GPU" if s["hardware"].startswith("GPU") else "CPU"
    return f"""# Beyond the seed report

## Per-class IoU on the {SPLIT_NAMES[split]}

The seed scored its model on the same patches HyperBand selected on, and those patches shared
source images with the training patches. Here whole tiles are held out (split `{d.get('split', a.run.profile.split)}`:
{d.get('counts', {}).get('train', '?')} training, {d.get('counts', {}).get('val', '?')} validation and
{d.get('counts', {}).get('test', '?')} test patches); neither training nor HPO saw the test tiles.

{_table(["class", "baseline IoU", "tuned IoU"], iou_rows)}

{_image(figures["iou"], "per-class IoU")}

## HyperBand against random search at equal budget

The same search space searched by NNI's random-search tuner with the epochs HyperBand spent
(R = {a.run.profile.max_budget}, η = {a.run.profile.eta}); lower is better:

{comparison}

{_image(figures["comparison"], "HyperBand vs random search")}

## Compute spent

Seconds are wall-clock seconds of each training process on the run's {device}
({s['hardware']}); trials that ran concurrently overlap in time.

{_table(["work", "runs", "epochs", "seconds"], compute_rows)}

## Stamp

| | |
|---|---|
| data | {s['data_label']} |
| patches | {_patches_text(d, a.run.profile.patch_size)} |
| profile | {s['profile']} |
| Keras backend | {s['backend']} |
| hardware | {s['hardware']} |
| Python / seglib | {s['python']} / {s['seglib']} |
| run started | {s['started']} |

Rebuild this report (executes notebooks 01→04, then rewrites `docs/`):

```bash
{rebuild_command(a.run)}
```
"""


def _patches_text(data: dict, patch_size: int) -> str:
    text = f"{data.get('patches', '?')} of {patch_size}×{patch_size} px"
    prepared = data.get("patches_prepared")
    if prepared and prepared != data.get("patches"):
        text += f" (a fixed random subsample of the {prepared:,} the data gives)"
    return text + (f" from {data['pairs']} image/mask pairs" if data.get("pairs") else "")


def _epochs_of(record: dict) -> int:
    return int(record.get("epochs_trained") or len(record["history"].get("loss", [])))


def _repo_relative(path: str) -> str:
    """``path`` relative to the repository checkout when that is shorter (``../shared/...``)."""
    root = Path(__file__).resolve().parents[1]
    try:
        relative = os.path.relpath(path, root)
    except ValueError:  # another drive (Windows)
        return path
    return relative if len(relative) < len(str(path)) else str(path)


def rebuild_command(run: Run) -> str:
    """The command that rebuilds this report from scratch."""
    parts = ["seglib run", f"--profile {run.profile.name}", "--out runs/report"]
    if run.data:
        parts.append(f'--data "{_repo_relative(run.data)}"')
    parts += [f"-p {k}={v!r}" if isinstance(v, str) else f"-p {k}={v}" for k, v in run.stamp.get("overrides", {}).items()]
    return " ".join(parts + ["--docs docs"])


def _scope_note(run: Run) -> str:
    """Say plainly when the run is not the original's full settings on a GPU."""
    p = run.profile
    device = "GPU" if run.stamp["hardware"].startswith("GPU") else "CPU"
    if p.name == "full" and not run.stamp.get("overrides"):
        return ""
    return (
        f"\n>\n> **This is a {device} run with a reduced profile** ({p.patch_size}×{p.patch_size} patches"
        f"{'' if p.max_patches is None else f', {p.max_patches} of them'}, a U-Net of {p.base_filters} base filters and"
        f" depth {p.depth}, {p.epochs} baseline epochs, R = {p.max_budget}, η = {p.eta}), not the original's"
        " settings (256×256 patches, 16 filters, depth 4, 50 epochs, R = 60, η = 3, `--profile full`):"
        " its numbers describe this run and are not comparable with the seed's."
    )


def write_report(run_dir, docs_dir=None) -> Path:
    """Write ``hyperparameter-optimization.md`` and its figures for the run in ``run_dir``."""
    from seglib.data import CLASS_NAMES, PALETTE
    from seglib.hpo.hyperband import brackets

    a = load_artefacts(run_dir)
    docs = Path(docs_dir) if docs_dir else a.run.out_dir / "docs"
    images = docs / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    stamp = a.run.label
    p = a.run.profile
    schedule = brackets(p.max_budget, p.eta)
    split = "test" if a.tuned.get("test") else "val"
    palette = list(PALETTE.values()) if isinstance(PALETTE, dict) else list(PALETTE)
    names = list(CLASS_NAMES)
    figures = {
        "halving": figure_successive_halving(schedule[0], p.eta, images / "successive_halving.png", stamp),
        "brackets": figure_brackets(schedule, p.max_budget, p.eta, images / "brackets.png", stamp),
        "trials": figure_trials(a.hpo["trials"], images / "trials_by_rung.png", stamp),
        "samples": figure_samples(a.tuned_samples, palette, names, images / "segmented_validation.png", stamp),
        "loss": figure_loss(a.tuned, a.baseline, images / "loss.png", stamp),
        "pr": figure_pr(a.tuned, a.baseline, images / "pr.png", stamp),
        "iou": figure_iou(a.baseline, a.tuned, names, split, images / "iou.png", stamp),
        "comparison": figure_search_comparison(a.hpo["trials"], a.random["trials"] if a.random else None, images / "hyperband_vs_random.png", stamp),
    }
    header = (
        "<!-- Generated by seglib.report from a run folder; do not edit by hand. "
        "The command that rebuilds it is at the end. -->\n\n"
        f"> Run: {stamp}.{_scope_note(a.run)}\n\n"
    )
    text = header + "\n".join([section_hyperband(a, figures), section_results(a, figures), section_beyond(a, figures, names)])
    path = docs / REPORT_NAME
    path.write_text(text)
    copy_sources(a.run.out_dir, docs / SOURCES)
    return path


def copy_sources(run_dir: Path, target: Path) -> None:
    """Copy the small JSON files the report's numbers come from next to it (docs/run/).

    The run folder is not committed; these files are, so a test can check the committed
    report's numbers against the files they came from.
    """
    import shutil

    for name in SOURCE_FILES:
        source = Path(run_dir) / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target / name)


# ---------------------------------------------------------------------------------------
# Small views the notebooks show


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


def figure_class_shares(summary: dict, path, stamp: str) -> Path:
    """Per-class pixel shares of each split (01_data)."""
    plt = _pyplot()
    shares = summary["class_shares"]
    names = list(next(iter(shares.values())))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(shares), 1)
    for k, (split, values) in enumerate(shares.items()):
        x = np.arange(len(names)) + (k - (len(shares) - 1) / 2) * width
        ax.bar(x, [values[n] for n in names], width, label=f"{split} ({summary['counts'][split]} patches)")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("share of pixels")
    ax.set_title(f"Class shares per split ({summary['split']} split)")
    ax.legend(fontsize=8)
    path = Path(path)
    save_figure(fig, path, stamp)
    return path


def figure_history(record: dict, path, stamp: str) -> Path:
    """Training and validation loss of one model against epochs (02_baseline)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        values = record["history"].get(key) or []
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + focal)")
    ax.legend()
    path = Path(path)
    save_figure(fig, path, stamp)
    return path


def metrics_table(record: dict) -> None:
    """Print loss, accuracy, precision, recall and mean IoU of one model per split."""
    keys = ("loss", "accuracy", "precision", "recall", "mean_iou")
    lines = ["split  " + "".join(f"{k:>11}" for k in keys)]
    for split in ("train", "val", "test"):
        if record.get(split):
            lines.append(f"{split:<7}" + "".join(f"{fmt(record[split].get(k)):>11}" for k in keys))
    print("\n".join(lines))


def schedule_table(max_budget: int, eta: int) -> None:
    """Print the HyperBand brackets for R and η (03_hyperband_hpo)."""
    from seglib.hpo.hyperband import brackets, pass_epochs

    lines = [f"HyperBand R = {max_budget}, η = {eta}"]
    for b in brackets(max_budget, eta):
        rungs = " -> ".join(f"{r.n_configs}x{r.budget}ep" for r in b.rungs)
        lines.append(f"  bracket s={b.s}: {rungs}  ({b.n_trials} trials, {b.epochs(True)} epochs with warm start)")
    totals = pass_epochs(max_budget, eta)
    lines.append(f"  one pass: {totals['trials']} trials, {totals['warm_start']} epochs (from scratch: {totals['from_scratch']})")
    print("\n".join(lines))


def experiment_summary(experiment: dict) -> str:
    """Trials, epochs, seconds and best value of one exported experiment."""
    s = compute_summary(experiment["trials"])
    top = best_trial(experiment["trials"])
    text = (
        f"{s['trials']} trials ({_statuses(s['statuses'])}), {s['epochs']} epochs, "
        f"{fmt_seconds(s['seconds'])} of trial time; best validation loss {fmt(top['value'] if top else None)}"
        + (f" with {top['params']}" if top else "")
    )
    return text
