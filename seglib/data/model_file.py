"""Whether a saved model file can be read at all, said in words before Keras is asked to load it.

Keras answers a truncated, empty or non-zip ``.keras`` file with "File not found", and a
damaged one with a bare ``BadZipFile``. A ``.keras`` model is a zip archive holding
``config.json``, ``metadata.json`` and the weights, so its integrity can be checked with the
standard library (the zip directory and every member's CRC) without importing Keras.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

from seglib.artifacts import write_json
from seglib.data.errors import DataError

KERAS_SUFFIX = ".keras"
LEGACY_SUFFIXES = (".h5", ".hdf5")  # Keras 2's HDF5 format, which Keras 3 still loads
ARCHIVE_MEMBERS = ("config.json", "metadata.json")  # what every Keras 3 archive holds
ZIP_MAGIC = b"PK\x03\x04"
DAMAGED_HINT = "retrain it or restore the file"
RECIPE_SUFFIX = ".recipe.json"  # beside a saved model: how it was trained (model.keras -> model.recipe.json)


def check_model_file(path: str | os.PathLike, damaged_hint: str = DAMAGED_HINT) -> Path:
    """``path`` if it looks like a complete Keras model, else a DataError saying what is wrong.

    A ``.keras`` file must be a complete zip archive whose members pass their CRC check and
    which holds Keras' ``config.json`` (a folder holding it is Keras' unzipped form); a legacy
    ``.h5`` file is only checked to exist and not be empty. The message reads
    ``cannot read model PATH: WHAT; WHAT TO DO``; ``damaged_hint`` is what to do about an
    empty, truncated or damaged file (a caller that knows how the file was made says how).
    """
    path = Path(path)

    def refuse(problem: str, hint: str = damaged_hint) -> DataError:
        return DataError(f"cannot read model {path}: {problem}; {hint}")

    if path.is_dir():
        if (path / ARCHIVE_MEMBERS[0]).is_file():
            return path  # an unzipped archive, which Keras reads as well
        raise refuse(f"a folder, expected a {KERAS_SUFFIX} file", "pass the model file inside it")
    suffix = path.suffix.lower()
    if suffix != KERAS_SUFFIX and suffix not in LEGACY_SUFFIXES:
        raise refuse(
            f"expected a {KERAS_SUFFIX} file (or a legacy {' or '.join(LEGACY_SUFFIXES)}), found the suffix "
            f"{path.suffix or '(none)'!r}",
            "pass the model.keras that seglib saved",
        )
    if not path.exists():
        raise refuse("no such file", "check the path")
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            head = file.read(len(ZIP_MAGIC))
    except OSError as exc:
        raise refuse(exc.strerror or str(exc), "check its permissions") from None
    if size == 0:
        raise refuse("empty file (0 bytes)")
    if suffix in LEGACY_SUFFIXES:
        return path
    if head != ZIP_MAGIC:
        raise refuse(
            f"not a Keras archive (a {KERAS_SUFFIX} model is a zip file; found {size:,} bytes starting {head!r})"
        )
    problem = zip_problem(path, ARCHIVE_MEMBERS, "a Keras archive")
    if problem is not None:
        raise refuse(problem)
    return path


def zip_problem(path: Path, members: tuple[str, ...] = (), kind: str = "the archive expected") -> str | None:
    """What is wrong with the zip archive at ``path`` (empty, truncated, without the ``members`` every
    ``kind`` holds, a member failing its CRC check), in words, else None."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file (0 bytes)"
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            missing = [name for name in members if name not in names]
            if missing:
                return f"a zip file but not {kind} (no {', '.join(missing)}; found {', '.join(names) or 'nothing'})"
            damaged = archive.testzip()
    except zipfile.BadZipFile as exc:
        if not zipfile.is_zipfile(path):
            return f"truncated zip ({size:,} bytes; the end of the archive is missing)"
        return f"damaged zip ({exc})"
    except (OSError, EOFError) as exc:
        return f"damaged zip ({exc})"
    return f"damaged zip ({damaged} fails its CRC check)" if damaged is not None else None


def recipe_path(model_path: str | os.PathLike) -> Path:
    """The recipe sidecar of a saved model: ``model.keras`` -> ``model.recipe.json``."""
    path = Path(model_path)
    return path.with_name(path.stem + RECIPE_SUFFIX)


def write_recipe(model_path: str | os.PathLike, recipe: dict) -> Path:
    """Record beside ``model_path`` the recipe it was trained with (``TrainResult.metadata["recipe"]``)."""
    path = recipe_path(model_path)
    write_json(path, recipe)
    return path


def read_recipe(model_path: str | os.PathLike) -> dict | None:
    """The recipe recorded beside ``model_path``, or None (a model saved without one, or unreadable)."""
    try:
        recipe = json.loads(recipe_path(model_path).read_text())
    except (OSError, ValueError):
        return None
    return recipe if isinstance(recipe, dict) else None


def trained_with_augmentation(model_path: str | os.PathLike) -> bool:
    """Whether the recipe beside ``model_path`` says it was trained with augmentation (no recipe: False)."""
    recipe = read_recipe(model_path) or {}
    return recipe.get("augment", "none") != "none"
