"""Checked pairs -> class labels -> patches (cached on disk); ``seglib.data.pairs`` finds the pairs.

The original notebook read every image, min-max scaled every patch in float64 with one
``MinMaxScaler`` per patch and one-hot encoded the masks: 34-43 s and 8.5 GB for 1305
patches. Here the patches are kept as uint8 images and uint8 class indices (340 MB for the
same data), decoded by a thread pool (PIL releases the GIL while decoding), mapped from
colour to class with one table look-up, cached on disk keyed by the files' bytes, and scaled
to float32 only when a batch is made (``scale_patches``), with the original's arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglib.data import cache as patch_cache
from seglib.data.errors import DataError
from seglib.data.pairs import Pair, find_pairs
from seglib.palette import CLASS_NAMES, NUM_CLASSES, PALETTE, UNLABELED, hex_colour
from seglib.settings import Settings

log = logging.getLogger(__name__)

COLOUR_NAMES = {(0, 0, 0): "black", (255, 255, 255): "white"}
OFF_PALETTE = 255  # label of an off-palette pixel until it is counted and made Unlabeled
LOOKUP_CHUNK = 1 << 15  # pixels per colour look-up: its int64 indices stay in cache
PIL_BLOCKS = 64  # PIL's 16 MB blocks kept for reuse while decoding (both threads' images)


# ---------------------------------------------------------------------------------------------
# Reading and labelling


def _open(data: bytes, name: str) -> Image.Image:
    """An opened (header-only) image, or a DataError naming the file."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        found = f"{len(data):,} bytes of no image format, starting {data[:12]!r}"
    except (OSError, ValueError) as exc:
        found = str(exc)
    raise DataError(f"cannot read {name}: expected an image file, found {found}")


def _converted(image: Image.Image, name: str, mode: str = "RGB") -> Image.Image:
    """``image`` decoded and in ``mode`` (any input mode), or a DataError naming the file."""
    try:
        image.load()
        return image if image.mode == mode else image.convert(mode)
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(
            f"cannot decode {name}: expected a complete image, found {exc} "
            "(the file is truncated or corrupt; download it again)"
        ) from None


def _decode(image: Image.Image, name: str) -> np.ndarray:
    """Pixels of ``image`` as uint8 RGB ``(H, W, 3)``."""
    return np.asarray(_converted(image, name))


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file of any mode (RGB, P, RGBA, L, ...) as uint8 RGB ``(H, W, 3)``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    return _decode(_open(data, str(path)), str(path))


def _colour_code(rgb: Sequence[int]) -> int:
    """The colour as packed by ``_pack`` (little-endian RGBX viewed as uint32)."""
    r, g, b = (int(c) for c in rgb)
    return r | (g << 8) | (b << 16)


_LABEL_LUT: np.ndarray | None = None


def _label_lut() -> np.ndarray:
    """2**24-entry table packed colour -> class index, OFF_PALETTE for any other colour (16 MB)."""
    global _LABEL_LUT
    if _LABEL_LUT is None:
        lut = np.full(1 << 24, OFF_PALETTE, dtype=np.uint8)
        for index, rgb in enumerate(PALETTE.values()):
            lut[_colour_code(rgb)] = index
        _LABEL_LUT = lut
    return _LABEL_LUT


def _pack(mask: Image.Image, name: str) -> np.ndarray:
    """Mask pixels as uint32 colour codes ``(H, W)``, any mode.

    PIL keeps RGB pixels as 4 bytes (R, G, B, pad); exporting that raw layout and viewing it
    as one little-endian word per pixel saves the conversion and the 3-byte repacking.
    """
    rgb = _converted(mask, name)
    raw = rgb.tobytes("raw", "RGBX")
    return np.frombuffer(raw, dtype="<u4").reshape(rgb.size[1], rgb.size[0])


