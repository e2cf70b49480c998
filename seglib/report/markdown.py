"""The milestone report's text: prose from ``templates/*.md``, numbers from the run's records.

Every number is read from the run folder's artefacts and every setting from the run's
settings (``seglib.settings``), so the text can never describe a run it did not come from.
"""

from __future__ import annotations

import shlex
from importlib import resources
from string import Template

from seglib.artifacts import Experiment, ModelRecord, Run
from seglib.hpo.hyperband import Search, brackets, pass_epochs
from seglib.palette import CLASS_NAMES
from seglib.report.numbers import (
    SPLIT_NAMES,
    best_trial,
    fmt,
    fmt_seconds,
    spent,
    statuses_text,
    wall_seconds,
)
from seglib.settings import RECIPE, original

NEGLIGIBLE_CHANGE = 0.01  # relative loss difference below which the report calls two models even
# The seed report's own figures (its data, settings and split): what the report compares with.
SEED = {
    "val_loss": 0.9069907069206238,
    "train_precision": 0.8633995652198792,
    "train_recall": 0.8405570983886719,
    "val_precision": 0.8623082637786865,
    "val_recall": 0.8403835296630859,
}
IMAGES = "images"


def render(name: str, **values) -> str:
    """A template of ``templates/`` with ``values`` filled in (every placeholder must be given)."""
    text = resources.files("seglib.report").joinpath("templates", f"{name}.md").read_text()
    return Template(text).substitute(values)


def image(name: str, alt: str) -> str:
    return f"![{alt}]({IMAGES}/{name})"


def table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def params_block(params: dict) -> str:
    lines = ",\n".join(f"    {k!r}: {v!r}" for k, v in params.items())
    return "```python\n{\n" + lines + "\n}\n```"


def _bracket_rows(R: int, eta: int) -> list[list]:
    return [
        [b.s, " → ".join(f"{r.n_configs}×{r.budget}" for r in b.rungs), b.n_trials, b.epochs(False), b.epochs(True)]
        for b in brackets(R, eta)
    ]


BRACKET_HEADER = ["bracket s", "rungs (configs × epochs)", "trials", "epochs from scratch", "epochs with warm start"]
ENGINES_TEXT = {
    "nni": (
        "Microsoft NNI: its manager starts a process per trial, keeps their results and serves the web UI; "
        "seglib's tuner runs inside NNI's dispatcher."
    ),
    "local": (
        "seglib's in-process engine: the trials run one after another in one process, which loads the data "
        "and compiles the training program once."
    ),
}


TUNERS_TEXT = {
    "hyperband": "seglib's HyperBand",
    "asha": (
        "seglib's ASHA (asynchronous successive halving; Li et al., MLSys 2020) over the rungs of the largest "
        "bracket above: it promotes a configuration as soon as it ranks in the top 1/η of its rung's finished "
        "trials, without waiting for the rung to fill, until it has spent the epochs of one pass"
    ),
    "bohb": (
        "seglib's BOHB (Falkner et al., ICML 2018): the brackets above, each new configuration proposed by a "
        "TPE model (Optuna's) of the trials finished so far, a third of them at random"
    ),
}


def tuner_title(experiment: Experiment) -> str:
    """How people name the search ``experiment`` ran (HyperBand, ASHA, BOHB, random search)."""
    return Search.registry[experiment.summary.tuner].title


