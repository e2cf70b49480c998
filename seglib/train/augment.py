"""Per-patch augmentation of an epoch's training arrays, drawn from ``(seed, epoch)`` only.

"d4" applies one of the 8 symmetries of a square to each patch, and the same one to its
mask; "d4+color" also jitters each image's brightness and contrast (never the mask). A
symmetry is three independent choices (swap the axes, flip rows, flip columns), each applied
to the whole epoch's array at once: on the host (numpy, the fit loop) in place on the patches
that get it, on the device (``jax.numpy``, the JAX loop) as a ``where`` per choice. What each patch gets is
drawn with numpy from ``(seed, epoch)`` before either, so both loops see the same epoch and a
resumed training the same augmentation as an uninterrupted one.
"""

from __future__ import annotations

import numpy as np

from seglib.settings import AUGMENTS

BRIGHTNESS = 0.1  # added to a [0, 1] image: uniform in +-BRIGHTNESS
CONTRAST = 0.2  # the distance from the patch mean is scaled by uniform 1 +- CONTRAST
_STREAM = 0x41554721  # keeps augmentation's draws apart from the shuffle's (seed, epoch) stream


def draws(num_samples: int, seed: int, epoch: int) -> dict[str, np.ndarray]:
    """Each patch's symmetry (3 booleans) and colour jitter for one epoch: a function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch, _STREAM])
    flags = rng.integers(0, 2, size=(3, num_samples)).astype(bool)
    return {
        "transpose": flags[0],
        "flip_rows": flags[1],
        "flip_columns": flags[2],
        "brightness": rng.uniform(-BRIGHTNESS, BRIGHTNESS, num_samples).astype(np.float32),
        "contrast": rng.uniform(1 - CONTRAST, 1 + CONTRAST, num_samples).astype(np.float32),
    }


def augment(x, y, mode: str, seed: int, epoch: int, xp=np):
    """Images ``(N, S, S, C)`` and masks ``(N, S, S)`` augmented per patch for ``epoch``.

    ``xp`` is the array module of ``x`` and ``y``: numpy, or ``jax.numpy`` for device arrays.
    "none" returns the arrays themselves. Colour jitter keeps images in [0, 1], the range
    ``seglib.data.scale_patches`` gives them.
    """
    if mode not in AUGMENTS:
        raise ValueError(f"augment={mode!r}; expected one of {list(AUGMENTS)}")
    if mode == "none":
        return x, y
    if x.shape[1] != x.shape[2]:
        raise ValueError(f"augment={mode!r} needs square patches; found {x.shape[1]}x{x.shape[2]}")
    drawn = draws(int(x.shape[0]), seed, epoch)
    if xp is np:
        return _on_host(x, y, mode, drawn)
    return _on_device(x, y, mode, drawn, xp)


def _moves(axis):
    return (lambda a: a.swapaxes(1, 2)) if axis is None else (lambda a: a[:, ::-1] if axis == 1 else a[:, :, ::-1])


MOVES = (("transpose", None), ("flip_rows", 1), ("flip_columns", 2))


def _on_host(x, y, mode, drawn):
    """numpy: each move rewrites only the patches that get it, in one copy of the arrays."""
    x, y = np.array(x, copy=True), np.array(y, copy=True)
    for name, axis in MOVES:
        chosen = np.flatnonzero(drawn[name])
        move = _moves(axis)
        x[chosen], y[chosen] = move(x[chosen]), move(y[chosen])
    if mode == "d4+color":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        x -= mean
        x *= drawn["contrast"][:, None, None, None]
        x += mean + drawn["brightness"][:, None, None, None]
        np.clip(x, 0.0, 1.0, out=x)
    return x, y


def _on_device(x, y, mode, drawn, xp):
    """An array module without in-place writes (``jax.numpy``): a ``where`` per move, on the device."""

    def per_sample(values, ndim):
        return xp.asarray(values.reshape((-1,) + (1,) * (ndim - 1)))

    for name, axis in MOVES:
        move = _moves(axis)
        x = xp.where(per_sample(drawn[name], x.ndim), move(x), x)
        y = xp.where(per_sample(drawn[name], y.ndim), move(y), y)
    if mode == "d4+color":
        mean = xp.mean(x, axis=(1, 2, 3), keepdims=True)
        contrast, brightness = per_sample(drawn["contrast"], x.ndim), per_sample(drawn["brightness"], x.ndim)
        x = xp.clip((x - mean) * contrast + mean + brightness, 0.0, 1.0).astype(x.dtype)
    return x, y
