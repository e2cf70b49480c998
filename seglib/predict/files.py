"""One image file in; its class map, overlay and area shares out, the three together or none.

Each output is written to a temporary file beside it and the three are renamed into place
only when all are complete, so a full disk, an error or Ctrl-C leaves no empty or partial
file, and an earlier run's outputs stay whole. ``seglib.artifacts.atomic_write`` does the
same for one file; an image's files are published as a set here so that they always belong
to the same prediction.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import keras

from seglib.data import CLASS_NAMES, class_counts
from seglib.predict import images
from seglib.predict.options import DEFAULT_BATCH_SIZE
from seglib.predict.tiling import check_settings, patch_size_of, source_classes


def output_paths(image, out_dir, georeferenced: bool = False) -> dict[str, Path]:
    """Where ``image``'s class map, overlay and area shares go in ``out_dir``."""
    stem, out_dir = Path(image).stem, Path(out_dir)
    return {
        "classes": out_dir / f"{stem}_classes{'.tif' if georeferenced else '.png'}",
        "overlay": out_dir / f"{stem}_overlay.jpg",
        "areas": out_dir / f"{stem}_areas.json",
    }


def publish_together(writers: dict[Path, Callable[[Path], None]]) -> None:
    """Call each writer on a temporary file beside its path, then rename them all into place.

    The temporary files keep their suffix (Pillow picks the format by it). Whatever stops the
    writers removes every temporary file and publishes none; a rename within a folder needs
    no space, so a full disk cannot stop the renames half way.
    """
    temporaries = {path: path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}") for path in writers}
    try:
        for path, write in writers.items():
            write(temporaries[path])
        for path, temporary in temporaries.items():
            os.replace(temporary, path)
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


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
    check_settings(mode, batch_size)
    with images.open_image(path) as source:
        classes = source_classes(model, source, mode, tta, batch_size)
        outputs = output_paths(path, out_dir, source.georeference is not None)
        step = images.overlay_step(source.height, source.width)
        notes = list(source.notes)
        if step > 1:
            notes.append(
                f"overlay subsampled: one pixel in {step} along each side (at most {images.OVERLAY_MAX_PIXELS:,})"
            )
        if classes.shape[0] < patch or classes.shape[1] < patch:
            notes.append(f"smaller than the model's {patch}x{patch} window: reflect-padded")
        counts = class_counts(classes)
        result = {
            "image": str(path),
            "height": int(classes.shape[0]),
            "width": int(classes.shape[1]),
            "classes": {
                name: {"pixels": int(n), "share": float(n / counts.sum())} for name, n in zip(CLASS_NAMES, counts)
            },
            "settings": {
                "mode": mode,
                "tta": bool(tta),
                "batch_size": int(batch_size),
                "patch_size": patch,
                "model": model_file or model.name,
                "backend": keras.backend.backend(),
            },
            "notes": notes,
            "outputs": {kind: str(output) for kind, output in outputs.items()},
            "seconds": None,
        }

        def write_classes(temporary: Path) -> None:
            if source.georeference is not None:
                images.write_class_geotiff(classes, temporary, source.georeference)
            else:
                images.write_class_png(classes, temporary)

        def write_areas(temporary: Path) -> None:
            result["seconds"] = time.perf_counter() - started
            temporary.write_text(json.dumps(result, indent=2) + "\n")

        out_dir.mkdir(parents=True, exist_ok=True)
        publish_together(
            {
                outputs["classes"]: write_classes,
                outputs["overlay"]: lambda temporary: images.write_overlay(source, classes, temporary, step),
                outputs["areas"]: write_areas,
            }
        )
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
