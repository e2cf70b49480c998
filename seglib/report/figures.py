"""The report's figures, each saved with the run's stamp along its bottom edge.

Every function takes what it draws (records from ``seglib.artifacts``, the schedule from
``seglib.hpo.hyperband``) and the path to save to, and returns the saved file's name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglib.artifacts import ModelRecord, TrialRow
from seglib.palette import CLASS_NAMES, PALETTE
from seglib.report.numbers import SPLIT_NAMES, best_so_far


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
            ax.barh(
                config,
                rungs[i].budget - previous,
                left=previous,
                color=colors[i],
                height=0.8,
                edgecolor="white",
                linewidth=0.3,
            )
            previous = rungs[i].budget
    for i, rung in enumerate(rungs):
        ax.axvline(rung.budget, color=colors[i], linestyle=":", linewidth=1)
        ax.text(
            rung.budget,
            1.01,
            f"rung {i}\n{rung.n_configs}×{rung.budget} ep",
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="bottom",
            fontsize=8,
        )
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


def figure_trials(trials: list[TrialRow], path: Path, stamp: str, tuner: str = "HyperBand") -> str:
    """The run's own trials: final validation loss by budget, one panel per bracket, promotions joined."""
    plt = _pyplot()
    groups = sorted({t.bracket for t in trials if t.bracket is not None}, reverse=True) or [None]
    unplaced = sum(1 for t in trials if t.bracket is None)
    fig, axes = plt.subplots(
        1, max(len(groups), 1), figsize=(3.2 * max(len(groups), 1) + 1, 3.4), sharey=True, squeeze=False
    )
    for ax, bracket in zip(axes[0], groups):
        members = [t for t in trials if t.bracket == bracket]
        by_config: dict[str, list[TrialRow]] = {}
        for t in members:
            by_config.setdefault(t.config_id, []).append(t)
        for config_trials in by_config.values():
            points = sorted((t.budget, t.value) for t in config_trials if t.value is not None)
            if len(points) > 1:
                ax.plot(*zip(*points), color="0.6", linewidth=0.8, zorder=1)
        done = [t for t in members if t.value is not None]
        failed = [t for t in members if t.value is None]
        ax.scatter([t.budget for t in done], [t.value for t in done], s=18, zorder=2, label="trial")
        if failed:
            ax.scatter([t.budget for t in failed], [np.nan] * len(failed), marker="x", color="red")
            ax.text(0.02, 0.02, f"{len(failed)} without a result", transform=ax.transAxes, fontsize=8, color="red")
        budgets = sorted({t.budget for t in members})
        if budgets and max(budgets) / max(min(budgets), 1) >= 9:
            ax.set_xscale("log")
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(f"bracket s={bracket if bracket is not None else '?'}: {len(members)} trials", fontsize=9)
        ax.set_xlabel("budget (epochs)")
    axes[0][0].set_ylabel("validation loss (best epoch)")
    note = (
        f"; {unplaced} trial(s) without a bracket (lost before {tuner} placed them) not shown"
        if unplaced and groups != [None]
        else ""
    )
    fig.suptitle(
        f"This run's {tuner} trials by bracket and rung (lines join a promoted configuration){note}", fontsize=10
    )
    fig.tight_layout()
    return save_figure(fig, path, stamp)


def figure_search_comparison(
    main: list[TrialRow], random: list[TrialRow] | None, path: Path, stamp: str, tuner: str = "HyperBand"
) -> str:
    """Best validation loss so far against epochs spent, the main search (``tuner``) and random search."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, trials, style in ((tuner, main, "-"), ("random search", random, "--")):
        if trials:
            x, y = best_so_far(trials)
            ax.step(x, y, style, where="post", label=f"{name} ({len(trials)} trials)")
    ax.set_xlabel("epochs spent (cumulative)")
    ax.set_ylabel("best validation loss so far")
    ax.set_title(f"{tuner} against random search at equal epochs")
    ax.legend()
    return save_figure(fig, path, stamp)


def figure_anytime(tuners: dict, axis: str, path: Path, stamp: str) -> str:
    """A study's anytime curves: per tuner the median best validation loss so far over seeds, its
    interquartile band shaded, against cumulative epochs (``axis`` "epochs") or wall seconds ("seconds")."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for row in tuners.values():
        curve = row["curves"][axis]
        if not curve["x"]:
            continue
        step = "post" if axis == "epochs" else None
        line = (ax.step if step else ax.plot)(
            curve["x"],
            curve["median"],
            **({"where": step} if step else {}),
            label=f"{row['title']} ({len(row['seeds'])} seeds)",
        )[0]
        ax.fill_between(
            curve["x"], curve["q1"], curve["q3"], color=line.get_color(), alpha=0.2, **({"step": step} if step else {})
        )
    ax.set_xlabel("epochs spent (cumulative)" if axis == "epochs" else "wall time since the search's start (s)")
    ax.set_ylabel("best validation loss so far")
    ax.set_title("Anytime performance: median and interquartile band over seeds")
    if axis == "epochs":
        _integer_ticks(ax)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:  # no tuner has a curve yet (its seeds share no point of the axis)
        ax.text(0.5, 0.5, "no curve yet", ha="center", va="center", transform=ax.transAxes)
    return save_figure(fig, path, stamp)