def section_hyperband(run: Run, hpo: Experiment, figures: dict) -> str:
    """ "HyperBand explained": the method, with figures drawn from the run's own schedule."""
    s = run.settings
    schedule, totals = brackets(s.max_budget, s.eta), pass_epochs(s.max_budget, s.eta)
    o = original()
    first = pass_epochs(o.max_budget, o.eta)
    original_table = ""
    if (s.max_budget, s.eta) != (o.max_budget, o.eta):
        original_table = (
            f"For comparison, the original's (and the `full` profile's) R = {o.max_budget}, η = {o.eta}:\n\n"
            + table(BRACKET_HEADER, _bracket_rows(o.max_budget, o.eta))
            + "\n"
        )
    used = spent(hpo.trials)
    wall = wall_seconds(hpo.trials)
    return render(
        "hyperband",
        eta=s.eta,
        R=s.max_budget,
        s_max=schedule[0].s,
        halving_figure=image(figures["halving"], "successive halving"),
        top_configs=schedule[0].rungs[0].n_configs,
        top_budget=schedule[0].rungs[0].budget,
        bracket_table=table(BRACKET_HEADER, _bracket_rows(s.max_budget, s.eta)),
        brackets_figure=image(figures["brackets"], "HyperBand brackets"),
        pass_trials=totals["trials"],
        pass_scratch=f"{totals['from_scratch']:,}",
        pass_warm=f"{totals['warm_start']:,}",
        original_R=o.max_budget,
        original_eta=o.eta,
        original_trials=first["trials"],
        original_scratch=f"{first['from_scratch']:,}",
        original_warm=f"{first['warm_start']:,}",
        original_table=original_table,
        engine_text=ENGINES_TEXT[hpo.summary.engine],
        tuner_text=TUNERS_TEXT[hpo.summary.tuner],
        trials_figure=image(figures["trials"], "trials by bracket and rung"),
        trials=used["trials"],
        statuses=statuses_text(used["statuses"]),
        epochs=f"{used['epochs']:,}",
        resumed=sum(1 for t in hpo.trials if t.resumed_from > 0),
        trial_time=fmt_seconds(used["seconds"]),
        wall_text=f" over {fmt_seconds(wall)} of wall time" if wall else "",
    )


def _comparison(tuned: float | None, baseline: float | None) -> str:
    if tuned is None or baseline is None:
        return "one of them has no finite loss"
    change = (tuned - baseline) / abs(baseline) if baseline else 0.0
    if abs(change) < NEGLIGIBLE_CHANGE:
        return f"within {NEGLIGIBLE_CHANGE:.0%} of each other: no meaningful difference in this run"
    if change < 0:
        return f"{-change:.1%} lower: the tuning paid off on validation"
    return f"{change:.1%} higher: this run's search did not beat the initial parameters"


def section_results(
    run: Run, hpo: Experiment, baseline: ModelRecord, tuned: ModelRecord, figures: dict, whole: dict | None = None
) -> str:
    """Every section of the seed report, filled from this run (``whole``: its whole held-out images' scores)."""
    s = run.settings
    best_value = hpo.best.value
    seed_rows = [
        ["best validation loss of the search", fmt(SEED["val_loss"]), fmt(best_value)],
        ["tuned model: validation loss", "—", fmt(tuned.val["loss"])],
        [
            "tuned model: validation precision / recall",
            f"{fmt(SEED['val_precision'])} / {fmt(SEED['val_recall'])}",
            f"{fmt(tuned.val['precision'])} / {fmt(tuned.val['recall'])}",
        ],
        [
            "tuned model: training precision / recall",
            f"{fmt(SEED['train_precision'])} / {fmt(SEED['train_recall'])}",
            f"{fmt(tuned.train['precision'])} / {fmt(tuned.train['recall'])}",
        ],
        [
            "tuned model: mean IoU, validation / test",
            "not reported",
            f"{fmt(tuned.val['mean_iou'])} / {fmt((tuned.test or {}).get('mean_iou'))}",
        ],
    ]
    if whole is not None:
        where = f"{len(whole['images'])} images of {', '.join(whole['tiles'])}"
        blend = fmt(whole["modes"]["blend"]["mean_iou"])
        seed_rows.append(
            ["tuned model: held-out whole images, mean IoU (blended)", "not reported", f"{blend} ({where})"]
        )
    space = "{\n" + ",\n".join(f"    {k!r}: {v!r}" for k, v in hpo.best.search_space.items()) + "\n}"
    return render(
        "results",
        tuner_title=tuner_title(hpo),
        search_space=space,
        baseline_params=params_block(baseline.params),
        engine=repr(hpo.summary.engine),
        R=s.max_budget,
        eta=s.eta,
        max_trials=repr(s.max_trials if s.max_trials is not None else "one full HyperBand pass"),
        concurrency=s.concurrency if hpo.summary.engine == "nni" else "1  # the local engine runs one at a time",
        precision=repr(s.precision),
        best_params=params_block(hpo.best.params or tuned.params),
        best_value=fmt(best_value),
        epochs=s.epochs,
        tuned_loss=fmt(tuned.val["loss"]),
        baseline_loss=fmt(baseline.val["loss"]),
        comparison=_comparison(tuned.val["loss"], baseline.val["loss"]),
        seed_table=table(["", "seed report", "this run"], seed_rows),
        samples_figure=image(figures["samples"], "validation image | mask | prediction"),
        loss_figure=image(figures["loss"], "loss vs epochs"),
        pr_figure=image(figures["pr"], "precision-recall curve"),
        pr_pixels=f"{tuned.pr_curve['pixels']:,}",
        train_precision=fmt(tuned.train["precision"]),
        train_recall=fmt(tuned.train["recall"]),
        val_precision=fmt(tuned.val["precision"]),
        val_recall=fmt(tuned.val["recall"]),
        baseline_train_precision=fmt(baseline.train["precision"]),
        baseline_train_recall=fmt(baseline.train["recall"]),
        baseline_val_precision=fmt(baseline.val["precision"]),
        baseline_val_recall=fmt(baseline.val["recall"]),
    )