def labels_from_codes(codes: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Class indices for packed colours, and the off-palette colours' pixel counts.

    Off-palette pixels become Unlabeled: the original silently made them Building (class 0),
    which taught the model 545,723 black pixels of Tile 8 as buildings.
    """
    lut, flat = _label_lut(), codes.reshape(-1)
    labels = np.empty(flat.shape, dtype=np.uint8)
    for start in range(0, len(flat), LOOKUP_CHUNK):
        part = slice(start, start + LOOKUP_CHUNK)
        np.take(lut, flat[part] & 0xFFFFFF, out=labels[part])
    labels = labels.reshape(codes.shape)
    off = labels == OFF_PALETTE
    colours: dict[str, int] = {}
    if off.any():
        values, counts = np.unique(codes[off] & 0xFFFFFF, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        for value, count in zip(values[order], counts[order]):
            rgb = (int(value) & 0xFF, (int(value) >> 8) & 0xFF, (int(value) >> 16) & 0xFF)
            colours[hex_colour(rgb)] = int(count)
        labels[off] = UNLABELED
    return labels, colours


def rgb_to_labels(mask: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Class indices uint8 ``(H, W)`` for an RGB mask ``(H, W, 3)``, plus off-palette counts."""
    mask = np.asarray(mask, dtype=np.uint8)
    codes = (
        mask[..., 0].astype(np.uint32) | (mask[..., 1].astype(np.uint32) << 8) | (mask[..., 2].astype(np.uint32) << 16)
    )
    return labels_from_codes(codes)


def describe_off_palette(mask_name: str, colours: dict[str, int]) -> str:
    """One line: which off-palette colours a mask has and how many pixels, all made Unlabeled."""
    total = sum(colours.values())
    parts = []
    for hex_code, count in colours.items():
        rgb = tuple(int(hex_code[i : i + 2], 16) for i in (1, 3, 5))
        label = COLOUR_NAMES.get(rgb)
        parts.append(f"{count:,} {label} ({hex_code})" if label else f"{count:,} {hex_code}")
    return f"{mask_name} has {total:,} off-palette pixels, labelled Unlabeled: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------
# Patches


def _patchify():
    """patchify.patchify, imported on first use so that seglib imports without it."""
    try:
        from patchify import patchify
    except ImportError:
        raise ImportError(
            "seglib.data needs patchify to cut patches; install it with "
            "`pip install --no-deps patchify==0.2.3` (--no-deps: it declares numpy<2 but works "
            "with numpy 2, and a plain install would downgrade numpy)"
        ) from None
    return patchify


def scale_patches(patches: np.ndarray) -> np.ndarray:
    """Min-max scale each patch per channel to float32 [0, 1], as the original's MinMaxScaler.

    Same arithmetic as ``MinMaxScaler().fit_transform(patch.reshape(-1, 3))`` per patch: a
    channel whose range is (near) zero is shifted to 0, not divided. Accepts ``(P, P, C)`` or
    ``(N, P, P, C)``, uint8 or float.
    """
    x = np.asarray(patches)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4:
        raise ValueError(f"expected patches of shape (N, P, P, C) or (P, P, C), found {x.shape}")
    out = np.empty(x.shape, dtype=np.float32)
    channels = x.shape[-1]
    for start in range(0, len(x), 64):  # bounded temporaries for large sets
        chunk, dest = x[start : start + 64], out[start : start + 64]
        # Per channel: numpy reduces x[..., c] over (1, 2) ~25x faster than x over (1, 2).
        low = np.stack([chunk[..., c].min(axis=(1, 2)) for c in range(channels)], -1)
        high = np.stack([chunk[..., c].max(axis=(1, 2)) for c in range(channels)], -1)
        low, span = low.astype(np.float64), high.astype(np.float64) - low.astype(np.float64)
        # sklearn's _handle_zeros_in_scale: a near-zero range counts as 1.
        span[span < 10 * np.finfo(np.float64).eps] = 1.0
        low, scale = low[:, None, None, :], (1.0 / span)[:, None, None, :]
        if np.issubdtype(x.dtype, np.integer):  # exact in float32: small integers
            dest[...] = chunk
            dest -= low.astype(np.float32)
            dest *= scale.astype(np.float32)
        else:  # arbitrary floats lose digits in float32 before the shift; shift in float64
            dest[...] = (chunk - low) * scale
    return out[0] if single else out


@dataclass
class Patches:
    """Non-overlapping patches of a dataset, with where each came from.

    ``images`` uint8 ``(N, P, P, 3)``; ``labels`` uint8 ``(N, P, P)`` class indices;
    ``source`` int32 ``(N, 3)``: index into ``files``, patch row, patch column. Arrays loaded
    from the cache are read-only memory maps.
    """

    images: np.ndarray
    labels: np.ndarray
    source: np.ndarray
    files: tuple[str, ...]
    tiles: tuple[str, ...]
    patch_size: int
    masks: tuple[str, ...] = ()
    off_palette: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: tuple[str, ...] = ()
    root: str = ""
    cache_path: str | None = None
    from_cache: bool = False
    seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.images)

    @property
    def tile_of_patch(self) -> np.ndarray:
        """Tile name of every patch ``(N,)``."""
        return np.asarray(self.tiles, dtype=object)[self.source[:, 0].astype(np.intp)]

    def scaled(self, index=None) -> np.ndarray:
        """Model input: float32 min-max scaled images, of all patches or of ``index``."""
        return scale_patches(self.images if index is None else self.images[index])

    def subset(self, index) -> Patches:
        """The patches at ``index`` (files and tiles kept, so ``source`` stays valid)."""
        index = np.asarray(index)
        return replace(
            self,
            images=self.images[index],
            labels=self.labels[index],
            source=self.source[index],
        )

    def patches_per_tile(self) -> OrderedDict[str, int]:
        """Patch count of every tile, in file order (tiles without patches count 0)."""
        counts: OrderedDict[str, int] = OrderedDict((t, 0) for t in dict.fromkeys(self.tiles))
        for file_index, n in zip(*np.unique(self.source[:, 0], return_counts=True)):
            counts[self.tiles[file_index]] += int(n)
        return counts

    def off_palette_lines(self) -> list[str]:
        """One line per mask with off-palette colours (what ``prepare`` logs)."""
        return [describe_off_palette(mask, colours) for mask, colours in self.off_palette.items()]

    def summary(self) -> str:
        """A few lines for people: files, patches per tile, off-palette files, class shares."""
        per_tile = ", ".join(f"{t}: {n}" for t, n in self.patches_per_tile().items())
        shares = class_shares(self.labels)
        lines = [
            f"{len(self.files)} image/mask pairs in {self.root or '?'} -> {len(self)} patches "
            f"of {self.patch_size}x{self.patch_size}",
            f"patches per tile: {per_tile}",
            "class shares: " + ", ".join(f"{n} {s:.1%}" for n, s in zip(CLASS_NAMES, shares)),
            f"off-palette masks: {len(self.off_palette)}",
            *("  " + line for line in self.off_palette_lines()),
        ]
        if self.skipped:
            lines.append(f"skipped pairs: {len(self.skipped)}")
            lines.extend("  " + s for s in self.skipped)
        state = "hit" if self.from_cache else ("miss" if self.cache_path else "off")
        lines.append(f"cache {state} ({self.cache_path or 'no cache'}), {self.seconds:.2f} s")
        return "\n".join(lines)


