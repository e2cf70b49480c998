"""Compiled models kept between trainings of one process (the in-process search engine)."""

from __future__ import annotations

import keras
import numpy as np


class ModelPool:
    """Compiled models kept between trainings in one process (the in-process search engine).

    A training whose architecture, precision, input shape and seed match an earlier one's
    takes that model back with the initial weights it was built with and a fresh optimizer
    (zeroed state, its own learning rate), so it trains exactly as a new model would, but
    without building and compiling its training, validation and prediction programs again.
    Arrays put on the device (the JAX loop) are kept too: the trials of a search share them.
    """

    def __init__(self):
        self._models: dict[tuple, list[tuple[keras.Model, list]]] = {}  # several: packed trials take one each
        self._on_device: dict[tuple, tuple] = {}
        # packed training programs and their U-Net, by architecture (seglib.train.packed)
        self.programs: dict[tuple, tuple] = {}

    def take(self, key: tuple, learning_rate: float) -> tuple[keras.Model | None, list | None]:
        """The kept model for ``key`` reset to its initial weights and a fresh optimizer, or (None, None)."""
        kept = self._models.get(key)
        if not kept:
            return None, None
        model, initial = kept.pop()
        model.set_weights(initial)
        for variable in model.optimizer.variables:
            variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
        model.optimizer.learning_rate = learning_rate
        return model, initial

    def peek(self, key: tuple) -> keras.Model | None:
        """The model ``take`` would lend for ``key`` next, left in the pool; None if there is none."""
        kept = self._models.get(key)
        return kept[-1][0] if kept else None

    def keep(self, key: tuple, model: keras.Model, initial: list) -> None:
        self._models.setdefault(key, []).append((model, initial))

    def on_device(self, x_train, y_train):
        """``x_train`` and ``y_train`` on the JAX device, put there once per pair of arrays."""
        key = (id(x_train), id(y_train))
        if key not in self._on_device:
            self._on_device[key] = (x_train, y_train, *device_put(x_train, y_train))
        return self._on_device[key][2:]


def device_put(x_train, y_train):
    """Backend-specific (JAX): both arrays on the default device."""
    import jax

    return jax.device_put(np.asarray(x_train)), jax.device_put(np.asarray(y_train))
