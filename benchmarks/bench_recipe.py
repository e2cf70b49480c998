"""The training recipe's ablation on real data: held-out whole images, the original's U-Net.

Every row trains the original's U-Net (16 filters, depth 4, batch 16, relu) for the same
epochs on the same patches (``--max-patches`` of ``--patch-size`` px, split by tiles) and
scores the held-out tiles' whole images, blended and blended with the 8-fold averaging
(``seglib.predict.score_whole_images``). Rows:

- ``original``: the original's recipe (lr 0.007 constant, no augmentation, the last epoch);
- ``original-lr0.001``: the same at lr 0.001;
- ``recipe``: lr 0.001, d4+color, cosine with 1 warm-up epoch, the best epoch;
- ``recipe-no-augment``, ``recipe-no-schedule``, ``recipe-no-best``: the recipe minus one part;
- ``recipe-d4`` (only when asked for with ``--rows``): symmetries without colour jitter.

The default size (64 px, 800 patches, 15 epochs) is the ``best-cpu`` profile's problem at
half its 30 epochs: between the budgets HyperBand's trials train (R = 9) and the baseline's,
and 6 rows x 3 seeds of it fit an afternoon on a 2-core CPU. Each finished (row, seed) is
written to ``--results`` at once, so a killed run continues where it stopped. Per row it
prints ``RESULT row=... mean=... sd=...`` (blend mean IoU over seeds, and the same for
blend+tta, per-class IoU, seconds per epoch, augmentation's share of the epoch), then a
markdown table; ``original`` is the reference measured in the same run.

Example::

    .venv/bin/python benchmarks/bench_recipe.py --data "PATH/Semantic segmentation dataset"
    .venv/bin/python benchmarks/bench_recipe.py --data ... --epochs 1 --seeds 1 --max-patches 60 --max-images 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ORIGINAL = {"learning_rate": 0.007, "augment": "none", "lr_schedule": "constant", "warmup_epochs": 0}
RECIPE = {"learning_rate": 0.001, "augment": "d4+color", "lr_schedule": "cosine", "warmup_epochs": 1}
ROWS = {
    "original": {**ORIGINAL, "keep_epoch": "last"},
    "original-lr0.001": {**ORIGINAL, "learning_rate": 0.001, "keep_epoch": "last"},
    "recipe": {**RECIPE, "keep_epoch": "best"},
    "recipe-no-augment": {**RECIPE, "augment": "none", "keep_epoch": "best"},
    "recipe-no-schedule": {**RECIPE, "lr_schedule": "constant", "warmup_epochs": 0, "keep_epoch": "best"},
    "recipe-no-best": {**RECIPE, "keep_epoch": "last"},
    "recipe-d4": {**RECIPE, "augment": "d4", "keep_epoch": "best"},
}
DEFAULT_ROWS = [name for name in ROWS if name != "recipe-d4"]
MODES = ("blend", "blend+tta")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the dataset folder (Kaggle layout)")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--max-patches", type=int, default=800)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (weights, order, augmentation)")
    parser.add_argument(
        "--max-images", type=int, default=None, help="score only the first N held-out images (default: all)"
    )
    parser.add_argument("--rows", nargs="+", choices=sorted(ROWS), default=DEFAULT_ROWS)
    parser.add_argument("--results", default="bench_recipe.json", help="finished runs; a rerun continues from it")
    return parser.parse_args(argv)


def problem(args) -> dict:
    """What every run of one results file shares: a run with other values needs another file."""
    return {k: getattr(args, k) for k in ("data", "patch_size", "max_patches", "epochs", "max_images")}


def load_problem(args):
    """Training and validation arrays, and the held-out tiles' whole-image pairs."""
    from seglib.data import Arrays, find_pairs, make_split, prepare
    from seglib.settings import Settings

    settings = Settings(data=args.data, patch_size=args.patch_size, max_patches=args.max_patches, split="tiles")
    patches = prepare(args.data, patch_size=args.patch_size)
    index = make_split(patches, settings)
    held_out = set(patches.tile_of_patch[index["test"]])
    pairs = [pair for pair in find_pairs(patches.root) if pair.tile in held_out][: args.max_images]
    return settings, Arrays.of(patches, index), pairs


