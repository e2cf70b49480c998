"""The embedded default dataset: deterministic, small, real-looking files read by the real loader."""

from __future__ import annotations

import numpy as np
from PIL import Image

from seglib.data import NUM_CLASSES, class_shares, embedded, find_pairs, prepare, split
from seglib.settings import profile as get_profile


def file_bytes(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_written_twice_gives_the_same_bytes(tmp_path):
    first = file_bytes(embedded.write_embedded(tmp_path / "a"))
    second = file_bytes(embedded.write_embedded(tmp_path / "b"))
    assert first.keys() == second.keys() and len(first) == 2 * 6 * embedded.IMAGES_PER_TILE
    assert first == second


def test_kaggle_layout_like_the_real_files(embedded_root):
    pairs = find_pairs(embedded_root)
    assert [p.tile for p in pairs][:: embedded.IMAGES_PER_TILE] == [f"Tile {i}" for i in range(1, 7)]
    assert all(p.image.suffix == ".jpg" and p.mask.suffix == ".png" for p in pairs)
    modes = {Image.open(p.mask).mode for p in pairs}
    assert modes == {"RGB", "P"}
    sizes = {p.tile: set() for p in pairs}
    for p in pairs:
        sizes[p.tile].add(Image.open(p.image).size)
    assert all(len(s) == 2 for s in sizes.values())  # one image per tile a pixel narrower
    total = sum(f.stat().st_size for f in embedded_root.rglob("*") if f.is_file())
    assert total < 3_000_000


def test_quick_profile_gives_a_few_hundred_patches_of_every_class(embedded_root, tmp_path):
    size = get_profile("quick").patch_size
    patches = prepare(embedded_root, patch_size=size, cache_dir=tmp_path)
    assert 150 <= len(patches) <= 300
    shares = class_shares(patches.labels)
    assert (shares > 0).all() and shares[1] == shares.max() and shares[5] < 0.05
    assert list(patches.off_palette) == ["Tile 6/masks/image_part_002.png"]
    splits = split(patches, "tiles")
    assert all(len(v) for v in splits.values())


def test_colours_carry_the_classes(embedded_root, tmp_path):
    """A nearest-mean-colour rule learnt on the training tiles beats the majority class."""
    patches = prepare(embedded_root, patch_size=64, cache_dir=tmp_path)
    splits = split(patches, "tiles")
    x, y = patches.images.astype(np.float32), patches.labels
    train, test = splits["train"], splits["test"]
    means = np.stack([x[train][y[train] == k].mean(axis=0) for k in range(NUM_CLASSES)])
    guess = ((x[test][..., None, :] - means) ** 2).sum(-1).argmin(-1)
    accuracy = (guess == y[test]).mean()
    majority = np.bincount(y[test].ravel(), minlength=NUM_CLASSES).max() / y[test].size
    assert accuracy > majority + 0.1


def test_embedded_dataset_is_written_once_and_used_by_default(tmp_path):
    root = embedded.embedded_dataset(cache_dir=tmp_path)
    assert root.is_dir() and root.parent == tmp_path / "embedded"
    stamp = (root / "Tile 1/images/image_part_001.jpg").stat().st_mtime_ns
    assert embedded.embedded_dataset(cache_dir=tmp_path) == root
    assert (root / "Tile 1/images/image_part_001.jpg").stat().st_mtime_ns == stamp
    assert [p.name for p in (tmp_path / "embedded").iterdir()] == [root.name]  # no leftovers
    patches = prepare(None, patch_size=64, cache_dir=tmp_path)
    assert patches.root == str(root) and len(patches) == 264
