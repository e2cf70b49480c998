"""Whole images -> class maps: reflect-padded windows, blended smoothly, strip by strip.

The model sees square windows of its input size, each min-max scaled on its own exactly as
the training patches were (``scale_patches``). An image of any size is reflect-padded: a
mirrored border keeps a window's per-channel range that of real pixels, where zeros would
stretch it. ``mode="blend"`` (the default) lays windows at half a window's stride and
weights each prediction by a Hann window, so the window borders, where a U-Net sees the
least context, count the least and leave no seams; ``mode="tiles"`` is the training's
non-overlapping cut. ``tta=True`` averages the 8 flips and rotations (each undone).

Only the band of rows that one row of windows touches is held as probabilities (window
height x padded width x classes, float32); finished rows leave as a uint8 class map. TIFFs
are read by strips with rasterio when the ``geo`` extra is installed, and a GeoTIFF gives a
GeoTIFF mask with the same CRS and transform.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
from PIL import Image, UnidentifiedImageError

from seglib.data import CLASS_NAMES, NUM_CLASSES, PALETTE, DataError, read_rgb, rgb_to_labels, scale_patches
from seglib.metrics import confusion_matrix, iou_from_confusion, mean_of_present
from seglib.train import load_model

MODES = ("tiles", "blend")
SCORE_MODES = ("tiles", "blend", "blend+tta")
DEFAULT_BATCH_SIZE = 8  # windows per model call (x 8 calls per batch with tta)
# The 8 symmetries of a square: quarter turns, without and with a left-right flip.
DIHEDRAL = tuple((turns, flip) for flip in (False, True) for turns in range(4))
PALETTE_RGB = np.array(list(PALETTE.values()), dtype=np.uint8)
OVERLAY_ALPHA = 0.45  # weight of the class colour over the image
OVERLAY_QUALITY = 90  # JPEG quality of the overlay
ROW_BLOCK = 512  # rows per step when counting or colouring a class map: bounded temporaries
TIFF_SUFFIXES = (".tif", ".tiff")
# ModelPixelScale, ModelTiepoint, ModelTransformation, GeoKeyDirectory: any one georeferences.
GEOTIFF_TAGS = {33550, 33922, 34264, 34735}
GEO_HINT = 'install the GeoTIFF extra: pip install "seglib[geo]" (rasterio)'
READABLE_DTYPES = ("uint8", "uint16")
# Pillow modes without colour (and "I;16...": 16-bit greyscale), which the model cannot read.
GREY_MODES = {
    "1": "1-bit black and white",
    "L": "greyscale",
    "LA": "greyscale with alpha",
    "La": "greyscale with alpha",
    "I": "32-bit greyscale",
    "F": "floating-point greyscale",
}
GDAL_CACHE_BYTES = 64 * 2**20  # GDAL's block cache while reading by strips
OVERLAY_MAX_PIXELS = 25_000_000  # larger images get an overlay subsampled to at most this


# ---------------------------------------------------------------------------------------------
# The model


def patch_size_of(model) -> int:
    """The model's window side P, after checking it maps (P, P, 3) images to the six classes."""
    inputs, outputs = model.input_shape, model.output_shape
    if not (
        isinstance(inputs, tuple)
        and len(inputs) == 4
        and inputs[1] is not None
        and inputs[1] == inputs[2]
        and inputs[3] == 3
    ):
        raise DataError(
            f"model {model.name!r}: expected one input of shape (batch, P, P, 3), a fixed square "
            f"RGB window, found {inputs}"
        )
    expected = (inputs[1], inputs[2], NUM_CLASSES)
    if not (isinstance(outputs, tuple) and tuple(outputs[1:]) == expected):
        raise DataError(
            f"model {model.name!r}: expected output (batch, {inputs[1]}, {inputs[2]}, {NUM_CLASSES}): "
            f"one probability per pixel for each of {', '.join(CLASS_NAMES)}; found {outputs}"
        )
    return int(inputs[1])


def _predict(model, windows: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict_on_batch(np.ascontiguousarray(windows)), dtype=np.float32)