WHOLE_MODES = {"tiles": "tiles", "blend": "blend", "blend+tta": "blend + 8 flips/rotations"}
WAYS = {2: "two", 3: "three"}


def section_whole_images(whole: dict | None, figures: dict, augmented: bool = False) -> str:
    """Whole held-out images segmented three ways (``seglib.pipeline.segment_held_out``);
    ``augmented``: the model trained with flips and rotations (the 8 views are then not new to it)."""
    if whole is None:
        return (
            "\n*Whole held-out images: this run's split holds none out (every image gave training patches); "
            "a `tiles` split does.*\n"
        )
    modes = whole["modes"]
    shown = [m for m in WHOLE_MODES if m in modes]
    rows = [[name] + [fmt(modes[m]["per_class_iou"][k]) for m in shown] for k, name in enumerate(CLASS_NAMES)]
    rows.append(["**mean IoU**"] + [f"**{fmt(modes[m]['mean_iou'])}**" for m in shown])
    rows.append(["seconds"] + [fmt_seconds(modes[m]["seconds"]) for m in shown])
    blend, tiles = (round(modes[m]["mean_iou"], 4) for m in ("blend", "tiles"))  # as the table shows them
    comment = (
        f"Blended windows {'match or beat' if blend >= tiles else 'score below'} non-overlapping ones "
        f"(mean IoU {fmt(blend)} against {fmt(tiles)})."
    )
    tta = round(modes["blend+tta"]["mean_iou"], 4) if "blend+tta" in modes else None
    if tta is None:
        comment += (
            " The average over the 8 flips and rotations was not scored (the setting `whole_image_tta` is off:"
            " it costs eight times the blended windows' time); `seglib predict --tta` scores it."
        )
    elif tta >= blend:
        comment += f" Averaging over flips and rotations matches or beats them ({fmt(tta)})."
    elif augmented:
        comment += (
            f" Averaging over flips and rotations scores lower ({fmt(tta)}), although the model trained on all "
            "eight views: here it does not pay for its eight-fold cost."
        )
    else:
        comment += (
            f" Averaging over flips and rotations scores lower ({fmt(tta)}): this model trained without flips or "
            "rotations, so seven of the eight views are ones it never saw."
        )
    return render(
        "whole_images",
        tiles=", ".join(whole["tiles"]),
        images=len(whole["images"]),
        ways=WAYS[len(shown)],
        tta=" and the same averaged over the 8 flips and rotations (`--tta`)" if tta is not None else "",
        table=table(["class", *(WHOLE_MODES[m] for m in shown)], rows),
        figure=image(figures["whole_images"], "whole image | mask | prediction") if "whole_images" in figures else "",
        comment=comment,
    )


