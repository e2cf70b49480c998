"""The disk cache of prepared patches: one entry per (files' bytes, settings), never evicted.

An entry is a folder of memory-mappable ``.npy`` arrays plus ``meta.json``, written in a
hidden temporary folder and renamed into place, so readers see a whole entry or none. The
key covers the files' names, tiles and bytes, the preparation's parameters and
:data:`FORMAT_VERSION`, so a changed file or parameter misses and an unchanged dataset hits.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

# Bump when the cached arrays' meaning or layout changes: old entries are then ignored.
FORMAT_VERSION = 1
ENV = "SEGLIB_CACHE"
DEFAULT_DIR = Path("~/.cache/seglib")
META = "meta.json"
STALE_SECONDS = 86400  # temporary folders of killed writers older than this are removed


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$SEGLIB_CACHE``, else ``~/.cache/seglib``."""
    chosen = cache_dir or os.environ.get(ENV) or DEFAULT_DIR
    return Path(chosen).expanduser()


def entry_for(items: Iterable[tuple[str, bytes]], params: dict, cache_dir=None) -> Path:
    """The entry folder for named file contents ``items`` prepared with ``params``."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({"format": FORMAT_VERSION, **params}, sort_keys=True).encode())
    for name, data in items:
        digest.update(name.encode() + b"\0")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return cache_root(cache_dir) / "patches" / digest.hexdigest()


def is_complete(entry: Path) -> bool:
    return (entry / META).is_file()


def load(entry: Path) -> tuple[dict[str, np.ndarray], dict]:
    """An entry's arrays (read-only memory maps) and its metadata."""
    meta = json.loads((entry / META).read_text())
    arrays = {path.stem: np.load(path, mmap_mode="r") for path in entry.glob("*.npy")}
    return arrays, meta


def remove(entry: Path) -> None:
    shutil.rmtree(entry, ignore_errors=True)


def new_entry_folder(entry: Path) -> Path:
    """A temporary folder beside ``entry``; leftovers of killed writers over a day old go."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    for old in entry.parent.glob(".*"):
        try:
            if time.time() - old.stat().st_mtime > STALE_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
    return Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))


def allocate(folder: Path | None, shapes: dict[str, tuple]) -> dict[str, np.ndarray]:
    """uint8 arrays of ``shapes``: memory maps in the entry being written, so nothing is copied to save."""
    if folder is None:
        return {name: np.empty(shape, dtype=np.uint8) for name, shape in shapes.items()}
    arrays = {
        name: np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.uint8, shape=shape)
        for name, shape in shapes.items()
    }
    for array in arrays.values():
        _populate(array)
    return arrays


def _populate(array: np.memmap) -> None:
    """Ask the kernel to back a new memory map now, in one call (Linux MADV_POPULATE_WRITE).

    Faulting its 87,000 pages in one at a time while copying patches cost 0.1-0.4 s of the
    cold preparation; where the call is unknown (older kernels, other systems) nothing changes.
    """
    advice = getattr(mmap, "MADV_POPULATE_WRITE", 23 if sys.platform.startswith("linux") else None)
    handle = getattr(array, "_mmap", None)
    if advice is None or handle is None or not hasattr(handle, "madvise"):
        return
    try:
        handle.madvise(advice)
    except (OSError, ValueError):
        pass


def publish(tmp: Path, entry: Path, extra: dict[str, np.ndarray], meta: dict) -> None:
    """Complete the entry in ``tmp`` and rename it into place: readers see all of it or none.

    The arrays are not fsync'ed (that would cost seconds for 340 MB): a killed process still
    leaves either no entry or a complete one; only a power cut right after could lose pages.
    """
    for name, array in extra.items():
        np.save(tmp / f"{name}.npy", array)
    (tmp / META).write_text(json.dumps({"format": FORMAT_VERSION, **meta}, indent=1))
    try:
        os.rename(tmp, entry)
    except OSError:  # another process published the same entry first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_complete(entry):
            raise


def prune(keep: str | os.PathLike | None = None, cache_dir=None) -> tuple[int, int]:
    """Delete every finished patch entry except ``keep``; return (entries, bytes) freed.

    Entries are never evicted on their own (a run may still be reading one); this is the
    explicit way to reclaim the disk that other patch sizes or datasets took. Folders being
    written (hidden, no ``meta.json`` yet) are left alone.
    """
    keep = Path(keep).resolve() if keep else None
    removed = freed = 0
    for entry in sorted((cache_root(cache_dir) / "patches").glob("[!.]*")):
        if not is_complete(entry) or entry.resolve() == keep:
            continue
        size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
        shutil.rmtree(entry)
        removed, freed = removed + 1, freed + size
    return removed, freed
