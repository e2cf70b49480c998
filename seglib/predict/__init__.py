"""Whole images -> class maps, for images of any size, with a model trained on patches.

``tiling`` cuts an image into the model's windows and blends their predictions back, strip
by strip; ``images`` opens images (rasterio for TIFFs when installed) and writes class maps
and overlays; ``files`` turns one image file into its outputs; ``scoring`` scores whole
images against their masks for the report; ``cli`` is ``seglib predict`` (its ``cli`` and
``configure_cli``, imported from there).

The names below are imported on first use (PEP 562): ``seglib predict``'s command line is
parsed from ``cli`` and ``options``, which import nothing heavy, so ``--help`` and a usage
mistake are answered without waiting for Keras (6-15 s to import).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "options": ("DEFAULT_BATCH_SIZE", "MODES"),
    "tiling": (
        "DIHEDRAL",
        "check_settings",
        "patch_size_of",
        "predict_image",
        "predict_probabilities",
        "predict_strips",
        "predict_windows",
        "source_classes",
        "window_starts",
        "window_weights",
    ),
    "images": (
        "ImageSource",
        "colourize",
        "open_image",
        "overlay_step",
        "write_class_geotiff",
        "write_class_png",
        "write_overlay",
    ),
    "files": ("output_paths", "predict_file", "summary_line"),
    "scoring": ("SCORE_MODES", "figure_arrays", "parse_mode", "score_whole_images"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