def section_beyond(
    run: Run,
    data: dict,
    hpo: Experiment,
    random: Experiment | None,
    baseline: ModelRecord,
    tuned: ModelRecord,
    figures: dict,
    whole: dict | None = None,
) -> str:
    """What the seed lacks: IoU on held-out data, HyperBand vs random search, compute, stamp."""
    split = "test" if tuned.test else "val"
    iou_rows = [
        [name, fmt(b), fmt(t)]
        for name, b, t in zip(
            CLASS_NAMES, getattr(baseline, split)["per_class_iou"], getattr(tuned, split)["per_class_iou"]
        )
    ]
    iou_rows.append(
        [
            "**mean IoU**",
            f"**{fmt(getattr(baseline, split)['mean_iou'])}**",
            f"**{fmt(getattr(tuned, split)['mean_iou'])}**",
        ]
    )
    counts = data.get("counts", {})
    held_out = (
        ": neither training nor HPO saw the test tiles."
        if data.get("split") == "tiles"
        else ": the original's random split, so the test set is the validation set (as the seed's was)."
    )
    work = [("baseline training", 1, _epochs_of(baseline), baseline.seconds)]
    searches = [(tuner_title(hpo), hpo)] + ([("random search", random)] if random else [])
    rows = []
    for name, experiment in searches:
        used, top = spent(experiment.trials), best_trial(experiment.trials)
        wall = wall_seconds(experiment.trials)
        rows.append(
            [
                name,
                used["trials"],
                statuses_text(used["statuses"]),
                f"{used['epochs']:,}",
                fmt_seconds(used["seconds"]),
                fmt_seconds(wall) if wall else "n/a",
                fmt(top.value if top else None),
            ]
        )
        work.append((f"{name} trials", used["trials"], used["epochs"], used["seconds"]))
    work.append(("tuned model retraining", 1, _epochs_of(tuned), tuned.seconds))
    comparison = (
        table(["search", "trials", "statuses", "epochs", "trial time", "wall time", "best validation loss"], rows)
        if random
        else "*Random search was not run for this run (its folder `random/` is absent).*"
    )
    compute_rows = [[name, n, f"{epochs:,}", fmt_seconds(seconds)] for name, n, epochs, seconds in work]
    totals = [sum(w[i] for w in work) for i in (1, 2, 3)]
    compute_rows.append(["**total**", f"**{totals[0]}**", f"**{totals[1]:,}**", f"**{fmt_seconds(totals[2])}**"])
    stamp = run.stamp
    return render(
        "beyond",
        split_name=SPLIT_NAMES[split],
        split=data.get("split", run.settings.split),
        split_counts=(
            f"{counts.get('train', '?')} training, {counts.get('val', '?')} validation "
            f"and {counts.get('test', '?')} test patches"
        ),
        held_out_text=held_out,
        iou_table=table(["class", "baseline IoU", "tuned IoU"], iou_rows),
        iou_figure=image(figures["iou"], "per-class IoU"),
        whole_images=section_whole_images(whole, figures, augmented=run.settings.augment != "none"),
        R=run.settings.max_budget,
        comparison=comparison,
        tuner_title=tuner_title(hpo),
        comparison_figure=image(figures["comparison"], f"{tuner_title(hpo)} vs random search"),
        device="GPU" if stamp["hardware"].startswith("GPU") else "CPU",
        hardware=stamp["hardware"],
        overlap_note="; trials that ran concurrently overlap in time"
        if hpo.summary.engine == "nni" and run.settings.concurrency > 1
        else "",
        compute_table=table(["work", "runs", "epochs", "seconds"], compute_rows),
        data_label=stamp["data_label"],
        patches=_patches_text(data, run.settings.patch_size),
        profile=run.profile_text,
        backend=stamp["backend"],
        python=stamp["python"],
        seglib=stamp["seglib"],
        started=stamp["started"],
        rebuild=_rebuild(run),
    )


def _patches_text(data: dict, patch_size: int) -> str:
    text = f"{data.get('patches', '?')} of {patch_size}×{patch_size} px"
    prepared = data.get("patches_prepared")
    if prepared and prepared != data.get("patches"):
        text += f" (a fixed random subsample of the {prepared:,} the data gives)"
    return text + (f" from {data['pairs']} image/mask pairs" if data.get("pairs") else "")


def _epochs_of(record: ModelRecord) -> int:
    return int(record.epochs_trained or len(record.history.get("loss", [])))