def figure_loss(tuned: ModelRecord, baseline: ModelRecord, path: Path, stamp: str) -> str:
    """Training and validation loss against epochs: the tuned model, the baseline superimposed."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, record, style in (("tuned", tuned, "-"), ("baseline (pre-HPO)", baseline, "--")):
        history = record.history
        for key, color in (("loss", "tab:blue"), ("val_loss", "tab:orange")):
            values = history.get(key) or []
            label = f"{name} {'training' if key == 'loss' else 'validation'}"
            ax.plot(
                range(1, len(values) + 1),
                values,
                style,
                color=color,
                label=label,
                alpha=1.0 if name == "tuned" else 0.6,
            )
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + focal)")
    ax.set_title("Training and validation loss vs epochs")
    ax.legend(fontsize=8)
    return save_figure(fig, path, stamp)


def figure_pr(tuned: ModelRecord, baseline: ModelRecord, path: Path, stamp: str) -> str:
    """Precision-recall curve on the validation set (pixels x classes pooled, as the original)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    for name, record, style in (("tuned", tuned, "-"), ("baseline", baseline, "--")):
        pr = record.pr_curve or {}
        if pr:
            ax.plot(pr["recall"], pr["precision"], style, label=f"{name} (AP {pr['average_precision']:.3f})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall curve, validation set")
    ax.legend()
    return save_figure(fig, path, stamp)


def figure_iou(baseline: ModelRecord, tuned: ModelRecord, split: str, path: Path, stamp: str) -> str:
    """Per-class IoU of baseline and tuned model on one split."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    width = 0.38
    x = np.arange(len(CLASS_NAMES))
    for offset, (name, record) in zip((-width / 2, width / 2), (("baseline", baseline), ("tuned", tuned))):
        scores = getattr(record, split)
        values = [v if v is not None else 0.0 for v in scores["per_class_iou"]]
        ax.bar(x + offset, values, width, label=f"{name} (mean {scores['mean_iou']:.3f})")
    ax.set_xticks(x, CLASS_NAMES)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title(f"Per-class IoU on the {SPLIT_NAMES[split]}")
    ax.legend(fontsize=8)
    return save_figure(fig, path, stamp)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Class indices to RGB with the dataset's own mask colours."""
    colours = np.array(list(PALETTE.values()), dtype=np.uint8)
    return colours[np.clip(labels, 0, len(colours) - 1)]


def figure_samples(samples: dict, path: Path, stamp: str) -> str:
    """Validation patches as rows of image | mask | prediction."""
    plt = _pyplot()
    n = len(samples["images"])
    fig, axes = plt.subplots(n, 3, figsize=(6.6, 2.2 * n), squeeze=False)
    for row in range(n):
        panels = (samples["images"][row], colorize(samples["labels"][row]), colorize(samples["predictions"][row]))
        for col, (panel, title) in enumerate(zip(panels, ("image", "mask", "prediction"))):
            ax = axes[row][col]
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
        axes[row][0].set_ylabel(f"val #{int(samples['indices'][row])}", fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(c) / 255) for c in PALETTE.values()]
    fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=len(CLASS_NAMES), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.02, 1, 1))
    return save_figure(fig, path, stamp)


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


def figure_history(record: ModelRecord, path, stamp: str) -> Path:
    """Training and validation loss of one model against epochs (02_baseline)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        values = record.history.get(key) or []
        ax.plot(range(1, len(values) + 1), values, marker="o", label=label)
    _integer_ticks(ax)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (Dice + focal)")
    ax.legend()
    path = Path(path)
    save_figure(fig, path, stamp)
    return path


def figure_whole_images(samples: dict, path: Path, stamp: str) -> str:
    """Whole held-out images as rows of image | human mask | prediction (blended windows)."""
    plt = _pyplot()
    count = len([k for k in samples if k.startswith("image_")])
    fig, axes = plt.subplots(count, 3, figsize=(9.6, 3.4 * count), squeeze=False)
    for row in range(count):
        for col, (part, title) in enumerate((("image", "image"), ("mask", "mask"), ("prediction", "prediction"))):
            ax = axes[row][col]
            ax.imshow(samples[f"{part}_{row}"], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(title)
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.array(c) / 255) for c in PALETTE.values()]
    fig.legend(handles, CLASS_NAMES, loc="lower center", ncol=len(CLASS_NAMES), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return save_figure(fig, path, stamp)