def _turned(windows: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """Windows ``(N, P, P, C)`` rotated ``turns`` quarter turns, then flipped left-right."""
    turned = np.rot90(windows, turns, axes=(1, 2))
    return turned[:, :, ::-1] if flip else turned


def _unturned(windows: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """The inverse of ``_turned``: flip back first, then turn back."""
    windows = windows[:, :, ::-1] if flip else windows
    return np.rot90(windows, -turns, axes=(1, 2))


def predict_windows(model, scaled: np.ndarray, tta: bool = False) -> np.ndarray:
    """Class probabilities ``(N, P, P, classes)`` of scaled windows ``(N, P, P, 3)``.

    With ``tta`` the mean over the 8 flips/rotations, each prediction turned back to the
    window's own orientation first. Min-max scaling does not depend on pixel order, so the
    windows are scaled once, before turning.
    """
    if not tta:
        return _predict(model, scaled)
    total = None
    for turns, flip in DIHEDRAL:
        probs = _unturned(_predict(model, _turned(scaled, turns, flip)), turns, flip)
        total = probs if total is None else total + probs
    return total / len(DIHEDRAL)


# ---------------------------------------------------------------------------------------------
# Windows over an image


def window_weights(patch_size: int, mode: str) -> np.ndarray:
    """1-D weights across a window: Hann (sin^2, never zero) to blend, ones for tiles.

    At a stride of half an even window sin^2(x) + sin^2(x + pi/2) = 1: the weights at every
    image pixel sum to one. ``predict_strips`` still divides by their sum, which keeps the
    blend a weighted mean for an odd window too.
    """
    if mode == "tiles":
        return np.ones(patch_size)
    return np.sin(np.pi * (np.arange(patch_size) + 0.5) / patch_size) ** 2


def window_starts(length: int, patch_size: int, mode: str) -> tuple[int, list[int]]:
    """Padding before the image, and where windows start, along one axis (padded coordinates).

    Tiles start at the image's first pixel, as the training patches did, and the far end is
    padded up to a whole window. Blending pads half a window before and at least half a
    window after, so every image pixel lies in the middle half of some window.
    """
    stride = patch_size if mode == "tiles" else max(patch_size // 2, 1)
    margin = patch_size - stride
    count = max(1, math.ceil((length + 2 * margin - patch_size) / stride) + 1)
    return margin, [i * stride for i in range(count)]


def _coverage(starts: Sequence[int], weights: np.ndarray) -> np.ndarray:
    """Summed window weights at every padded position of one axis."""
    total = np.zeros(starts[-1] + len(weights), dtype=np.float32)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total


def _reflect(index: np.ndarray, length: int) -> np.ndarray:
    """Indices into an axis of ``length`` for any positions, mirrored as np.pad's "reflect"."""
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    index = np.abs(index) % period
    return np.where(index >= length, period - index, index)


def _check_settings(mode: str, batch_size: int) -> None:
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {MODES}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, found {batch_size}")


def predict_strips(
    model,
    read_rows: Callable[[int, int], np.ndarray],
    height: int,
    width: int,
    mode: str = "blend",
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Iterator[tuple[int, np.ndarray]]:
    """Class probabilities of an image in finished strips: ``(first row, (rows, width, classes))``.

    ``read_rows(start, stop)`` gives image rows ``start:stop`` as ``(rows, width, 3)``; only
    the rows one row of windows covers are asked for at a time. Rows leave as soon as no
    later window reaches them, so memory holds one band of window height, not the image.
    """
    _check_settings(mode, batch_size)
    patch = patch_size_of(model)
    weights = window_weights(patch, mode)
    pad_top, row_starts = window_starts(height, patch, mode)
    pad_left, col_starts = window_starts(width, patch, mode)
    row_cover, col_cover = _coverage(row_starts, weights), _coverage(col_starts, weights)
    col_cover = col_cover[pad_left : pad_left + width, None]
    columns = _reflect(np.arange(col_starts[-1] + patch) - pad_left, width)
    window_2d = np.outer(weights, weights).astype(np.float32)[..., None]
    band = np.zeros((patch, len(columns), NUM_CLASSES), dtype=np.float32)
    for index, top in enumerate(row_starts):
        rows = _reflect(np.arange(top, top + patch) - pad_top, height)
        strip = read_rows(int(rows.min()), int(rows.max()) + 1)[rows - rows.min()][:, columns]
        for first in range(0, len(col_starts), batch_size):
            lefts = col_starts[first : first + batch_size]
            windows = np.stack([strip[:, left : left + patch] for left in lefts])
            for left, probs in zip(lefts, predict_windows(model, scale_patches(windows), tta)):
                band[:, left : left + patch] += probs * window_2d
        done = row_starts[index + 1] - top if index + 1 < len(row_starts) else patch
        start, stop = max(top, pad_top), min(top + done, pad_top + height)
        if start < stop:
            finished = band[start - top : stop - top, pad_left : pad_left + width]
            yield start - pad_top, finished / (row_cover[start:stop, None, None] * col_cover)
        band[: patch - done] = band[done:]  # rows later windows still add to move up
        band[patch - done :] = 0


def _class_map(strips: Iterator[tuple[int, np.ndarray]], height: int, width: int) -> np.ndarray:
    classes = np.empty((height, width), dtype=np.uint8)
    for first, probs in strips:
        classes[first : first + len(probs)] = probs.argmax(-1)
    return classes


def _array_strips(model, image, mode, tta, batch_size):
    """``predict_strips`` over an image array, with its height and width."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an RGB image array (H, W, 3), found shape {image.shape}")
    height, width = image.shape[:2]
    read_rows = lambda start, stop: image[start:stop]
    return predict_strips(model, read_rows, height, width, mode, tta, batch_size), height, width


def predict_image(
    model, image: np.ndarray, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class indices uint8 ``(H, W)`` of an RGB image ``(H, W, 3)`` (uint8 or uint16) of any size."""
    return _class_map(*_array_strips(model, image, mode, tta, batch_size))


def predict_probabilities(
    model, image: np.ndarray, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class probabilities float32 ``(H, W, classes)`` of an RGB image: for images that fit in memory."""
    strips, _, _ = _array_strips(model, image, mode, tta, batch_size)
    return np.concatenate([probs for _, probs in strips])


# ---------------------------------------------------------------------------------------------
# Reading images


@dataclass
class ImageSource:
    """An image opened for prediction: its size, a row reader, and what opening it noted.

    ``georeference`` holds the CRS and transform of a georeferenced raster (else None).
    """

    path: Path
    height: int
    width: int
    dtype: np.dtype
    read_rows: Callable[[int, int], np.ndarray]
    notes: list[str] = field(default_factory=list)
    georeference: dict | None = None
    _brightest: int | None = field(default=None, repr=False)

    def display_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows as 8-bit RGB for people; a 16-bit image is stretched by its brightest value."""
        rows = self.read_rows(start, stop)
        if self.dtype == np.uint8:
            return rows
        if self._brightest is None:
            self._brightest = max(
                int(self.read_rows(top, min(top + ROW_BLOCK, self.height)).max())
                for top in range(0, self.height, ROW_BLOCK)
            )
        return (rows * (255.0 / max(self._brightest, 1))).round().astype(np.uint8)


def source_classes(
    model, source: ImageSource, mode: str = "blend", tta: bool = False, batch_size: int = DEFAULT_BATCH_SIZE
) -> np.ndarray:
    """Class indices uint8 ``(H, W)`` of an opened image, predicted strip by strip."""
    strips = predict_strips(model, source.read_rows, source.height, source.width, mode, tta, batch_size)
    return _class_map(strips, source.height, source.width)


def _rasterio():
    """The rasterio module, or None when the ``geo`` extra is not installed."""
    try:
        import rasterio
    except ImportError:
        return None
    return rasterio


@contextlib.contextmanager
def open_image(path) -> Iterator[ImageSource]:
    """Open an image for prediction: TIFFs with rasterio (by strips) when installed, else Pillow."""
    path = Path(path)
    rasterio = _rasterio() if path.suffix.lower() in TIFF_SUFFIXES else None
    opened = _pillow_source(path) if rasterio is None else _raster_source(rasterio, path)
    with opened as source:
        yield source


def _pillow_open(path: Path) -> Image.Image:
    """The image's header, or a DataError naming the file."""
    try:
        return Image.open(path)
    except UnidentifiedImageError:
        hint = ""
        if path.suffix.lower() in TIFF_SUFFIXES:
            hint = f"; Pillow reads 8-bit RGB TIFFs only, 16-bit or many-band TIFFs need rasterio: {GEO_HINT}"
        raise DataError(
            f"cannot read {path}: expected an image (JPEG, PNG, TIFF, ...), found "
            f"{path.stat().st_size:,} bytes in no format Pillow knows{hint}"
        ) from None
    except Image.DecompressionBombError as exc:
        raise DataError(
            f"cannot read {path}: expected at most {2 * Image.MAX_IMAGE_PIXELS:,} pixels, Pillow's "
            f"guard against decompression bombs, found {exc}; save it as a tiled GeoTIFF, which is "
            f"read by strips ({GEO_HINT}), or raise PIL.Image.MAX_IMAGE_PIXELS"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc}") from None


@contextlib.contextmanager
def _pillow_source(path: Path) -> Iterator[ImageSource]:
    """The image decoded by Pillow and kept as Pillow's RGB image; rows are copied out on demand.

    Not converting the whole image to an array saves a second full copy (300 MB at
    10,000 x 10,000 pixels) next to Pillow's own.
    """
    with _pillow_open(path) as image:
        if GEOTIFF_TAGS & set(getattr(image, "tag_v2", {})):
            raise DataError(
                f"cannot keep the georeference of {path}: expected the geo extra for a georeferenced "
                f"TIFF (the mask would lose its CRS and transform), found rasterio not installed; "
                f"{GEO_HINT}"
            )
        notes = _colour_notes(image, path)
        try:
            image.load()
            rgb = image if image.mode == "RGB" else image.convert("RGB")
            if rgb is not image:
                image.close()  # keep one full image in memory, not two
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise DataError(
                f"cannot decode {path}: expected a complete image, found {exc} (the file is truncated or corrupt)"
            ) from None
        width, height = rgb.size

        def read_rows(start: int, stop: int) -> np.ndarray:
            return np.asarray(rgb.crop((0, start, width, stop)))

        yield ImageSource(path, height, width, np.dtype(np.uint8), read_rows, notes)


def _colour_notes(image: Image.Image, path: Path) -> list[str]:
    """What reading ``image`` as RGB changes, or a DataError for an image with no colour."""
    mode, bands = image.mode, len(image.getbands())
    if mode in GREY_MODES or mode.startswith("I;"):
        kind = GREY_MODES.get(mode, "16-bit greyscale")
        raise DataError(
            f"cannot segment {path}: expected a colour image with 3 channels (RGB), found a "
            f"{bands}-channel {kind} image (mode {mode}); the model was trained on RGB aerial images"
        )
    notes = []
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        notes.append("alpha channel dropped (the model reads RGB)")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        notes.append(f"converted from {mode} to RGB")
    if image.tile and ";16" in str(image.tile[0].args):
        notes.append(
            "16-bit channels read as their top 8 bits by Pillow (each window is min-max scaled, "
            f"so only fine shades are lost); for full precision save as TIFF and {GEO_HINT}"
        )
    return notes


@contextlib.contextmanager
def _raster_source(rasterio, path: Path) -> Iterator[ImageSource]:
    """A TIFF read by strips with rasterio; bands 1-3 as RGB, 8 or 16 bits per channel."""
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.windows import Window

    # GDAL caches decoded blocks up to 5% of the machine's memory by default: a whole image.
    env = rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            dataset = rasterio.open(path)
    except OSError as exc:  # rasterio's RasterioIOError is one
        raise DataError(f"cannot read {path}: expected a TIFF image, found {exc}") from None
    with env, dataset:
        if dataset.count < 3:
            raise DataError(
                f"cannot segment {path}: expected a colour image with 3 bands (RGB), found "
                f"{dataset.count} band(s); the model was trained on RGB aerial images"
            )
        dtype = dataset.dtypes[0]
        if dtype not in READABLE_DTYPES or len(set(dataset.dtypes[:3])) > 1:
            raise DataError(
                f"cannot segment {path}: expected bands of {' or '.join(READABLE_DTYPES)}, found "
                f"{', '.join(dataset.dtypes[:3])}"
            )
        notes = []
        if dataset.count > 3:
            extra = ", ".join(c.name for c in dataset.colorinterp[3:])
            notes.append(f"bands 4-{dataset.count} ({extra}) ignored: bands 1-3 are read as RGB")
        if dtype == "uint16":
            notes.append("16-bit bands used at full precision (each window is min-max scaled)")
        georeferenced = dataset.crs is not None or not dataset.transform.is_identity
        georeference = {"crs": dataset.crs, "transform": dataset.transform} if georeferenced else None

        def read_rows(start: int, stop: int) -> np.ndarray:
            window = Window(0, start, dataset.width, stop - start)
            try:
                return dataset.read((1, 2, 3), window=window).transpose(1, 2, 0)
            except OSError as exc:
                raise DataError(
                    f"cannot decode {path}: expected a complete image, found {exc} (the file is truncated or corrupt)"
                ) from None

        yield ImageSource(path, dataset.height, dataset.width, np.dtype(dtype), read_rows, notes, georeference)


# ---------------------------------------------------------------------------------------------
# Writing results


def colourize(classes: np.ndarray) -> np.ndarray:
    """Class indices ``(H, W)`` as the dataset's mask colours ``(H, W, 3)`` uint8."""
    return PALETTE_RGB[classes]


def class_counts(classes: np.ndarray) -> np.ndarray:
    """Pixels per class, int64 ``(classes,)``; counted in row blocks (bincount widens to int64)."""
    counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for top in range(0, len(classes), ROW_BLOCK):
        counts += np.bincount(classes[top : top + ROW_BLOCK].ravel(), minlength=NUM_CLASSES)
    return counts


def write_class_png(classes: np.ndarray, path: Path) -> None:
    """A 'P'-mode PNG: pixel values are class indices, the palette is the masks' colours."""
    image = Image.fromarray(classes)
    image.putpalette(PALETTE_RGB.tobytes())
    image.save(path)


def write_class_geotiff(classes: np.ndarray, path: Path, georeference: dict) -> None:
    """A one-band uint8 GeoTIFF with the input's CRS and transform, coloured by the palette."""
    rasterio = _rasterio()
    height, width = classes.shape
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=1,
        dtype="uint8",
        compress="deflate",
        **georeference,
    ) as dataset:
        dataset.write(classes, 1)
        dataset.write_colormap(1, {i: (*rgb, 255) for i, rgb in enumerate(PALETTE.values())})


def overlay_step(height: int, width: int) -> int:
    """Keep every ``step``-th pixel in the overlay so that it has at most OVERLAY_MAX_PIXELS.

    The overlay is for looking at; the class map keeps every pixel. At full size the overlay
    of a 10,000 x 10,000 image would take 700 MB (the array and Pillow's copy of it).
    """
    return max(1, math.ceil(math.sqrt(height * width / OVERLAY_MAX_PIXELS)))


def write_overlay(source: ImageSource, classes: np.ndarray, path: Path, step: int = 1) -> None:
    """The image with its class colours laid over it, semi-transparent, as a JPEG."""
    block = max(ROW_BLOCK // step, 1) * step
    overlay = np.empty((-(-source.height // step), -(-source.width // step), 3), dtype=np.uint8)
    for top in range(0, source.height, block):
        stop = min(top + block, source.height)
        image = source.display_rows(top, stop)[::step, ::step].astype(np.float32)
        colours = colourize(classes[top:stop:step, ::step]).astype(np.float32)
        overlay[top // step : top // step + len(image)] = (
            image * (1 - OVERLAY_ALPHA) + colours * OVERLAY_ALPHA
        ).round()
    Image.fromarray(overlay).save(path, quality=OVERLAY_QUALITY)


def _class_path(source: ImageSource, out_dir: Path) -> Path:
    suffix = ".tif" if source.georeference is not None else ".png"
    return out_dir / f"{source.path.stem}_classes{suffix}"


def predict_file(
    model,
    path,
    out_dir,
    *,
    mode: str = "blend",
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model_file: str | None = None,
) -> dict:
    """Segment one image file; write its class map, overlay and area shares; return the shares.

    Writes ``<stem>_classes.png`` (a GeoTIFF ``<stem>_classes.tif`` for a georeferenced
    input), ``<stem>_overlay.jpg`` and ``<stem>_areas.json``, whose content is returned.
    """
    started = time.perf_counter()
    path, out_dir = Path(path), Path(out_dir)
    patch = patch_size_of(model)
    _check_settings(mode, batch_size)
    with open_image(path) as source:
        classes = source_classes(model, source, mode, tta, batch_size)
        out_dir.mkdir(parents=True, exist_ok=True)
        class_path, overlay_path = _class_path(source, out_dir), out_dir / f"{path.stem}_overlay.jpg"
        areas_path = out_dir / f"{path.stem}_areas.json"
        if source.georeference is not None:
            write_class_geotiff(classes, class_path, source.georeference)
        else:
            write_class_png(classes, class_path)
        step = overlay_step(source.height, source.width)
        write_overlay(source, classes, overlay_path, step)
        notes = list(source.notes)
    if step > 1:
        notes.append(f"overlay subsampled: one pixel in {step} along each side (at most {OVERLAY_MAX_PIXELS:,})")
    if classes.shape[0] < patch or classes.shape[1] < patch:
        notes.append(f"smaller than the model's {patch}x{patch} window: reflect-padded")
    counts = class_counts(classes)
    result = {
        "image": str(path),
        "height": int(classes.shape[0]),
        "width": int(classes.shape[1]),
        "classes": {name: {"pixels": int(n), "share": float(n / counts.sum())} for name, n in zip(CLASS_NAMES, counts)},
        "settings": {
            "mode": mode,
            "tta": bool(tta),
            "batch_size": int(batch_size),
            "patch_size": patch,
            "model": model_file or model.name,
            "backend": keras.backend.backend(),
        },
        "notes": notes,
        "outputs": {"classes": str(class_path), "overlay": str(overlay_path), "areas": str(areas_path)},
        "seconds": time.perf_counter() - started,
    }
    areas_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def summary_line(result: dict) -> str:
    """One line per image for people: size, where the classes went, settings, time, shares."""
    settings = result["settings"]
    shares = ", ".join(f"{name} {c['share']:.1%}" for name, c in result["classes"].items())
    notes = "".join(f"; note: {note}" for note in result["notes"])
    return (
        f"{result['image']}: {result['width']}x{result['height']} -> {result['outputs']['classes']} "
        f"({settings['mode']}{'+tta' if settings['tta'] else ''}, {result['seconds']:.1f} s): "
        f"{shares}{notes}"
    )


# ---------------------------------------------------------------------------------------------
# Whole-image scores for the report


def parse_mode(name: str) -> tuple[str, bool]:
    """``"blend+tta"`` -> ``("blend", True)``; ``"tiles"`` -> ``("tiles", False)``."""
    mode, _, extra = name.partition("+")
    if mode not in MODES or extra not in ("", "tta"):
        raise ValueError(f"mode {name!r}; expected one of {MODES}, optionally with '+tta'")
    return mode, extra == "tta"


def _mask_labels(mask_path, height: int, width: int, image_path) -> np.ndarray:
    """Class indices of a mask; off-palette colours become Unlabeled, as in training."""
    labels, _ = rgb_to_labels(read_rgb(mask_path))
    if labels.shape != (height, width):
        raise DataError(
            f"{image_path} is {width}x{height} but its mask {mask_path} is "
            f"{labels.shape[1]}x{labels.shape[0]} (width x height); expected equal sizes"
        )
    return labels


def score_whole_images(
    model, pairs, modes: Sequence[str] = SCORE_MODES, batch_size: int = DEFAULT_BATCH_SIZE
) -> dict[str, dict]:
    """Per-class IoU, mean IoU and confusion of whole images against their masks, per mode.

    ``pairs`` are ``(image, mask, ...)`` paths (``seglib.data.Pair`` fits). Pixels are pooled
    over all images, as ``seglib.metrics.evaluate`` pools patches; ``seconds`` is the time
    spent predicting in that mode.
    """
    settings = {name: parse_mode(name) for name in modes}
    confusion = {name: np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64) for name in modes}
    seconds = dict.fromkeys(modes, 0.0)
    count = 0
    for image_path, mask_path, *_ in pairs:
        with open_image(image_path) as source:
            labels = _mask_labels(mask_path, source.height, source.width, image_path)
            for name, (mode, tta) in settings.items():
                started = time.perf_counter()
                classes = source_classes(model, source, mode, tta, batch_size)
                seconds[name] += time.perf_counter() - started
                confusion[name] += confusion_matrix(labels, classes, NUM_CLASSES)
        count += 1
    scores = {}
    for name in modes:
        per_class = iou_from_confusion(confusion[name])
        scores[name] = {
            "per_class_iou": per_class,
            "mean_iou": mean_of_present(per_class),
            "confusion": confusion[name].tolist(),
            "seconds": seconds[name],
            "images": count,
        }
    return scores


def figure_arrays(
    model,
    image_path,
    mask_path,
    mode: str = "blend",
    tta: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, np.ndarray]:
    """``image``, ``mask`` and ``prediction`` as uint8 RGB arrays (mask colours) for a figure."""
    with open_image(image_path) as source:
        labels = _mask_labels(mask_path, source.height, source.width, image_path)
        classes = source_classes(model, source, mode, tta, batch_size)
        image = source.display_rows(0, source.height)
    return {"image": image, "mask": colourize(labels), "prediction": colourize(classes)}


# ---------------------------------------------------------------------------------------------
# Command line


def configure_cli(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a trained seglib model (.keras)")
    parser.add_argument("images", nargs="+", help="image files: JPEG, PNG, TIFF, GeoTIFF (with seglib[geo])")
    parser.add_argument("--out", required=True, help="folder for the class maps, overlays and area shares")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="blend",
        help="blend: overlapping windows, smoothly weighted (default); tiles: non-overlapping windows",
    )
    parser.add_argument("--tta", action="store_true", help="average the 8 flips/rotations (8x the time)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"windows per model call (default {DEFAULT_BATCH_SIZE})",
    )


def cli(args: argparse.Namespace) -> int:
    """Segment every image; a failed image is reported and the others still run.

    Exit status: 0 all written, 1 the model is unusable or some image failed (after all were
    tried), as every seglib command (2 is argparse's, for a refused command line).
    """
    try:
        _check_settings(args.mode, args.batch_size)
        model = load_model(args.model, compile=False)
        patch_size_of(model)
    except (DataError, ValueError, OSError) as exc:
        print(f"seglib predict: cannot use model {args.model}: {exc}", file=sys.stderr)
        return 1
    failed = 0
    written: dict[str, str] = {}
    for image in args.images:
        stem = Path(image).stem
        try:
            if stem in written:
                raise DataError(
                    f"cannot segment {image}: expected a name of its own in --out, found the same "
                    f"stem as {written[stem]} (its outputs would be overwritten); rename one"
                )
            result = predict_file(
                model,
                image,
                args.out,
                mode=args.mode,
                tta=args.tta,
                batch_size=args.batch_size,
                model_file=args.model,
            )
            written[stem] = image
        except DataError as exc:
            print(f"seglib predict: {exc}", file=sys.stderr)
            failed += 1
            continue
        except Exception as exc:
            print(f"seglib predict: failed on {image}: {type(exc).__name__}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print(summary_line(result), flush=True)
    if failed:
        print(f"seglib predict: {failed} of {len(args.images)} images failed", file=sys.stderr)
    return 1 if failed else 0
