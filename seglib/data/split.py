"""Which patches train, which validate, which test: chosen once per run and saved.

``make_split`` is the one place a run's split is computed (notebook 01, or ``seglib hpo``
on its own): the optional fixed subsample of ``max_patches``, then the split itself. The
indices are saved in the run folder; the baseline, every HyperBand trial and the tuned model
read that file, so they all see the same patches.
"""

from __future__ import annotations

import itertools
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglib.artifacts import ArtifactError, ArtifactMissing, atomic_write
from seglib.data.dataset import Patches, class_counts, class_shares
from seglib.data.errors import DataError
from seglib.data.pairs import natural_key

SPLIT_NAMES = ("train", "val", "test")
SUBSAMPLE_SEED = 0


def subsample(n: int, k: int | None, seed: int = SUBSAMPLE_SEED) -> np.ndarray:
    """Sorted indices of a fixed random ``k`` of ``n`` items (all of them when k is None or >= n)."""
    if k is None or k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def make_split(patches: Patches, settings) -> dict[str, np.ndarray]:
    """Indices into ``patches`` for train/val/test under ``settings`` (max_patches, split)."""
    chosen = subsample(len(patches), settings.max_patches)
    local = split(patches.subset(chosen), settings.split)
    return {name: chosen[np.sort(local[name])] for name in SPLIT_NAMES}


def save_split(path, index: dict[str, np.ndarray]) -> Path:
    return atomic_write(path, lambda tmp: np.savez(tmp, **{k: np.asarray(index[k]) for k in SPLIT_NAMES}))


def load_split(path, producer: str = "notebooks/01_data") -> dict[str, np.ndarray]:
    """Split indices saved by :func:`save_split`; a missing or damaged file names itself."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactMissing(f"{path} not found (written by {producer}: run it first)")
    try:
        with np.load(path) as saved:
            index = {name: np.asarray(saved[name]) for name in SPLIT_NAMES}
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as error:  # a truncated .npz: BadZipFile
        raise ArtifactError(
            f"{path}: expected arrays {list(SPLIT_NAMES)} of patch indices ({error}); "
            f"rerun {producer} to write it again"
        ) from None
    return index


def model_inputs(patches: Patches, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scaled float32 images and uint8 labels of the patches at ``index``."""
    return patches.scaled(index), np.asarray(patches.labels[index])


@dataclass
class Arrays:
    """A run's model inputs: float32 scaled images and uint8 labels per split, raw validation images."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    images_val: np.ndarray

    @classmethod
    def of(cls, patches: Patches, index: dict[str, np.ndarray]) -> Arrays:
        (x_train, y_train), (x_val, y_val), (x_test, y_test) = (model_inputs(patches, index[n]) for n in SPLIT_NAMES)
        return cls(x_train, y_train, x_val, y_val, x_test, y_test, np.asarray(patches.images[index["val"]]))


def split_class_shares(patches: Patches, splits: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-class pixel shares of each split."""
    return {name: class_shares(patches.labels, index) for name, index in splits.items()}


TRAIN, VAL, TEST = 0, 1, 2  # roles, in the order of SPLIT_NAMES
EXHAUSTIVE_TILES = 10  # up to this many tiles every assignment is tried (3**10 = 59,049)
SIZE_TOLERANCE = 0.05  # how far a split's share of the patches may stray from its target


def _assign_exhaustive(sizes, counts, fixed, targets) -> np.ndarray:
    """The role of each tile: the assignment whose worst split's class mix is closest to all.

    Feasible assignments give every split a tile and keep test and val within
    SIZE_TOLERANCE of their target shares of the patches; among them the one with the
    smallest worst-split L1 distance between its class shares and the whole's wins (ties:
    closer sizes, then the first in tile order). Without a feasible one, sizes alone decide.
    """
    n = len(sizes)
    grid = np.array(list(itertools.product(range(3), repeat=n)), dtype=np.int8).reshape(-1, n)
    for i, role in fixed.items():
        grid = grid[grid[:, i] == role]
    member = (grid[..., None] == np.arange(3)).astype(np.float64)  # (M, tiles, roles)
    part_sizes = np.einsum("mtr,t->mr", member, sizes)
    part_counts = np.einsum("mtr,tc->mrc", member, counts)
    fractions = part_sizes / sizes.sum()
    size_error = np.abs(fractions[:, TEST] - targets[TEST]) + np.abs(fractions[:, VAL] - targets[VAL])
    whole = counts.sum(0) / max(counts.sum(), 1)
    shares = part_counts / np.maximum(part_counts.sum(-1, keepdims=True), 1)
    mix_error = np.abs(shares - whole).sum(-1).max(-1)
    nonempty = (part_sizes > 0).all(1)
    feasible = (
        nonempty
        & (np.abs(fractions[:, TEST] - targets[TEST]) <= SIZE_TOLERANCE + 1e-12)
        & (np.abs(fractions[:, VAL] - targets[VAL]) <= SIZE_TOLERANCE + 1e-12)
    )
    if feasible.any():
        keys = (np.arange(len(grid)), size_error, np.round(mix_error, 9), ~feasible)
    else:
        keys = (np.arange(len(grid)), np.round(mix_error, 9), np.round(size_error, 9), ~nonempty)
    return grid[np.lexsort(keys)[0]]


