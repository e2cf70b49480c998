"""Benchmark seglib.data.prepare on the real dataset against the original's procedure.

    .venv/bin/python benchmarks/bench_data.py --data DATA [--no-reference]

DATA is the Kaggle dataset's "Semantic segmentation dataset" folder, or ``kaggle`` to download
it first with kagglehub (``pip install -e ".[colab]"``).

Each part runs in its own fresh Python process, which reports its wall time for the work
(imports excluded) and its own peak resident memory (``ru_maxrss``): ``cold`` prepares the
full dataset into an empty temporary cache, ``cached`` prepares it again from that cache,
``reference`` runs the original notebook's procedure as SEED-NOTES describes it (float64
``MinMaxScaler`` per patch, float32 one-hot masks, ``train_test_split``). The last line is
``RESULT cold_s=<f> cached_s=<f> peak_rss_mb=<f> reference_s=<f> reference_rss_mb=<f> patches=<n>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The original's colour -> class mapping (SEED-NOTES "Data preparation"), written out again
# here on purpose: the reference must not share seglib's palette to be a check of it.
REFERENCE_COLOURS = [
    ("Building", "#3C1098"),
    ("Land", "#8429F6"),
    ("Road", "#6EC1E4"),
    ("Vegetation", "#FEDD3A"),
    ("Water", "#E2A929"),
    ("Unlabeled", "#9B9B9B"),
]


def reference_pairs(root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """The original's walk: tiles sorted by name, ``images/*.jpg`` sorted, masks ``.png`` beside."""
    pairs = []
    for tile in sorted(p for p in Path(root).iterdir() if (p / "images").is_dir()):
        for image in sorted((tile / "images").glob("*.jpg")):
            pairs.append((image, tile / "masks" / (image.stem + ".png")))
    return pairs


def reference_label(mask: np.ndarray) -> np.ndarray:
    """The original's ``rgb_to_2D_label``: one ``np.all`` per class; other colours stay 0."""
    label = np.zeros(mask.shape[:2], dtype=np.uint8)
    for index, (_, hex_code) in enumerate(REFERENCE_COLOURS):
        colour = np.array(tuple(int(hex_code[i : i + 2], 16) for i in (1, 3, 5)))
        label[np.all(mask == colour, axis=-1)] = index
    return label


def reference_prepare(pairs, patch_size: int = 256):
    """The original's preparation: float64 scaled patches ``(N, P, P, 3)`` and labels ``(N, P, P)``.

    Per image: crop from the top-left to a multiple of the patch size (PIL), patchify with
    step = patch size, ``MinMaxScaler().fit_transform`` on each patch's pixels; the masks
    the same without scaling, then mapped to class indices.
    """
    from patchify import patchify
    from PIL import Image
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler()
    image_dataset, mask_dataset = [], []
    for image_path, mask_path in pairs:
        for path, dataset in ((image_path, image_dataset), (mask_path, mask_dataset)):
            image = Image.open(path).convert("RGB")
            size_x = (image.size[0] // patch_size) * patch_size
            size_y = (image.size[1] // patch_size) * patch_size
            image = np.array(image.crop((0, 0, size_x, size_y)))
            patches = patchify(image, (patch_size, patch_size, 3), step=patch_size)
            for i in range(patches.shape[0]):
                for j in range(patches.shape[1]):
                    single = patches[i, j, :, :]
                    if dataset is image_dataset:
                        single = scaler.fit_transform(single.reshape(-1, single.shape[-1])).reshape(single.shape)
                    dataset.append(single[0])
    images = np.array(image_dataset)
    labels = np.array([reference_label(mask) for mask in mask_dataset])
    return images, labels


def run_reference(data: Path) -> dict:
    """The whole original procedure, ending as it did with one-hot masks and the 80/20 split."""
    from sklearn.model_selection import train_test_split

    start = time.perf_counter()
    images, labels = reference_prepare(reference_pairs(data))
    labels_cat = np.eye(len(REFERENCE_COLOURS), dtype=np.float32)[labels]
    _x_train, _x_test, _y_train, _y_test = train_test_split(images, labels_cat, test_size=0.20, random_state=42)
    return {"seconds": time.perf_counter() - start, "patches": len(images)}


def run_prepare(data: Path, cache_dir: Path) -> dict:
    from seglib.data import prepare

    start = time.perf_counter()
    patches = prepare(data, patch_size=256, cache_dir=cache_dir)
    # Touch every byte, so a lazily mapped cache is timed as really read.
    checksum = int(patches.images.sum(dtype=np.uint64)) + int(patches.labels.sum(dtype=np.uint64))
    return {
        "seconds": time.perf_counter() - start,
        "patches": len(patches),
        "from_cache": patches.from_cache,
        "checksum": checksum,
    }


def child_main(part: str, data: Path, cache_dir: Path) -> None:
    """Run one part in this (fresh) process and print its figures as JSON."""
    import logging

    logging.disable(logging.WARNING)  # the off-palette lines are not what is timed here
    # Imports are not what is timed either; each part imports only what it uses.
    if part == "reference":
        pass
    else:
        import seglib.data  # noqa: F401
    import patchify  # noqa: F401

    cpu = os.times()
    result = run_reference(data) if part == "reference" else run_prepare(data, cache_dir)
    result["cpu_s"] = sum(os.times()[:2]) - sum(cpu[:2])  # user + system, all threads
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def run_part(part: str, data: Path, cache_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--data", str(data), "--child", part, "--cache-dir", str(cache_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    result = json.loads(out.strip().splitlines()[-1])
    print(
        f"{part:>9}: {result['seconds']:.3f} s wall, {result['cpu_s']:.2f} s CPU, "
        f"peak RSS {result['rss_mb']:.0f} MB, {result['patches']} patches"
    )
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        required=True,
        help="the Kaggle dataset's 'Semantic segmentation dataset' folder, or 'kaggle' to download it",
    )
    parser.add_argument("--no-reference", action="store_true", help="skip the original's procedure (8.5 GB)")
    parser.add_argument("--child", choices=("cold", "cached", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child, Path(args.data), Path(args.cache_dir))
        return 0
    if args.data == "kaggle":
        from seglib.colab import download_dataset

        args.data = str(download_dataset())
    data = Path(args.data)
    if not data.is_dir():
        print(f"dataset not found at {data}; pass its 'Semantic segmentation dataset' folder, or --data kaggle")
        return 2
    with tempfile.TemporaryDirectory(prefix="seglib-bench-") as cache_dir:
        cold = run_part("cold", data, Path(cache_dir))
        cached = run_part("cached", data, Path(cache_dir))
        assert not cold["from_cache"] and cached["from_cache"], "expected a cache miss, then a hit"
        assert cold["checksum"] == cached["checksum"], "cached arrays differ from the fresh ones"
    nan = {"seconds": float("nan"), "rss_mb": float("nan")}
    reference = nan if args.no_reference else run_part("reference", data, Path(cache_dir))
    print(
        f"RESULT cold_s={cold['seconds']:.3f} cached_s={cached['seconds']:.3f} "
        f"peak_rss_mb={max(cold['rss_mb'], cached['rss_mb']):.1f} "
        f"reference_s={reference['seconds']:.3f} reference_rss_mb={reference['rss_mb']:.1f} "
        f"patches={cold['patches']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
