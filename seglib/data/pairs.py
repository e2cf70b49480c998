"""Which image goes with which mask: the Kaggle layout (tiles of images/ and masks/) or a flat one.

Pairs are matched by file stem and listed in natural order ('Tile 10' after 'Tile 9'), so a
dataset gives the same pairs, in the same order, on every machine.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from seglib.data.errors import DataError, DatasetNotFoundError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".gif")
GET_DATA_HINT = (
    "Get the real data from Kaggle (dataset humansintheloop/semantic-segmentation-of-aerial-"
    "imagery, e.g. `kagglehub.dataset_download('humansintheloop/semantic-segmentation-of-"
    "aerial-imagery')`) and pass its 'Semantic segmentation dataset' folder, or pass no path "
    "to use the embedded default dataset (seglib.data.embedded.embedded_dataset())."
)


class Pair(NamedTuple):
    """One image and its mask, with the tile (Kaggle layout) or image stem (flat) it belongs to."""

    image: Path
    mask: Path
    tile: str


def natural_key(text: str) -> list:
    """Sort key under which 'Tile 10' follows 'Tile 9'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _files_by_stem(folder: Path, suffixes: Sequence[str], kind: str) -> dict[str, Path]:
    """Files of ``folder`` with one of ``suffixes`` (any case) by stem; hidden files ignored."""
    found: dict[str, Path] = {}
    for path in folder.iterdir():
        if path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in suffixes:
            continue
        if path.stem in found:
            raise DataError(
                f"two {kind} files share the stem {path.stem!r} in {folder}: "
                f"{found[path.stem].name} and {path.name}; expected one per stem"
            )
        found[path.stem] = path
    return found


def _pair_folder(images_dir: Path, masks_dir: Path, tile: str | None) -> list[Pair]:
    """Pairs of one images/masks folder pair, matched by stem; orphans are errors."""
    for folder in (images_dir, masks_dir):
        if not folder.is_dir():
            raise DatasetNotFoundError(
                f"folder {folder} is missing: expected '{images_dir.name}' and "
                f"'{masks_dir.name}' folders side by side in {folder.parent}. " + GET_DATA_HINT
            )
    images = _files_by_stem(images_dir, IMAGE_SUFFIXES, "image")
    masks = _files_by_stem(masks_dir, MASK_SUFFIXES, "mask")
    no_mask = sorted(set(images) - set(masks), key=natural_key)
    no_image = sorted(set(masks) - set(images), key=natural_key)
    if no_mask:
        names = ", ".join(str(images[s]) for s in no_mask)
        raise DataError(f"image without mask: {names}; expected a mask with the same stem in {masks_dir}")
    if no_image:
        names = ", ".join(str(masks[s]) for s in no_image)
        raise DataError(f"mask without image: {names}; expected an image with the same stem in {images_dir}")
    return [
        Pair(images[stem], masks[stem], tile if tile is not None else stem) for stem in sorted(images, key=natural_key)
    ]


def find_pairs(root: str | os.PathLike) -> list[Pair]:
    """Image/mask pairs under ``root``, in a deterministic (natural) order.

    Kaggle layout: ``root/Tile N/images/*.jpg`` + ``root/Tile N/masks/*.png``; the tile is
    the folder name. Flat layout: ``root/images`` + ``root/masks``, paired by stem; each image
    is its own tile (so a ``tiles`` split holds out whole images). A root holding a single
    folder (what kagglehub downloads) is looked into.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetNotFoundError(f"dataset folder {root} does not exist. " + GET_DATA_HINT)
    if (root / "images").is_dir() or (root / "masks").is_dir():
        pairs = _pair_folder(root / "images", root / "masks", None)
    else:
        tiles = sorted(
            (d for d in root.iterdir() if (d / "images").is_dir() or (d / "masks").is_dir()),
            key=lambda d: natural_key(d.name),
        )
        if not tiles:
            subdirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
            if len(subdirs) == 1:
                return find_pairs(subdirs[0])
            raise DatasetNotFoundError(
                f"no image/mask pairs in {root}: expected 'Tile N/images' + 'Tile N/masks' "
                f"folders (Kaggle layout) or 'images' + 'masks' folders (flat layout). " + GET_DATA_HINT
            )
        pairs = [p for d in tiles for p in _pair_folder(d / "images", d / "masks", d.name)]
    if not pairs:
        raise DatasetNotFoundError(f"no image/mask pairs in {root}: the folders are empty. " + GET_DATA_HINT)
    return pairs