def _assign_shuffled(sizes, fixed, targets, seed) -> np.ndarray:
    """Roles for many tiles (flat layouts: one per image): a seeded shuffle, filled in order."""
    roles = np.full(len(sizes), TRAIN, dtype=np.int8)
    for i, role in fixed.items():
        roles[i] = role
    free = [i for i in np.random.RandomState(seed).permutation(len(sizes)) if i not in fixed]
    total = sizes.sum()
    for role in (TEST, VAL):
        if any(r == role for r in fixed.values()):
            continue
        taken = 0
        while free and (taken == 0 or taken + sizes[free[0]] / 2 <= targets[role] * total):
            i = free.pop(0)
            roles[i] = role
            taken += sizes[i]
    return roles


def split(
    patches: Patches,
    kind: str = "seed",
    *,
    test_size: float = 0.2,
    val_size: float = 0.2,
    random_state: int = 42,
    test_tiles: Sequence[str] | None = None,
    val_tiles: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Index arrays ``{"train", "val", "test"}`` into ``patches``.

    ``seed``: the original's ``train_test_split(test_size=0.2, random_state=42)`` over patch
    indices (1044/261 on the real data at 256). The original had no separate test set: the
    same patches were its validation, HPO selection and report set, so "test" is "val" here.

    ``tiles``: whole tiles are held out as "test", never seen by training or HPO; "val" is
    whole tiles of the rest; "train" the remaining tiles, so no image and no tile is on two
    sides. Default picks (up to 10 tiles, every assignment is tried): "test" within 5 points
    of ``test_size`` of the patches, "val" within 5 points of ``val_size`` of the rest, and
    among those the assignment whose worst split's class mix is closest to the whole's, since
    the real tiles differ a lot (water is mostly in Tiles 3, 5 and 6). On the real data at
    256 that is test Tiles 2, 4, 5 (270 patches, 20.7%), val Tiles 1, 3, 6 (171), train Tiles
    7, 8 (864). With more tiles (flat layouts: one per image) a ``random_state``-seeded
    shuffle fills test, then val, to their sizes. ``test_tiles`` and ``val_tiles`` override.
    """
    n = len(patches)
    if kind == "seed":
        from sklearn.model_selection import train_test_split

        train, val = train_test_split(np.arange(n), test_size=test_size, random_state=random_state)
        return {"train": np.asarray(train), "val": np.asarray(val), "test": np.asarray(val)}
    if kind != "tiles":
        raise ValueError(f"unknown split kind {kind!r}; expected 'seed' or 'tiles'")
    per_tile = {t: c for t, c in patches.patches_per_tile().items() if c}
    names = list(per_tile)
    fixed: dict[int, int] = {}
    for role, given in ((TEST, test_tiles), (VAL, val_tiles)):
        unknown = sorted(set(given or ()) - set(per_tile), key=natural_key)
        if unknown:
            raise ValueError(f"unknown tiles {unknown}; expected some of {names}")
        for tile in given or ():
            if fixed.get(names.index(tile), role) != role:
                raise ValueError(f"tile {tile!r} is in both test_tiles and val_tiles")
            fixed[names.index(tile)] = role
    roles_needed = {TRAIN} | {r for r, given in ((TEST, test_tiles), (VAL, val_tiles)) if given is None}
    if len(names) - len(fixed) < len(roles_needed):
        raise DataError(
            f"a 'tiles' split needs at least {len(roles_needed)} more tiles with patches (train, "
            f"val and test are whole tiles); found {len(names) - len(fixed)} of {names}. "
            "Use kind='seed' or more data."
        )
    tile = patches.tile_of_patch
    sizes = np.array([per_tile[t] for t in names], dtype=np.float64)
    targets = {TEST: test_size, VAL: val_size * (1 - test_size)}
    if len(names) <= EXHAUSTIVE_TILES:
        counts = np.stack([class_counts(patches.labels, np.flatnonzero(tile == t)) for t in names])
        roles = _assign_exhaustive(sizes, counts.astype(np.float64), fixed, targets)
    else:
        roles = _assign_shuffled(sizes, fixed, targets, random_state)
    role_of_patch = np.full(n, TRAIN, dtype=np.int8)
    for t, role in zip(names, roles):
        role_of_patch[tile == t] = role
    return {name: np.flatnonzero(role_of_patch == role) for role, name in enumerate(SPLIT_NAMES)}
