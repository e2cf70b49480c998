"""Images in and out: opening any image for prediction, writing its class map and overlay.

JPEG, PNG and 8-bit TIFFs are decoded by Pillow; TIFFs are read by strips with rasterio when
the ``geo`` extra is installed, and a GeoTIFF gives a GeoTIFF class map with the same CRS and
transform. Each writer takes the path to write, so the caller decides where a file first goes
(``seglib.predict.files`` writes through temporary files).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seglib.data import PALETTE, DataError

PALETTE_RGB = np.array(list(PALETTE.values()), dtype=np.uint8)
OVERLAY_ALPHA = 0.45  # weight of the class colour over the image
OVERLAY_QUALITY = 90  # JPEG quality of the overlay
ROW_BLOCK = 512  # rows per step when colouring a class map or finding an image's range: bounded temporaries
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
