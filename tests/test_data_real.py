"""seglib.data on the real Kaggle dataset, against the original's procedure (SEED-NOTES)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seglib.data import (
    NUM_CLASSES,
    PALETTE,
    UNLABELED,
    class_shares,
    prepare,
    split,
    split_class_shares,
)

ROOT = Path(__file__).resolve().parents[1]
README_COUNTS = {
    "Tile 1": 54,
    "Tile 2": 18,
    "Tile 3": 36,
    "Tile 4": 108,
    "Tile 5": 144,
    "Tile 6": 81,
    "Tile 7": 504,
    "Tile 8": 360,
}
# A palette-mode mask (Tile 2), the black-stained mask (Tile 8) and two more with black pixels.
REFERENCE_FILES = (
    ("Tile 2", "image_part_001"),
    ("Tile 3", "image_part_006"),
    ("Tile 5", "image_part_002"),
    ("Tile 8", "image_part_003"),
)


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "benchmarks" / "bench_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def real_patches(real_data_root, tmp_path_factory):
    return prepare(real_data_root, patch_size=256, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def few_files(real_data_root, tmp_path_factory):
    """A Kaggle-layout folder of links to a few real pairs (nothing copied)."""
    root = tmp_path_factory.mktemp("few")
    for tile, stem in REFERENCE_FILES:
        for kind, ext in (("images", ".jpg"), ("masks", ".png")):
            (root / tile / kind).mkdir(parents=True, exist_ok=True)
            (root / tile / kind / f"{stem}{ext}").symlink_to(real_data_root / tile / kind / f"{stem}{ext}")
    return root


def test_patch_counts_per_tile_match_the_readme(real_patches):
    assert len(real_patches) == 1305
    assert dict(real_patches.patches_per_tile()) == README_COUNTS
    assert real_patches.images.shape == (1305, 256, 256, 3) and real_patches.images.dtype == np.uint8
    assert real_patches.labels.shape == (1305, 256, 256) and real_patches.labels.dtype == np.uint8
    assert len(real_patches.files) == 72 and real_patches.files[0] == "Tile 1/images/image_part_001.jpg"


def test_black_pixels_of_tile_8_are_reported_and_unlabeled(real_patches, real_data_root):
    name = "Tile 8/masks/image_part_003.png"
    assert real_patches.off_palette[name] == {"#000000": 545_723}
    assert sum(sum(c.values()) for c in real_patches.off_palette.values()) == 552_156
    assert len(real_patches.off_palette) == 9
    assert any(line.startswith(f"{name} has 545,723 off-palette pixels") for line in real_patches.off_palette_lines())

    mask = np.asarray(Image.open(real_data_root / name).convert("RGB"))
    file_index = real_patches.masks.index(name)
    mine = np.flatnonzero(real_patches.source[:, 0] == file_index)
    black_in_patches = 0
    for k in mine:
        _, r, c = real_patches.source[k]
        window = mask[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        black = (window == 0).all(axis=-1)
        black_in_patches += int(black.sum())
        assert (real_patches.labels[k][black] == UNLABELED).all()
    assert black_in_patches > 400_000  # most of the stain lies inside the cropped area


def test_labels_and_scaling_equal_the_reference_procedure(few_files):
    bench = load_bench()
    pairs = bench.reference_pairs(few_files)
    assert [p[0].parent.parent.name for p in pairs] == [t for t, _ in REFERENCE_FILES]
    ref_images, ref_labels = bench.reference_prepare(pairs, patch_size=256)
    ours = prepare(few_files, patch_size=256, cache=False)
    assert ref_labels.shape == ours.labels.shape and len(ours) == 4 + 6 + 12 + 40

    masks = [np.asarray(Image.open(mask_path).convert("RGB")) for _, mask_path in pairs]
    in_palette = np.zeros(ref_labels.shape, dtype=bool)
    for k, (f, r, c) in enumerate(ours.source):
        window = masks[f][r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256]
        in_palette[k] = np.any([(window == colour).all(axis=-1) for colour in PALETTE.values()], axis=0)
    assert (~in_palette).sum() > 400_000
    np.testing.assert_array_equal(ours.labels[in_palette], ref_labels[in_palette])
    assert (ours.labels[~in_palette] == UNLABELED).all()
    assert (ref_labels[~in_palette] == 0).all()  # the original made them Building

    scaled = ours.scaled()
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, ref_images, atol=1e-6, rtol=0)


def test_seed_split_is_1044_261(real_patches):
    splits = split(real_patches, "seed")
    assert (len(splits["train"]), len(splits["val"])) == (1044, 261)


def test_tiles_split_default_on_the_real_data(real_patches):
    splits = split(real_patches, "tiles")
    tiles = {k: sorted(set(real_patches.tile_of_patch[v])) for k, v in splits.items()}
    assert tiles == {
        "train": ["Tile 7", "Tile 8"],
        "val": ["Tile 1", "Tile 3", "Tile 6"],
        "test": ["Tile 2", "Tile 4", "Tile 5"],
    }
    assert (len(splits["train"]), len(splits["val"]), len(splits["test"])) == (864, 171, 270)
    files = {k: set(real_patches.source[v, 0]) for k, v in splits.items()}
    assert not (files["train"] & files["val"] or files["train"] & files["test"] or files["val"] & files["test"])
    shares = split_class_shares(real_patches, splits)
    for name, value in shares.items():
        assert value.shape == (NUM_CLASSES,) and abs(value.sum() - 1) < 1e-9 and (value > 0).all(), name
    # Held out by size alone, Tiles 3, 5, 6 would make a test set of 46% water and 2% buildings.
    assert 0.15 < shares["test"][0] < 0.25 and shares["test"][4] < 0.35


def test_class_shares_of_the_real_data(real_patches):
    shares = class_shares(real_patches.labels)
    # Land dominates; Unlabeled holds the 0.50 M grey plus the black pixels inside the crops.
    assert shares.argmax() == 1 and 0.5 < shares[1] < 0.56
    assert 0.005 < shares[UNLABELED] < 0.02