def run_one(settings, arrays, pairs, row: str, seed: int, epochs: int) -> dict:
    """Train one row with one seed and score the held-out whole images."""
    from seglib.predict import DEFAULT_BATCH_SIZE, score_whole_images
    from seglib.train import TrainOptions, train

    chosen = settings.replace(seed=seed, epochs=epochs, **ROWS[row])
    started = time.perf_counter()
    result = train(
        arrays.x_train, arrays.y_train, arrays.x_val, arrays.y_val, settings=chosen, options=TrainOptions(verbose=0)
    )
    train_seconds = time.perf_counter() - started
    # seglib predict's 8 windows a call are sized for 256 px: as many pixels a call here.
    batch_size = max(DEFAULT_BATCH_SIZE, DEFAULT_BATCH_SIZE * (256 // settings.patch_size) ** 2)
    scores = score_whole_images(result.model, pairs, modes=MODES, batch_size=batch_size)
    history = result.history
    return {
        "row": row,
        "seed": seed,
        "settings": ROWS[row],
        "diverged": result.diverged,
        "kept_epoch": result.kept_epoch,
        "val_loss": history.get("val_loss"),
        "epoch_seconds": statistics.mean(history["epoch_seconds"]),
        "augment_seconds": statistics.mean(history.get("augment_seconds") or [0.0]),
        "train_seconds": train_seconds,
        **{mode: {k: scores[mode][k] for k in ("mean_iou", "per_class_iou", "seconds")} for mode in MODES},
    }


def summarise(runs: list[dict], rows: list[str]) -> list[dict]:
    from seglib.data import NUM_CLASSES

    summary = []
    for row in rows:
        done = [r for r in runs if r["row"] == row]
        if not done:
            continue

        def spread(values):
            return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0

        line = {"row": row, "n": len(done)}
        for mode in MODES:
            line[mode] = spread([r[mode]["mean_iou"] for r in done])
        line["per_class"] = [statistics.mean(r["blend"]["per_class_iou"][k] for r in done) for k in range(NUM_CLASSES)]
        line["epoch_seconds"] = statistics.mean(r["epoch_seconds"] for r in done)
        line["augment_share"] = statistics.mean(r["augment_seconds"] / r["epoch_seconds"] for r in done)
        summary.append(line)
    return summary


def markdown(summary: list[dict]) -> str:
    from seglib.data import CLASS_NAMES

    head = ["row", "n", "blend mIoU", "blend+tta mIoU", *CLASS_NAMES, "s/epoch", "augment % of epoch"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in summary:
        cells = [s["row"], str(s["n"])]
        cells += [f"{s[mode][0]:.3f} ± {s[mode][1]:.3f}" for mode in MODES]
        cells += [f"{v:.3f}" for v in s["per_class"]]
        cells += [f"{s['epoch_seconds']:.1f}", f"{100 * s['augment_share']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    from seglib.artifacts import read_json_or, write_json

    results_path = Path(args.results)
    saved = read_json_or(results_path, {"problem": problem(args), "runs": {}})
    if saved["problem"] != problem(args):
        sys.exit(
            f"bench_recipe.py: {results_path} holds runs of {saved['problem']}, expected {problem(args)}; "
            "pass another --results or delete it"
        )
    settings, arrays, pairs = load_problem(args)
    print(
        f"{len(arrays.x_train)} training, {len(arrays.x_val)} validation patches; "
        f"{len(pairs)} held-out images; results in {results_path}",
        flush=True,
    )
    for seed in range(args.seeds):
        for row in args.rows:
            key = f"{row}/seed{seed}"
            if key in saved["runs"]:
                continue
            run = run_one(settings, arrays, pairs, row, seed, args.epochs)
            saved["runs"][key] = run
            write_json(results_path, saved)
            print(
                f"{key}: blend {run['blend']['mean_iou']:.3f}, blend+tta {run['blend+tta']['mean_iou']:.3f}, "
                f"{run['epoch_seconds']:.1f} s/epoch",
                flush=True,
            )
    runs = [r for r in saved["runs"].values() if r["seed"] < args.seeds]
    summary = summarise(runs, args.rows)
    reference = next((s["blend"][0] for s in summary if s["row"] == "original"), float("nan"))
    for s in summary:
        print(
            f"RESULT row={s['row']} mean={s['blend'][0]:.4f} sd={s['blend'][1]:.4f} "
            f"original_mean={reference:.4f} "
            f"tta_mean={s['blend+tta'][0]:.4f} tta_sd={s['blend+tta'][1]:.4f} n={s['n']} "
            f"epoch_s={s['epoch_seconds']:.2f} augment_share={s['augment_share']:.4f}"
        )
    print()
    print(markdown(summary))
    return summary


if __name__ == "__main__":
    main()
