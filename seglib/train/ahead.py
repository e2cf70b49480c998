"""Programs compiled ahead, in background threads, while the device trains (JAX loop, in-process).

On a GPU a training program compiles in 35-41 s (H200) while a short trial trains in a few
seconds, so a search that meets a new (activation, batch shape) every few trials spends much
of its time compiling with the device idle. Which trainings come is known early — a
HyperBand bracket draws its configurations when it opens, and the search space bounds the
rest — so their programs can be compiled on the host's other cores while the device trains.

A program is compiled from shapes only (``seglib.train.jax_loop.program_calls``), for the
very model the training will take from the pool (``seglib.train.loop.pooled_model``): JAX
keeps the executable with that model's jitted function, so the training runs it without
compiling. A training whose program is still compiling waits for it
(``seglib.train.jax_loop.JaxLoop``) instead of compiling it a second time; one whose program
has not started compiling takes it over. Nothing here changes what a training computes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from seglib.settings import Settings
from seglib.train.jax_loop import call_key, loop_shape, program_calls
from seglib.train.loop import TrainOptions, enable_compile_cache, pooled_model, resolve_loop

log = logging.getLogger("seglib.train.ahead")

THREAD_NAME = "seglib-compile-ahead"


class CompileAhead:
    """Compiles the programs of trainings to come in ``threads`` background threads.

    Call :meth:`add` from the thread that trains, between trainings (a model lent to a running
    training is not in the pool), soonest training first; :meth:`close` when done.
    """

    def __init__(self, threads: int):
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix=THREAD_NAME)

    def add(self, x_train, y_train, validation, settings: Settings, options: TrainOptions) -> bool:
        """Queue the programs ``train`` will call for these arguments; False if already queued or not the JAX loop."""
        enable_compile_cache(options.compile_cache_dir)  # before the first compile, as train() does
        model = pooled_model(x_train, settings, options)
        if resolve_loop(options.loop, model) != "jax":
            return False
        steps, pad, _ = loop_shape(settings.batch_size, options.steps_per_execution, options.pad_batches)
        key = call_key(len(x_train), settings.batch_size, steps, pad)
        queued = model.__dict__.setdefault("_seglib_ahead", {})
        if key in queued and not queued[key].cancelled():
            return False
        calls = program_calls(model, x_train, y_train, validation, settings.batch_size, steps, pad)
        queued[key] = self._executor.submit(_compile, key, calls)
        return True

    def close(self) -> None:
        """Compile nothing more: what has not started is dropped (a training compiles its own).

        A compile already running is not stopped: the process ends once it is done.
        """
        self._executor.shutdown(wait=False, cancel_futures=True)


def _compile(key, calls) -> None:
    try:
        for program, shapes in calls:
            program.lower(*shapes).compile()
    except Exception as error:  # the training compiles it itself, and meets the error where it belongs
        log.warning(
            "compiling ahead %s failed (the training will compile it): %s: %s", key, type(error).__name__, error
        )
