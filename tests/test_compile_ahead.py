"""Programs compiled ahead in background threads (seglib.train.ahead): the same training, no compile in its way."""

from __future__ import annotations

import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from script_helpers import run_python

from seglib.train.jax_loop import _wait_for_ahead

# JAX logs each compile with the thread that ran it. Training first without compiling ahead,
# then with it: every program of the trainings (training call, padded evaluation) must be
# compiled by the background threads, none by the thread that trains, with the same losses.
SCRIPT = textwrap.dedent(
    """
    import json, logging, sys
    from pathlib import Path
    import jax
    import numpy as np
    from seglib import hpo
    from seglib.settings import Settings, profile
    from seglib.train import ModelPool, TrainOptions, train
    from seglib.train.ahead import THREAD_NAME, CompileAhead

    PROGRAMS = ("one", "scan", "evaluation_step", "results")  # seglib.train.jax_loop's
    jax.config.update("jax_log_compiles", True)
    compiles = []

    class Compiles(logging.Handler):
        def emit(self, record):
            text = record.getMessage()
            if text.startswith("Finished XLA compilation of jit("):
                name = text.split("jit(")[1].split(")")[0]
                if name in PROGRAMS:
                    compiles.append([record.threadName.rsplit("_", 1)[0], name])

    logging.getLogger("jax").addHandler(Compiles())
    logging.getLogger("jax").setLevel(logging.DEBUG)
    data, out = sys.argv[1], Path(sys.argv[2])
    runs = {"engine": {}, "padded": {}, "thread": THREAD_NAME}

    # A HyperBand pass (R = 3) on the local engine, as a CPU trains: a program per batch size,
    # Keras' own evaluation. The space's 2 x 2 programs, all ahead of their trials.
    space = hpo.search_space({"batch_size": {"_type": "choice", "_value": [4, 6]},
                              "activation": {"_type": "choice", "_value": ["relu", "tanh"]}})
    settings = profile("quick", data=data, patch_size=32, max_patches=60, base_filters=4, depth=2,
                       max_budget=3, eta=3, engine="local", seed=3)
    for threads in (0, 1):
        compiles.clear()
        experiment = hpo.tune(out / f"ahead{threads}", settings.replace(compile_ahead=threads), space=space)
        runs["engine"][threads] = {
            "trials": sorted([r.config_id, r.budget, r.status, r.resumed_from, r.epochs_trained, r.value]
                             for r in experiment.trials),
            "compiles": sorted(compiles),
        }

    # As a GPU trains: batches padded (3 and 5 to 8, 9 to 16), calls of 4 steps, the padded
    # evaluation; two threads compiling at once, one of them for a model the other also traces.
    rng = np.random.default_rng(0)
    x = rng.random((20, 16, 16, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    arrays = (x[:14], y[:14], x[14:], y[14:])
    base = Settings(base_filters=2, depth=2, patch_size=16, seed=1)
    trainings = [base.replace(batch_size=3, learning_rate=0.05, activation="relu"),
                 base.replace(batch_size=5, learning_rate=0.01, activation="tanh"),
                 base.replace(batch_size=9, learning_rate=0.02, activation="relu")]
    for threads in (0, 2):
        compiles.clear()
        options = TrainOptions(loop="jax", verbose=0, pool=ModelPool(), pad_batches=True, steps_per_execution=4)
        if threads:
            ahead = CompileAhead(threads)
            queued = [ahead.add(arrays[0], arrays[1], arrays[2:], s, options) for s in trainings + trainings]
        results = [train(*arrays, settings=s, epochs=2, options=options) for s in trainings]
        if threads:
            ahead.close()
        runs["padded"][threads] = {
            "losses": [r.history["loss"] + r.history["val_loss"] for r in results],
            "compiles": sorted(compiles),
            "queued": queued if threads else None,
        }
    print(json.dumps(runs))
    """
)


@pytest.mark.slow
def test_programs_compiled_ahead_are_the_ones_the_trainings_run_and_change_nothing(tmp_path, embedded_root):
    cache = {"SEGLIB_CACHE": str(tmp_path / "cache")}
    runs = run_python(SCRIPT, str(embedded_root), str(tmp_path), backend="jax", extra_env=cache, timeout=1200)

    alone, ahead = runs["engine"]["0"], runs["engine"]["1"]
    assert len(alone["trials"]) == len(ahead["trials"]) > 3
    assert ahead["trials"] == alone["trials"]  # the same programs: the same numbers, to the bit
    assert alone["compiles"] == [["MainThread", "one"]] * 4  # relu and tanh at batch 4 and 6
    assert ahead["compiles"] == [[runs["thread"], "one"]] * 4

    alone, ahead = runs["padded"]["0"], runs["padded"]["2"]
    assert ahead["losses"] == alone["losses"]
    assert ahead["queued"] == [True] * 3 + [False] * 3  # a training queued twice compiles once
    expected = sorted([["evaluation_step"]] * 3 + [["results"]] * 2 + [["scan"]] * 3)
    assert sorted(name[1:] for name in alone["compiles"]) == expected
    assert {thread for thread, _ in alone["compiles"]} == {"MainThread"}
    assert sorted(name[1:] for name in ahead["compiles"]) == expected
    assert {thread for thread, _ in ahead["compiles"]} == {runs["thread"]}


class _Model:
    """What _wait_for_ahead reads of a model: its queue of compiles by call key."""


def test_a_training_waits_for_its_compile_running_and_takes_over_one_not_started():
    release, started = threading.Event(), threading.Event()

    def running():
        started.set()
        release.wait(5)

    model = _Model()
    with ThreadPoolExecutor(1) as executor:
        model._seglib_ahead = {"a": executor.submit(running), "b": executor.submit(lambda: None)}
        started.wait(5)
        _wait_for_ahead(model, "b")  # queued behind "a": not started, so the training compiles it now
        assert model._seglib_ahead["b"].done() and not model._seglib_ahead["b"].cancelled()  # not queued again
        assert not model._seglib_ahead["a"].done()
        threading.Timer(0.2, release.set).start()
        _wait_for_ahead(model, "a")  # running: waited for
        assert model._seglib_ahead["a"].done()
    _wait_for_ahead(model, "c")  # nothing queued: nothing to wait for
