"""The embedded default dataset: small, deterministic, aerial-looking scenes in the Kaggle layout.

What the quick profile, the CI and a fresh machine train on when the real data is absent.
Scenes are drawn with numpy alone from fixed seeds (land, water bodies, vegetation, a road
grid, buildings with shadows, unlabeled margins); each class has its own colour family plus
texture and noise, so a small U-Net learns it in a few epochs, and the files mimic the real
ones (JPEG images, PNG masks, some masks in palette mode, sizes differing by a pixel inside a
tile, a few off-palette black pixels). They are read by the same ``seglib.data.prepare``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from seglib.data.cache import cache_root
from seglib.palette import PALETTE

# Bump when the generated files change, so cached copies are rewritten.
EMBEDDED_VERSION = 2
SEED = 20240611
JPEG_QUALITY = 90
IMAGES_PER_TILE = 3
# (width, height) per tile; at patch size 64 these give 264 patches (36, 27, 60, 36, 45, 60).
TILE_SIZES = ((260, 230), (200, 210), (330, 270), (290, 200), (240, 330), (330, 280))
PALETTE_MODE_TILES = (2,)  # tiles whose masks are written as palette ('P') PNGs, as Tile 2 and 4
OFF_PALETTE_IMAGE = (6, 2)  # (tile, image) whose mask has a small black blotch, as Tile 8

BUILDING, LAND, ROAD, VEGETATION, WATER, UNLABELED = range(6)
# Mean colour per class (aerial Dubai: sandy land, grey roads, pale roofs, green, blue-green).
CLASS_COLOURS = np.array(
    [
        (196, 188, 176),  # Building (roof colour varies per building)
        (201, 170, 128),  # Land
        (98, 98, 104),  # Road
        (72, 112, 58),  # Vegetation
        (38, 96, 128),  # Water
        (30, 30, 34),  # Unlabeled
    ],
    dtype=np.float32,
)
ROOF_COLOURS = np.array(
    [(214, 210, 200), (180, 176, 168), (150, 120, 96), (226, 222, 214), (170, 160, 140)],
    dtype=np.float32,
)


def smooth_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Bilinearly interpolated random grid in [0, 1]: blobs about ``cell`` pixels across."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.random((gh, gw), dtype=np.float32)
    y = np.arange(height, dtype=np.float32) / cell
    x = np.arange(width, dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _roads(rng: np.random.Generator, label: np.ndarray) -> None:
    """A rough grid of straight roads, 5-10 px wide, plus one diagonal."""
    h, w = label.shape
    for axis, length in ((0, h), (1, w)):
        for at in rng.choice(np.arange(20, length - 20), size=rng.integers(1, 3), replace=False):
            half = int(rng.integers(3, 6))
            if axis == 0:
                label[max(at - half, 0) : at + half, :] = ROAD
            else:
                label[:, max(at - half, 0) : at + half] = ROAD
    yy, xx = np.mgrid[0:h, 0:w]
    slope, offset = rng.uniform(-1.5, 1.5), rng.uniform(0, w)
    label[np.abs(xx - (slope * yy + offset)) < rng.uniform(3, 5)] = ROAD


def _buildings(rng: np.random.Generator, label: np.ndarray, roof: np.ndarray) -> np.ndarray:
    """Rectangular buildings on land; returns their shadow mask (offset down-right)."""
    h, w = label.shape
    shadow = np.zeros((h, w), dtype=bool)
    for _ in range(int(h * w / 900)):
        bh, bw = (int(v) for v in rng.integers(8, 30, size=2))
        y, x = int(rng.integers(0, h - bh)), int(rng.integers(0, w - bw))
        if (label[y : y + bh, x : x + bw] != LAND).mean() > 0.1:
            continue
        label[y : y + bh, x : x + bw] = BUILDING
        roof[y : y + bh, x : x + bw] = ROOF_COLOURS[rng.integers(len(ROOF_COLOURS))]
        shadow[y + 3 : y + bh + 3, x + 3 : x + bw + 3] = True
    return shadow & (label == LAND)


def scene(rng: np.random.Generator, height: int, width: int, black_blotch: bool = False):
    """One aerial-looking scene: RGB uint8 image ``(H, W, 3)`` and RGB uint8 mask."""
    label = np.full((height, width), LAND, dtype=np.uint8)
    water = smooth_noise(rng, height, width, cell=90)
    label[water > rng.uniform(0.68, 0.78)] = WATER
    green = smooth_noise(rng, height, width, cell=25)
    label[(green > 0.72) & (label == LAND)] = VEGETATION
    _roads(rng, label)
    roof = np.zeros((height, width, 3), dtype=np.float32)
    shadow = _buildings(rng, label, roof)
    edge = int(rng.integers(0, 12))
    if edge:
        label[:, width - edge :] = UNLABELED  # the real images' unlabeled margins

    image = CLASS_COLOURS[label]
    is_building = label == BUILDING
    image[is_building] = roof[is_building]
    texture = smooth_noise(rng, height, width, cell=6)[..., None] - 0.5
    shade = smooth_noise(rng, height, width, cell=60)[..., None] - 0.5
    image += texture * np.array([40, 36, 30], np.float32) + shade * 30
    image[shadow] *= 0.55
    image += rng.normal(0, 6, size=image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)

    mask = np.array(list(PALETTE.values()), dtype=np.uint8)[label]
    if black_blotch:
        y, x = int(rng.integers(0, height - 20)), int(rng.integers(0, width - 30))
        mask[y : y + 20, x : x + 30] = 0
    return image, mask


def _palette_png(mask: np.ndarray) -> Image.Image:
    """The RGB mask as a palette ('P') image, as some of the real masks are stored."""
    colours = np.array([*list(PALETTE.values()), (0, 0, 0)], dtype=np.uint8)
    weights = np.array([65536, 256, 1])
    codes = colours.astype(np.int64) @ weights
    order = np.argsort(codes)
    index = order[np.searchsorted(codes[order], mask.astype(np.int64) @ weights)].astype(np.uint8)
    image = Image.fromarray(index)
    image.putpalette(colours.ravel().tolist())
    return image


def write_embedded(root: str | os.PathLike) -> Path:
    """Write the embedded dataset into ``root`` (Kaggle layout) and return ``root``.

    Deterministic: the same files, byte for byte, on every call with the same numpy/Pillow.
    """
    root = Path(root)
    for tile, (width, height) in enumerate(TILE_SIZES, start=1):
        images_dir, masks_dir = root / f"Tile {tile}" / "images", root / f"Tile {tile}" / "masks"
        images_dir.mkdir(parents=True, exist_ok=True)
        masks_dir.mkdir(parents=True, exist_ok=True)
        for part in range(1, IMAGES_PER_TILE + 1):
            rng = np.random.default_rng([SEED, tile, part])
            jitter = int(part == 2)  # one image per tile a pixel narrower, as in the real tiles
            blotch = (tile, part) == OFF_PALETTE_IMAGE
            image, mask = scene(rng, height, width - jitter, black_blotch=blotch)
            name = f"image_part_{part:03d}"
            Image.fromarray(image).save(images_dir / f"{name}.jpg", quality=JPEG_QUALITY, optimize=False)
            mask_image = _palette_png(mask) if tile in PALETTE_MODE_TILES else Image.fromarray(mask)
            mask_image.save(masks_dir / f"{name}.png", optimize=False)
    return root


def embedded_dataset(cache_dir: str | os.PathLike | None = None) -> Path:
    """The embedded dataset's root, written once into the seglib cache folder.

    Written to a temporary folder and renamed into place, so an interrupted write never
    leaves a half dataset behind.
    """
    base = cache_root(cache_dir) / "embedded"
    root = base / f"v{EMBEDDED_VERSION}"
    if root.is_dir():
        return root
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".v", dir=base))
    try:
        write_embedded(tmp)
        try:
            os.rename(tmp, root)
        except OSError:
            if not root.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
