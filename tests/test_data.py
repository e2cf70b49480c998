"""seglib.data on small files built here: layouts, modes, labels, errors, patches, cache, splits."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler

from seglib import data
from seglib.data import (
    CLASS_NAMES,
    NUM_CLASSES,
    PALETTE,
    UNLABELED,
    DataError,
    DatasetNotFoundError,
    Patches,
    class_shares,
    find_pairs,
    prepare,
    scale_patches,
    split,
    split_class_shares,
)

COLOURS = np.array(list(PALETTE.values()), dtype=np.uint8)


def random_mask(rng, height, width, extra=()):
    """An RGB mask of palette colours, with ``extra`` (colour, count) off-palette pixels."""
    labels = rng.integers(0, NUM_CLASSES, size=(height, width)).astype(np.uint8)
    mask = COLOURS[labels]
    flat = mask.reshape(-1, 3)
    at = 0
    for colour, count in extra:
        flat[at : at + count] = colour
        labels.reshape(-1)[at : at + count] = UNLABELED
        at += count
    return mask, labels


def write_pair(images_dir, masks_dir, stem, image, mask, image_ext=".png", mask_ext=".png", mask_mode=None):
    images_dir.mkdir(parents=True, exist_ok=True)
    masks_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(images_dir / f"{stem}{image_ext}")
    mask_image = Image.fromarray(mask)
    if mask_mode == "P":
        mask_image = mask_image.quantize(palette=_palette_image(), dither=Image.Dither.NONE)
    elif mask_mode is not None:
        mask_image = mask_image.convert(mask_mode)
    mask_image.save(masks_dir / f"{stem}{mask_ext}")


def _palette_image():
    pal = Image.new("P", (1, 1))
    pal.putpalette(COLOURS.ravel().tolist() + [0, 0, 0] * (256 - NUM_CLASSES))
    return pal


def make_kaggle(root, tiles=(1, 2), per_tile=2, size=(70, 50), seed=0, image_ext=".jpg"):
    """A small Kaggle-layout dataset; returns {relative mask path: true labels}."""
    rng = np.random.default_rng(seed)
    truth = {}
    for tile in tiles:
        for part in range(1, per_tile + 1):
            w, h = size
            image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
            mask, labels = random_mask(rng, h, w)
            base = root / f"Tile {tile}"
            stem = f"image_part_{part:03d}"
            write_pair(base / "images", base / "masks", stem, image, mask, image_ext=image_ext)
            truth[f"Tile {tile}/masks/{stem}.png"] = labels
    return truth


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


# ---------------------------------------------------------------------------------------------
# Palette and layouts


def test_palette_is_the_six_mask_colours_in_the_originals_order():
    assert CLASS_NAMES == ("Building", "Land", "Road", "Vegetation", "Water", "Unlabeled")
    assert NUM_CLASSES == 6 and UNLABELED == 5
    assert [data.hex_colour(c) for c in PALETTE.values()] == [
        "#3C1098",
        "#8429F6",
        "#6EC1E4",
        "#FEDD3A",
        "#E2A929",
        "#9B9B9B",
    ]


def test_kaggle_layout_sorted_naturally(tmp_path):
    make_kaggle(tmp_path, tiles=(10, 9, 1), per_tile=1, size=(8, 8))
    (tmp_path / "classes.json").write_text("{}")
    pairs = find_pairs(tmp_path)
    assert [p.tile for p in pairs] == ["Tile 1", "Tile 9", "Tile 10"]
    assert all(p.image.parent.name == "images" and p.mask.parent.name == "masks" for p in pairs)
    assert [p.image.stem for p in pairs] == [p.mask.stem for p in pairs]


def test_kaggle_download_folder_is_looked_into(tmp_path):
    make_kaggle(tmp_path / "Semantic segmentation dataset", tiles=(1,), per_tile=1, size=(8, 8))
    assert len(find_pairs(tmp_path)) == 1


def test_flat_layout_paired_by_stem_ignoring_extension_case(tmp_path, cache_dir):
    rng = np.random.default_rng(1)
    for stem, ext, mext in (("b", ".JPG", ".png"), ("a10", ".jpeg", ".PNG"), ("a9", ".png", ".png")):
        mask, _ = random_mask(rng, 20, 20)
        write_pair(tmp_path / "images", tmp_path / "masks", stem, np.zeros((20, 20, 3), np.uint8), mask, ext, mext)
    (tmp_path / "images" / ".DS_Store").write_bytes(b"junk")
    pairs = find_pairs(tmp_path)
    assert [(p.image.name, p.mask.name, p.tile) for p in pairs] == [
        ("a9.png", "a9.png", "a9"),
        ("a10.jpeg", "a10.PNG", "a10"),
        ("b.JPG", "b.png", "b"),
    ]
    patches = prepare(tmp_path, patch_size=10, cache_dir=cache_dir)
    assert len(patches) == 12 and patches.files == ("images/a9.png", "images/a10.jpeg", "images/b.JPG")


# ---------------------------------------------------------------------------------------------
# Bad input: each error names the file and says what was expected


def test_image_without_mask(tmp_path):
    make_kaggle(tmp_path, tiles=(1,), per_tile=2, size=(8, 8))
    (tmp_path / "Tile 1/masks/image_part_002.png").unlink()
    with pytest.raises(DataError, match=r"image without mask: .*Tile 1/images/image_part_002\.jpg"):
        find_pairs(tmp_path)


def test_mask_without_image(tmp_path):
    make_kaggle(tmp_path, tiles=(1,), per_tile=2, size=(8, 8))
    (tmp_path / "Tile 1/images/image_part_001.jpg").unlink()
    with pytest.raises(DataError, match=r"mask without image: .*Tile 1/masks/image_part_001\.png"):
        find_pairs(tmp_path)


def test_missing_and_empty_folders_say_how_to_get_the_data(tmp_path):
    with pytest.raises(
        DatasetNotFoundError, match=r"does not exist.*humansintheloop/semantic-segmentation-of-aerial-imagery.*embedded"
    ):
        find_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"no image/mask pairs in .*empty.*kagglehub"):
        prepare(tmp_path / "empty", cache=False)
    (tmp_path / "flat" / "images").mkdir(parents=True)
    (tmp_path / "flat" / "masks").mkdir()
    with pytest.raises(DatasetNotFoundError, match=r"folders are empty.*Kaggle"):
        find_pairs(tmp_path / "flat")
    (tmp_path / "nomasks" / "Tile 1" / "images").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match=r"Tile 1/masks.*missing"):
        find_pairs(tmp_path / "nomasks")


def test_size_mismatch_fails_naming_both_sizes_or_is_skipped(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1,), per_tile=3, size=(40, 30))
    bad = tmp_path / "Tile 1/masks/image_part_002.png"
    Image.fromarray(COLOURS[np.ones((31, 40), np.uint8)]).save(bad)
    with pytest.raises(
        DataError, match=r"Tile 1/images/image_part_002\.jpg is 40x30 but Tile 1/masks/image_part_002\.png is 40x31"
    ):
        prepare(tmp_path, patch_size=10, cache_dir=cache_dir)
    patches = prepare(tmp_path, patch_size=10, skip_mismatched=True, cache_dir=cache_dir)
    assert patches.files == ("Tile 1/images/image_part_001.jpg", "Tile 1/images/image_part_003.jpg")
    assert len(patches.skipped) == 1 and "40x30" in patches.skipped[0] and "40x31" in patches.skipped[0]
    assert len(patches) == 2 * 12 and set(patches.source[:, 0]) == {0, 1}


def test_truncated_jpeg_is_named(tmp_path):
    make_kaggle(tmp_path, tiles=(1,), per_tile=2, size=(64, 64))
    path = tmp_path / "Tile 1/images/image_part_002.jpg"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"cannot decode Tile 1/images/image_part_002\.jpg.*truncated"):
        prepare(tmp_path, patch_size=16, cache=False)


def test_non_image_bytes_are_named(tmp_path):
    make_kaggle(tmp_path, tiles=(1,), per_tile=2, size=(16, 16))
    (tmp_path / "Tile 1/masks/image_part_001.png").write_bytes(b"<html>not a png</html>")
    with pytest.raises(DataError, match=r"cannot read Tile 1/masks/image_part_001\.png: expected an image file"):
        prepare(tmp_path, patch_size=8, cache=False)
    with pytest.raises(DataError, match=r"image_part_001\.png"):
        data.read_rgb(tmp_path / "Tile 1/masks/image_part_001.png")


def test_missing_patchify_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "patchify", None)
    with pytest.raises(ImportError, match=r"pip install --no-deps patchify==0\.2\.3"):
        data.dataset._patchify()


# ---------------------------------------------------------------------------------------------
# Modes, labels, off-palette colours


@pytest.mark.parametrize("mode", ["RGB", "P", "RGBA", "L"])
def test_any_mode_is_read_as_rgb(tmp_path, mode):
    rgb = np.random.default_rng(2).integers(0, 256, size=(12, 9, 3), dtype=np.uint8)
    if mode == "L":
        rgb = np.repeat(rgb[..., :1], 3, axis=-1)
    image = Image.fromarray(rgb)
    if mode == "P":
        image = image.quantize(colors=256)
        rgb = np.asarray(image.convert("RGB"))
    elif mode != "RGB":
        image = image.convert(mode)
    image.save(tmp_path / "x.png")
    out = data.read_rgb(tmp_path / "x.png")
    assert out.dtype == np.uint8 and out.shape == (12, 9, 3)
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("mask_mode", [None, "P", "RGBA"])
def test_labels_exact_for_every_mask_mode(tmp_path, mask_mode, cache_dir):
    rng = np.random.default_rng(3)
    mask, labels = random_mask(rng, 32, 48)
    write_pair(tmp_path / "images", tmp_path / "masks", "a", np.zeros((32, 48, 3), np.uint8), mask, mask_mode=mask_mode)
    patches = prepare(tmp_path, patch_size=16, cache_dir=cache_dir)
    assert patches.labels.dtype == np.uint8 and patches.labels.shape == (6, 16, 16)
    rebuilt = patches.labels.reshape(2, 3, 16, 16).transpose(0, 2, 1, 3).reshape(32, 48)
    np.testing.assert_array_equal(rebuilt, labels)
    assert patches.off_palette == {}


def test_off_palette_pixels_become_unlabeled_and_are_summarised(tmp_path, cache_dir, caplog):
    rng = np.random.default_rng(4)
    extra = [((0, 0, 0), 300), ((255, 255, 255), 7), ((0x3C, 0x10, 0x99), 5)]
    mask, labels = random_mask(rng, 40, 40, extra)
    write_pair(tmp_path / "images", tmp_path / "masks", "a", np.zeros((40, 40, 3), np.uint8), mask)
    mask2, _ = random_mask(rng, 40, 40)
    write_pair(tmp_path / "images", tmp_path / "masks", "b", np.zeros((40, 40, 3), np.uint8), mask2)
    with caplog.at_level("WARNING", logger="seglib.data"):
        patches = prepare(tmp_path, patch_size=20, cache_dir=cache_dir)
    assert patches.off_palette == {"masks/a.png": {"#000000": 300, "#FFFFFF": 7, "#3C1099": 5}}
    line = patches.off_palette_lines()[0]
    assert line == (
        "masks/a.png has 312 off-palette pixels, labelled Unlabeled: 300 black (#000000), 7 white (#FFFFFF), 5 #3C1099"
    )
    assert line in caplog.text
    rebuilt = patches.labels[:4].reshape(2, 2, 20, 20).transpose(0, 2, 1, 3).reshape(40, 40)
    np.testing.assert_array_equal(rebuilt, labels)
    assert (rebuilt.reshape(-1)[:312] == UNLABELED).all()
    # The summary survives the cache.
    again = prepare(tmp_path, patch_size=20, cache_dir=cache_dir)
    assert again.from_cache and again.off_palette == patches.off_palette


def test_rgb_to_labels_vectorised_matches_a_per_colour_loop():
    rng = np.random.default_rng(5)
    mask = rng.integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    mask[::2] = COLOURS[rng.integers(0, 6, size=(25, 60))]
    labels, colours = data.rgb_to_labels(mask)
    expected = np.full((50, 60), UNLABELED, np.uint8)
    for index, colour in enumerate(COLOURS):
        expected[np.all(mask == colour, axis=-1)] = index
    np.testing.assert_array_equal(labels, expected)
    off = ~np.any([np.all(mask == colour, axis=-1) for colour in COLOURS], axis=0)
    assert sum(colours.values()) == int(off.sum()) > 0


# ---------------------------------------------------------------------------------------------
# Patches: crop, positions, scaling


def test_crop_top_left_and_patch_positions(tmp_path, cache_dir):
    h, w, p = 53, 75, 16  # 3 x 4 patches, 5 rows and 11 columns cropped away
    yy, xx = np.mgrid[0:h, 0:w]
    image = np.stack([yy, xx, (yy * w + xx) % 256], axis=-1).astype(np.uint8)
    mask, labels = random_mask(np.random.default_rng(6), h, w)
    write_pair(tmp_path / "Tile 1" / "images", tmp_path / "Tile 1" / "masks", "image_part_001", image, mask)
    patches = prepare(tmp_path, patch_size=p, cache_dir=cache_dir)
    assert len(patches) == 12 and patches.images.shape == (12, p, p, 3)
    assert patches.source.dtype == np.int32 and patches.source.shape == (12, 3)
    for k, (f, r, c) in enumerate(patches.source):
        assert f == 0
        np.testing.assert_array_equal(patches.images[k], image[r * p : (r + 1) * p, c * p : (c + 1) * p])
        np.testing.assert_array_equal(patches.labels[k], labels[r * p : (r + 1) * p, c * p : (c + 1) * p])
    assert [tuple(s) for s in patches.source[:, 1:]] == [(r, c) for r in range(3) for c in range(4)]
    assert list(patches.tile_of_patch) == ["Tile 1"] * 12


def test_image_smaller_than_a_patch_gives_no_patches(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1,), per_tile=1, size=(10, 30))
    make_kaggle(tmp_path, tiles=(2,), per_tile=1, size=(40, 40), seed=1)
    patches = prepare(tmp_path, patch_size=20, cache_dir=cache_dir)
    assert len(patches) == 4 and dict(patches.patches_per_tile()) == {"Tile 1": 0, "Tile 2": 4}
    with pytest.raises(DataError, match=r"no patches in .*at least 64x64 pixels, found at most 40x40"):
        prepare(tmp_path, patch_size=64, cache_dir=cache_dir)


def _sklearn_scaled(patch):
    return MinMaxScaler().fit_transform(patch.reshape(-1, patch.shape[-1])).reshape(patch.shape)


def test_scale_patches_equals_minmaxscaler_per_patch():
    rng = np.random.default_rng(7)
    x = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    x[1, ..., 2] = 77  # zero range: MinMaxScaler gives 0
    x[2] = 255
    x[3, ..., 0] = rng.integers(100, 102, size=(16, 16))
    out = scale_patches(x)
    assert out.dtype == np.float32 and out.shape == x.shape
    expected = np.stack([_sklearn_scaled(p) for p in x])
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)
    assert (out[1, ..., 2] == 0).all() and (out[2] == 0).all()
    np.testing.assert_allclose(scale_patches(x[0]), expected[0], atol=1e-6, rtol=0)
    floats = rng.normal(size=(3, 8, 8, 3)) * 50 + 1e6
    np.testing.assert_allclose(scale_patches(floats), np.stack([_sklearn_scaled(p) for p in floats]), atol=1e-6)


def test_patches_helpers(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1, 2), per_tile=2, size=(40, 20))
    patches = prepare(tmp_path, patch_size=20, cache_dir=cache_dir)
    assert len(patches) == 8
    sub = patches.subset([6, 1])
    assert len(sub) == 2 and sub.files == patches.files
    np.testing.assert_array_equal(sub.images[0], patches.images[6])
    assert list(sub.tile_of_patch) == ["Tile 2", "Tile 1"]
    np.testing.assert_allclose(patches.scaled([6, 1]), scale_patches(patches.images[[6, 1]]))
    assert patches.scaled().shape == (8, 20, 20, 3)


# ---------------------------------------------------------------------------------------------
# Cache


def test_cache_hit_content_change_and_parameter_change(tmp_path, cache_dir):
    make_kaggle(tmp_path / "d", tiles=(1, 2), per_tile=2, size=(40, 40))
    first = prepare(tmp_path / "d", patch_size=20, cache_dir=cache_dir)
    assert not first.from_cache and Path(first.cache_path).parent == cache_dir / "patches"
    (tmp_path / "d").rename(tmp_path / "moved")
    hit = prepare(tmp_path / "moved", patch_size=20, cache_dir=cache_dir)
    assert hit.from_cache and hit.cache_path == first.cache_path and hit.root == str(tmp_path / "moved")
    (tmp_path / "moved").rename(tmp_path / "d")
    assert isinstance(hit.images, np.memmap)
    for name in ("images", "labels", "source"):
        np.testing.assert_array_equal(getattr(hit, name), getattr(first, name))
    assert hit.files == first.files and hit.tiles == first.tiles

    other = prepare(tmp_path / "d", patch_size=10, cache_dir=cache_dir)
    assert not other.from_cache and len(other) == 4 * len(first)

    mask_path = tmp_path / "d" / "Tile 2/masks/image_part_001.png"
    mask = np.array(Image.open(mask_path))
    mask[:5, :5] = PALETTE["Water"]
    Image.fromarray(mask).save(mask_path)
    changed = prepare(tmp_path / "d", patch_size=20, cache_dir=cache_dir)
    assert not changed.from_cache and changed.cache_path != first.cache_path
    assert (changed.labels[8, :5, :5] == CLASS_NAMES.index("Water")).all()
    assert len(list((cache_dir / "patches").iterdir())) == 3


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    make_kaggle(tmp_path / "d", tiles=(1,), per_tile=1, size=(20, 20))
    monkeypatch.setenv("SEGLIB_CACHE", str(tmp_path / "env-cache"))
    patches = prepare(tmp_path / "d", patch_size=10)
    assert Path(patches.cache_path).is_relative_to(tmp_path / "env-cache")
    monkeypatch.delenv("SEGLIB_CACHE")
    assert data.cache_root() == Path("~/.cache/seglib").expanduser()


def test_interrupted_build_leaves_no_cache_entry(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1,), per_tile=3, size=(64, 64))
    path = tmp_path / "Tile 1/images/image_part_003.jpg"
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # the header reads; decoding fails mid-build
    with pytest.raises(DataError):
        prepare(tmp_path, patch_size=16, cache_dir=cache_dir)
    assert list((cache_dir / "patches").iterdir()) == []  # no entry and no temporary folder
    path.write_bytes(good)
    assert len(prepare(tmp_path, patch_size=16, cache_dir=cache_dir)) == 48


def test_unreadable_cache_entry_is_rebuilt(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1,), per_tile=1, size=(20, 20))
    first = prepare(tmp_path, patch_size=10, cache_dir=cache_dir)
    expected = np.array(first.images)
    (Path(first.cache_path) / "images.npy").unlink()
    (Path(first.cache_path) / "images.npy").write_bytes(b"garbage")
    again = prepare(tmp_path, patch_size=10, cache_dir=cache_dir)
    assert not again.from_cache and again.cache_path == first.cache_path
    np.testing.assert_array_equal(again.images, expected)
    assert prepare(tmp_path, patch_size=10, cache_dir=cache_dir).from_cache


def test_prune_cache_keeps_only_the_entry_in_use_and_any_being_written(tmp_path, cache_dir, capsys):
    from seglib.cli import main

    make_kaggle(tmp_path / "d", tiles=(1, 2), per_tile=1, size=(40, 40))
    small, large = (prepare(tmp_path / "d", patch_size=p, cache_dir=cache_dir) for p in (10, 20))
    writing = cache_dir / "patches" / ".in-progress"
    writing.mkdir()
    size = sum(f.stat().st_size for f in Path(small.cache_path).iterdir())
    assert (
        main(["prepare", str(tmp_path / "d"), "--patch-size", "20", "--cache-dir", str(cache_dir), "--prune-cache"])
        == 0
    )
    assert f"pruned 1 other cache entries ({size / 2**20:,.1f} MB)" in capsys.readouterr().out
    assert sorted(p.name for p in (cache_dir / "patches").iterdir()) == sorted(
        [".in-progress", Path(large.cache_path).name]
    )
    assert prepare(tmp_path / "d", patch_size=20, cache_dir=cache_dir).from_cache
    size = sum(f.stat().st_size for f in Path(large.cache_path).iterdir())
    assert data.prune_cache(None, cache_dir) == (1, size)
    assert [p.name for p in (cache_dir / "patches").iterdir()] == [".in-progress"]


def test_no_cache_writes_nothing(tmp_path, cache_dir):
    make_kaggle(tmp_path, tiles=(1,), per_tile=1, size=(20, 20))
    patches = prepare(tmp_path, patch_size=10, cache_dir=cache_dir, cache=False)
    assert len(patches) == 4 and patches.cache_path is None and not cache_dir.exists()


# ---------------------------------------------------------------------------------------------
# Splits and class shares


def _tiled(tmp_path, cache_dir, tiles=(1, 2, 3, 4, 5, 6, 7, 8, 9, 10)):
    make_kaggle(tmp_path, tiles=tiles, per_tile=2, size=(40, 20))
    return prepare(tmp_path, patch_size=10, cache_dir=cache_dir)


def test_seed_split_is_the_originals_train_test_split(tmp_path, cache_dir):
    patches = _tiled(tmp_path, cache_dir)
    splits = split(patches, "seed")
    train, val = train_test_split(np.arange(len(patches)), test_size=0.2, random_state=42)
    np.testing.assert_array_equal(splits["train"], train)
    np.testing.assert_array_equal(splits["val"], val)
    np.testing.assert_array_equal(splits["test"], val)


def test_tiles_split_keeps_every_tile_and_image_on_one_side(tmp_path, cache_dir):
    patches = _tiled(tmp_path, cache_dir)
    splits = split(patches, "tiles")
    assert sorted(np.concatenate(list(splits.values()))) == list(range(len(patches)))
    tiles = {k: set(patches.tile_of_patch[v]) for k, v in splits.items()}
    files = {k: set(patches.source[v, 0]) for k, v in splits.items()}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not tiles[a] & tiles[b] and not files[a] & files[b]
    assert 0.15 <= len(splits["test"]) / len(patches) <= 0.25
    assert len(splits["train"]) > len(splits["val"]) > 0
    assert split(patches, "tiles")["test"].tolist() == splits["test"].tolist()  # deterministic


def test_tiles_split_prefers_tiles_whose_class_mix_matches_the_whole(tmp_path, cache_dir):
    """Ten equal tiles, four of them half water: test and val each get one wet tile."""
    rng = np.random.default_rng(8)
    wet = {2, 3, 4, 5}  # by size alone, tiles 1 and 2 would make the test set
    for tile in range(1, 11):
        labels = rng.integers(0, 4, (40, 40))
        if tile in wet:
            labels[:20] = CLASS_NAMES.index("Water")
        base = tmp_path / f"Tile {tile}"
        write_pair(base / "images", base / "masks", "a", np.zeros((40, 40, 3), np.uint8), COLOURS[labels])
    patches = prepare(tmp_path, patch_size=20, cache_dir=cache_dir)
    splits = split(patches, "tiles")
    tiles = {k: {int(t.split()[1]) for t in patches.tile_of_patch[v]} for k, v in splits.items()}
    assert len(tiles["test"]) == 2 and len(tiles["val"]) == 2
    assert len(tiles["test"] & wet) == 1 and len(tiles["val"] & wet) == 1 and len(tiles["train"] & wet) == 2


def test_tiles_split_with_many_tiles_uses_a_seeded_shuffle(tmp_path, cache_dir):
    rng = np.random.default_rng(9)
    for k in range(30):
        mask, _ = random_mask(rng, 20, 20)
        write_pair(tmp_path / "images", tmp_path / "masks", f"img{k}", np.zeros((20, 20, 3), np.uint8), mask)
    patches = prepare(tmp_path, patch_size=10, cache_dir=cache_dir)
    splits = split(patches, "tiles")
    files = {k: set(patches.source[v, 0]) for k, v in splits.items()}
    assert not (files["train"] & files["val"] or files["train"] & files["test"] or files["val"] & files["test"])
    assert (len(files["test"]), len(files["val"]), len(files["train"])) == (6, 5, 19)
    assert split(patches, "tiles")["val"].tolist() == splits["val"].tolist()
    assert split(patches, "tiles", random_state=1)["val"].tolist() != splits["val"].tolist()


def test_tiles_split_overrides_and_errors(tmp_path, cache_dir):
    patches = _tiled(tmp_path, cache_dir, tiles=(1, 2, 3))
    splits = split(patches, "tiles", test_tiles=["Tile 2"], val_tiles=["Tile 3"])
    assert set(patches.tile_of_patch[splits["test"]]) == {"Tile 2"}
    assert set(patches.tile_of_patch[splits["val"]]) == {"Tile 3"}
    assert set(patches.tile_of_patch[splits["train"]]) == {"Tile 1"}
    with pytest.raises(ValueError, match="unknown tiles"):
        split(patches, "tiles", test_tiles=["Tile 9"])
    with pytest.raises(ValueError, match="unknown split kind"):
        split(patches, "random")
    with pytest.raises(DataError, match="at least 3 more tiles"):
        split(patches.subset(np.flatnonzero(patches.tile_of_patch != "Tile 3")), "tiles")


def test_class_shares():
    labels = np.array([[[0, 0, 1, 5]], [[5, 5, 2, 2]]], dtype=np.uint8)
    np.testing.assert_allclose(class_shares(labels), [2 / 8, 1 / 8, 2 / 8, 0, 0, 3 / 8])
    np.testing.assert_array_equal(data.class_counts(labels, [1]), [0, 0, 2, 0, 0, 2])
    assert class_shares(labels[:0]).sum() == 0
    fake = Patches(
        images=np.zeros((2, 1, 4, 3), np.uint8),
        labels=labels,
        source=np.zeros((2, 3), np.int32),
        files=("a",),
        tiles=("t",),
        patch_size=4,
    )
    shares = split_class_shares(fake, {"a": np.array([0]), "b": np.array([1])})
    np.testing.assert_allclose(shares["a"], [0.5, 0.25, 0, 0, 0, 0.25])
    np.testing.assert_allclose(shares["b"], [0, 0, 0.5, 0, 0, 0.5])


# ---------------------------------------------------------------------------------------------
# Command line


def test_cli_prepare_prints_the_summary(tmp_path, cache_dir, capsys):
    """Also: a missing dataset is one line on stderr and exit 1, as in every sub-command."""
    from seglib.cli import main

    make_kaggle(tmp_path / "d", tiles=(1, 2, 3), per_tile=1, size=(40, 20))
    assert main(["prepare", str(tmp_path / "d"), "--patch-size", "10", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert "3 image/mask pairs" in out and "24 patches of 10x10" in out
    assert "patches per tile: Tile 1: 8, Tile 2: 8, Tile 3: 8" in out
    assert "off-palette masks: 0" in out and "class shares: Building" in out and "cache miss" in out
    assert (
        main(["prepare", str(tmp_path / "d"), "--patch-size", "10", "--cache-dir", str(cache_dir), "--split", "tiles"])
        == 0
    )
    out = capsys.readouterr().out
    assert "cache hit" in out and "tiles split test: 8 patches (tiles" in out
    assert main(["prepare", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("seglib prepare: dataset folder") and "does not exist" in err and "Traceback" not in err