class _Plan(NamedTuple):
    """One pair to decode: where its patches go in the output arrays."""

    index: int
    image_name: str
    mask_name: str
    tile: str
    image: Image.Image
    mask: Image.Image
    rows: int
    cols: int
    offset: int


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _fill(plan: _Plan, patch_size: int, images: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """Decode one pair, cut its patches into ``images``/``labels`` in place; off-palette counts."""
    patchify = _patchify()
    p, rows, cols, at = patch_size, plan.rows, plan.cols, plan.offset
    n = rows * cols
    try:
        label_map, colours = labels_from_codes(_pack(plan.mask, plan.mask_name))
        plan.mask.close()  # frees the decoded pixels now, not when the plan goes
        rgb = _decode(plan.image, plan.image_name)
        plan.image.close()
        if n:
            h, w = rows * p, cols * p
            view = patchify(rgb[:h, :w], (p, p, 3), step=p)  # (rows, cols, 1, p, p, 3), no copy
            images[at : at + n].reshape(rows, cols, 1, p, p, 3)[...] = view
            view = patchify(label_map[:h, :w], (p, p), step=p)
            labels[at : at + n].reshape(rows, cols, p, p)[...] = view
    finally:
        plan.mask.close()
        plan.image.close()
    return colours


def _log_findings(patches: Patches, embedded: bool) -> None:
    """Say what the preparation found; the embedded dataset's black blotch is there on purpose
    (it mimics the real Tile 8's), so it is noted, not warned about."""
    for line in patches.off_palette_lines():
        log.log(logging.INFO if embedded else logging.WARNING, line)
    for line in patches.skipped:
        log.warning("skipped %s", line)


def prepare(
    root: str | os.PathLike | None = None,
    patch_size: int = Settings.patch_size,
    *,
    skip_mismatched: bool = False,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    workers: int | None = None,
) -> Patches:
    """Patches of the dataset at ``root`` (None: the embedded default dataset), cached on disk.

    Each image is cropped from the top-left to a multiple of ``patch_size`` and cut into
    non-overlapping patches with patchify, as the original did. The cache entry is keyed by
    the files' bytes, names and the parameters, so a changed file or parameter rebuilds and
    an unchanged dataset loads at once (memory-mapped, read-only). ``skip_mismatched`` skips
    (and lists) pairs whose image and mask sizes differ instead of failing.
    """
    start = time.perf_counter()
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive number of pixels, found {patch_size}")
    embedded = root is None
    if embedded:
        from seglib.data.embedded import embedded_dataset

        root = embedded_dataset(cache_dir=cache_dir)
    root = Path(root).expanduser()
    pairs = find_pairs(root)
    contents = _read_pairs(pairs)
    params = {"patch_size": int(patch_size), "skip_mismatched": bool(skip_mismatched), "palette": list(PALETTE.items())}
    entry = None
    if cache:
        named = (
            (f"{_relative(path, root)}\0{pair.tile}", data)
            for pair, datas in zip(pairs, contents)
            for path, data in zip(pair[:2], datas)
        )
        entry = patch_cache.entry_for(named, params, cache_dir)
        if patch_cache.is_complete(entry):
            try:
                patches = _from_cache(entry, root, start)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("removing unreadable cache entry %s (%s); rebuilding", entry, exc)
                patch_cache.remove(entry)
            else:  # what the preparation found was said when it was made; the summary repeats it
                return patches

    plans, skipped = _plan(pairs, contents, root, patch_size, skip_mismatched)
    del contents
    if not any(plan.rows * plan.cols for plan in plans):
        largest = max((plan.image.size for plan in plans), key=lambda s: s[0] * s[1], default=(0, 0))
        raise DataError(
            f"no patches in {root}: expected images of at least {patch_size}x{patch_size} "
            f"pixels, found at most {largest[0]}x{largest[1]}; use a smaller patch_size"
        )
    tmp = patch_cache.new_entry_folder(entry) if entry is not None else None
    try:
        patches = _build(plans, root, patch_size, skipped, tmp, workers)
        if tmp is not None:
            patch_cache.publish(tmp, entry, {"source": patches.source}, _meta(patches))
            tmp = None
            patches.cache_path = str(entry)
    finally:
        if tmp is not None:
            patch_cache.remove(tmp)
    patches.seconds = time.perf_counter() - start
    _log_findings(patches, embedded)
    return patches


def _read_pairs(pairs: list[Pair]) -> list[tuple[bytes, bytes]]:
    """Every pair's image and mask bytes (read once: hashed for the cache, then decoded)."""
    contents = []
    for pair in pairs:
        try:
            contents.append((pair.image.read_bytes(), pair.mask.read_bytes()))
        except OSError as exc:
            raise DataError(f"cannot read {exc.filename}: {exc.strerror}") from None
    return contents


def _meta(patches: Patches) -> dict:
    return {
        "root": patches.root,
        "patch_size": patches.patch_size,
        "files": list(patches.files),
        "masks": list(patches.masks),
        "tiles": list(patches.tiles),
        "skipped": list(patches.skipped),
        "off_palette": [[mask, colours] for mask, colours in patches.off_palette.items()],
    }


def _from_cache(entry: Path, root: Path, seconds_from: float) -> Patches:
    arrays, meta = patch_cache.load(entry)
    return Patches(
        images=arrays["images"],
        labels=arrays["labels"],
        source=np.asarray(arrays["source"]),
        files=tuple(meta["files"]),
        tiles=tuple(meta["tiles"]),
        patch_size=int(meta["patch_size"]),
        masks=tuple(meta["masks"]),
        off_palette={k: dict(v) for k, v in meta["off_palette"]},
        skipped=tuple(meta["skipped"]),
        root=str(root),
        cache_path=str(entry),
        from_cache=True,
        seconds=time.perf_counter() - seconds_from,
    )


def _build(plans, root, patch_size, skipped, folder, workers) -> Patches:
    """Decode every planned pair into fresh arrays (memory maps in ``folder`` when caching)."""
    total = plans[-1].offset + plans[-1].rows * plans[-1].cols if plans else 0
    arrays = patch_cache.allocate(
        folder, {"images": (total, patch_size, patch_size, 3), "labels": (total, patch_size, patch_size)}
    )
    images, labels = arrays["images"], arrays["labels"]
    source = np.empty((total, 3), dtype=np.int32)
    for file_index, plan in enumerate(plans):
        n = plan.rows * plan.cols
        rows, cols = np.divmod(np.arange(n, dtype=np.int32), plan.cols)
        at = slice(plan.offset, plan.offset + n)
        source[at] = np.stack([np.full(n, file_index, np.int32), rows, cols], axis=1)
    off_palette = _decode_all(plans, patch_size, images, labels, workers)
    for array in (images, labels, source):
        array.flags.writeable = False  # the same contract as a cache hit's read-only maps
    return Patches(
        images=images,
        labels=labels,
        source=source,
        files=tuple(plan.image_name for plan in plans),
        tiles=tuple(plan.tile for plan in plans),
        patch_size=int(patch_size),
        masks=tuple(plan.mask_name for plan in plans),
        off_palette={p.mask_name: off_palette[p.index] for p in plans if off_palette[p.index]},
        skipped=tuple(skipped),
        root=str(root),
    )


def _plan(pairs, contents, root, patch_size, skip_mismatched) -> tuple[list[_Plan], list[str]]:
    """Open every pair's headers, check sizes, and assign each pair its output rows."""
    plans: list[_Plan] = []
    mismatched: list[str] = []
    offset = 0
    for index, (pair, (image_bytes, mask_bytes)) in enumerate(zip(pairs, contents)):
        image_name, mask_name = _relative(pair.image, root), _relative(pair.mask, root)
        image = _open(image_bytes, image_name)
        mask = _open(mask_bytes, mask_name)
        if image.size != mask.size:
            mismatched.append(
                f"{image_name} is {image.size[0]}x{image.size[1]} but {mask_name} is "
                f"{mask.size[0]}x{mask.size[1]} (width x height)"
            )
            continue
        cols, rows = image.size[0] // patch_size, image.size[1] // patch_size
        plans.append(_Plan(index, image_name, mask_name, pair.tile, image, mask, rows, cols, offset))
        offset += rows * cols
    if mismatched and not skip_mismatched:
        raise DataError(
            "image and mask sizes differ; expected equal sizes: "
            + "; ".join(mismatched)
            + " (pass skip_mismatched=True to skip such pairs)"
        )
    return plans, mismatched


def _decode_all(plans, patch_size, images, labels, workers) -> dict[int, dict[str, int]]:
    """Decode all pairs on a thread pool, largest first so the pool ends together."""
    workers = workers or min(len(plans), os.cpu_count() or 1) or 1
    _label_lut()  # built once, before the threads need it
    order = sorted(plans, key=lambda p: -(p.image.size[0] * p.image.size[1]))
    with _pil_block_cache(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {plan.index: pool.submit(_fill, plan, patch_size, images, labels) for plan in order}
        return {index: future.result() for index, future in futures.items()}


@contextlib.contextmanager
def _pil_block_cache(blocks: int = PIL_BLOCKS):
    """Let PIL reuse its freed image blocks while decoding, then restore its setting.

    PIL returns each decoded image's memory to the system by default, so every image costs
    fresh page faults: reusing the blocks saves about a third of the cold preparation's
    system time (and lowers its peak memory).
    """
    core = getattr(Image, "core", None)
    if core is None or not hasattr(core, "set_blocks_max"):
        yield
        return
    before = core.get_blocks_max()
    core.set_blocks_max(max(before, blocks))
    try:
        yield
    finally:
        core.set_blocks_max(before)


# ---------------------------------------------------------------------------------------------
# Class counts


def class_counts(labels: np.ndarray, index=None) -> np.ndarray:
    """Pixels per class, int64 ``(NUM_CLASSES,)``, of ``labels`` (or of ``labels[index]``).

    Counted a few patches at a time: bincount widens its input to int64, which for all of the
    real data at once would be 680 MB.
    """
    labels = np.asarray(labels) if not isinstance(labels, np.ndarray) else labels
    rows = np.arange(len(labels)) if index is None else np.sort(np.asarray(index))
    per_row = int(np.prod(labels.shape[1:])) if labels.ndim > 1 else 1
    step = max(1, (1 << 21) // max(per_row, 1))
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for start in range(0, len(rows), step):
        chunk = labels[rows[start : start + step]]
        counts += np.bincount(chunk.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    return counts


def class_shares(labels: np.ndarray, index=None) -> np.ndarray:
    """Share of pixels per class, float64 ``(NUM_CLASSES,)`` summing to 1 (zeros if empty)."""
    counts = class_counts(labels, index)
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)