DATA_PLACEHOLDER = (
    '"$DATA"'  # the dataset folder in a rebuild command: a path of the machine that ran it means nothing elsewhere
)
KAGGLE_DATASET = "humansintheloop/semantic-segmentation-of-aerial-imagery"


def _rebuild(run: Run) -> str:
    """The command that repeats the run, its dataset folder as ``"$DATA"`` (see DATA_PLACEHOLDER)."""
    command = run.stamp.get("command")
    if command:
        words, placeholder = _data_as_placeholder(shlex.split(command))
        intro = "This report was made by the command below (notebooks 01→04, then the report)"
    else:
        words = ["seglib", "run", "--profile", run.profile, "--out", "RUN_DIR"]
        words += [w for k, v in run.overrides.items() for w in ("-p", f"{k}={v!r}")]
        placeholder = run.settings.data is not None
        if placeholder:
            words += ["--data", DATA_PLACEHOLDER]
        intro = "This report was made by running notebooks 01→04 one by one; the command below repeats the run headless"
    line = " ".join(w if w == DATA_PLACEHOLDER else shlex.quote(w) for w in words)
    where = (
        f", with `DATA` the dataset's folder (here *{run.stamp.get('data_label', 'the dataset')}*; for the Kaggle "
        f"dataset `{KAGGLE_DATASET}`, `--data kaggle` downloads it instead)"
        if placeholder
        else ""
    )
    return f"{intro}{where}:\n\n```bash\n{line}\n```"


def _data_as_placeholder(words: list[str]) -> tuple[list[str], bool]:
    """``--data PATH`` (or ``--data=PATH``) with the path replaced by DATA_PLACEHOLDER; ``kaggle`` is kept."""
    out, replaced = [], False
    for word in words:
        if out and out[-1] == "--data" and word != "kaggle":
            word, replaced = DATA_PLACEHOLDER, True
        elif word.startswith("--data=") and word != "--data=kaggle":
            out += ["--data"]
            word, replaced = DATA_PLACEHOLDER, True
        out.append(word)
    return out, replaced


def recipe_note(s) -> str:
    """Say when the models trained with another recipe than the original's (docs/hpo.md)."""
    o = original()
    if all(getattr(s, k) == getattr(o, k) for k in RECIPE):
        return ""
    schedule = (
        f"a cosine schedule with {s.warmup_epochs} warm-up epoch{'s' if s.warmup_epochs != 1 else ''}"
        if s.lr_schedule == "cosine"
        else "a constant learning rate"
    )
    augment = {
        "none": "no augmentation",
        "d4": "the 8 symmetries of a square",
        "d4+color": "the 8 symmetries and colour jitter",
    }
    stop = "" if s.patience is None else f", stopped after {s.patience} epochs without a lower validation loss"
    return (
        f"\n>\n> **Trained with seglib's recipe, not the original's**: learning rate {s.learning_rate:g}, "
        f"{augment[s.augment]}, {schedule}, the {s.keep_epoch} epoch's weights{stop} (the original: "
        f"{o.learning_rate:g}, no augmentation, a constant rate, the last epoch)."
    )


def scope_note(run: Run) -> str:
    """Say plainly when the run is not the original's full settings on a GPU."""
    s, o = run.settings, original()
    device = "GPU" if run.stamp["hardware"].startswith("GPU") else "CPU"
    differs = {
        k: v
        for k, v in s.to_dict().items()
        if k in ("patch_size", "max_patches", "base_filters", "depth", "epochs", "max_budget", "eta")
        and v != getattr(o, k)
    }
    recipe = recipe_note(s)
    if not differs:
        return recipe
    return recipe + (
        f"\n>\n> **This is a {device} run with reduced settings** ({s.patch_size}×{s.patch_size} patches"
        f"{'' if s.max_patches is None else f', {s.max_patches} of them'}, a U-Net of {s.base_filters} base filters and"
        f" depth {s.depth}, {s.epochs} baseline epochs, R = {s.max_budget}, η = {s.eta}), not the original's"
        f" ({o.patch_size}×{o.patch_size} patches, {o.base_filters} filters, depth {o.depth}, {o.epochs} epochs,"
        f" R = {o.max_budget}, η = {o.eta}, `--profile full`): its numbers describe this run and are not comparable"
        " with the seed's."
    )
