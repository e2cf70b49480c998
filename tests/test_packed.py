"""Packed training (seglib.train.packed): trials trained together train as each would alone."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from script_helpers import run_python

from seglib.settings import Settings
from seglib.train import epoch_order
from seglib.train.packed import PackedTrial, _epoch_batches, _Member

# Three trials of one tiny architecture, alone with train() and then packed: mixed batch
# sizes, learning rates, activations and seeds (so shuffle orders and dropout), and the third
# warm-started from a checkpoint of its first epoch while the first trains 2 epochs and the
# second 3. One program trains all three: the activation is an input of it.
ALONE_AND_PACKED = textwrap.dedent(
    """
    import json, shutil, sys, tempfile
    from pathlib import Path
    import numpy as np
    from seglib.settings import Settings
    from seglib.train import TrainOptions, train
    from seglib.train.packed import PackedTrial, train_packed
    from seglib.train.pool import ModelPool

    rng = np.random.default_rng(0)
    x = rng.random((16, 16, 16, 3), dtype=np.float32)
    y = np.clip(x[..., 0] * 6, 0, 5).astype(np.uint8)
    data = (x[:12], y[:12], x[12:], y[12:])
    base = Settings(base_filters=2, depth=2, patch_size=16)
    settings = [base.replace(batch_size=2, learning_rate=0.05, seed=1, activation="relu"),
                base.replace(batch_size=3, learning_rate=0.01, seed=2, activation="tanh"),
                base.replace(batch_size=4, learning_rate=0.02, seed=3, activation="swish")]
    epochs = [2, 3, 3]
    options = TrainOptions(loop="jax", verbose=0)
    root = Path(tempfile.mkdtemp())
    train(*data, settings=settings[2], epochs=1, checkpoint_dir=root / "warm", options=options)
    shutil.copytree(root / "warm", root / "warm_alone")
    folders = [None, None, root / "warm_alone"]
    alone = [train(*data, settings=s, epochs=e, checkpoint_dir=f, options=options)
             for s, e, f in zip(settings, epochs, folders)]
    trials = [PackedTrial(s, e, f) for s, e, f in zip(settings, epochs, [None, None, root / "warm"])]
    pool = ModelPool()
    packed = train_packed(*data, trials=trials, options=TrainOptions(loop="jax", verbose=0, pool=pool))
    resumed = train(*data, settings=settings[2], epochs=4, checkpoint_dir=root / "warm", options=options)
    # As on a GPU: padded into 4 slots and calls of 4 steps. A pack of trials 0-2 (6 steps an
    # epoch: its second call filled with 2 steps no trial keeps) and one of trials 1-2 (4 steps)
    # fill their empty slots and share one program.
    padded_pool = ModelPool()
    padded = TrainOptions(loop="jax", verbose=0, pool=padded_pool, pad_batches=True, steps_per_execution=4)
    packs = ([0, 1, 2], [1, 2])
    filled = [train_packed(*data, trials=[PackedTrial(settings[i], epochs[i]) for i in pack],
                           options=padded, slots=4) for pack in packs]
    (_, scan, _), = padded_pool.programs.values()
    keys = ("loss", "val_loss")
    print(json.dumps({
        "alone": [{k: r.history[k] for k in keys} for r in alone],
        "packed": [{k: r.history[k] for k in keys} for r in packed],
        "initial_epochs": [r.initial_epoch for r in packed],
        "epochs_trained": [r.epochs_trained for r in packed],
        "loops": [r.metadata["loop"] for r in packed],
        "resumed_from_packed": resumed.initial_epoch,
        "programs": len(pool.programs),
        "filled": [{i: {k: r.history[k] for k in keys} for i, r in zip(pack, results)}
                   for pack, results in zip(packs, filled)],
        "filled_executables": scan._cache_size(),
        "layers": sorted({type(layer).__name__ for r in packed for layer in r.model.layers}),
    }))
    """
)


@pytest.mark.slow
def test_trials_packed_together_give_each_the_losses_it_gets_alone():
    result = run_python(ALONE_AND_PACKED, backend="jax", timeout=900)
    assert result["initial_epochs"] == [0, 0, 1]
    assert result["epochs_trained"] == [2, 3, 3]
    assert result["loops"] == ["packed"] * 3
    assert result["resumed_from_packed"] == 3  # the packed trial's checkpoints are train()'s
    assert result["programs"] == 1  # three activations, one packed program
    assert "ActivationSwitch" not in result["layers"]  # the trials' own models are plain U-Nets
    assert result["filled_executables"] == 1  # packs of 3 and of 2 trials, 6 and 4 steps: one program
    for pack in result["filled"]:
        for index, packed in pack.items():
            alone = result["alone"][int(index)]
            for key in ("loss", "val_loss"):
                np.testing.assert_allclose(packed[key], alone[key], atol=5e-5, err_msg=f"filled {key}")
    for alone, packed in zip(result["alone"], result["packed"]):
        for key in ("loss", "val_loss"):
            np.testing.assert_allclose(packed[key], alone[key], atol=5e-5, err_msg=key)
    # The check can fail: every trial's losses differ from every other's by more than its tolerance,
    # so a pack that mixed up learning rates, orders or weights would not match.
    curves = [alone["loss"][:2] + alone["val_loss"][:2] for alone in result["alone"]]
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.max(np.abs(np.subtract(curves[i], curves[j]))) > 1e-4, (i, j)


def _member(batch_size: int, seed: int, initial_epoch: int, epochs: int) -> _Member:
    trial = PackedTrial(Settings(batch_size=batch_size, seed=seed), epochs)
    return _Member(trial, model=None, config={}, initial_epoch=initial_epoch, history={})


def test_each_trial_steps_through_its_own_order_padded_and_masked_then_sits_out():
    members = [_member(2, 1, 0, 2), _member(3, 2, 0, 2), _member(4, 3, 1, 2)]
    active = [m.trains(0) for m in members]
    assert active == [True, True, False]
    indices, mask, on = _epoch_batches(members, active, 13, 0, 8)
    assert indices.shape == (6, 3, 8) and mask.shape == (6, 3, 8) and on.shape == (6, 3)
    for index, (batch, seed) in enumerate([(2, 1), (3, 2)]):
        order = epoch_order(13, seed, 0)
        steps = 13 // batch
        np.testing.assert_array_equal(indices[:steps, index, :batch].ravel(), order[: steps * batch])
        assert on[:steps, index].all() and not on[steps:, index].any()
        assert (mask[:, index, :batch] == 1).all() and (mask[:, index, batch:] == 0).all()
    assert not on[:, 2].any()  # not training in this epoch: every step sits out
    indices, mask, on = _epoch_batches(members, active, 13, 0, 8, empty=2)  # two empty slots
    assert indices.shape == (6, 5, 8) and not on[:, 3:].any() and (mask[:, 3:] == 1).all()
    assert (indices[:, 3:] == 0).all()


# One HyperBand pass (R = 3) on the local engine, trials one at a time and then packed 3 at a
# time: the same pairs, warm starts and losses, and the packed pass's trials were packed.
LOCAL_ENGINE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from seglib import hpo
    from seglib.artifacts import read_json
    from seglib.settings import profile

    data, out = sys.argv[1], Path(sys.argv[2])
    space = hpo.search_space({"batch_size": {"_type": "choice", "_value": [4, 6, 8]},
                              "activation": {"_type": "choice", "_value": ["relu", "tanh"]}})
    settings = profile("quick", data=data, patch_size=32, max_patches=60, base_filters=4, depth=2,
                       max_budget=3, eta=3, engine="local", seed=3)
    runs = {}
    for pack in (1, 3):
        experiment = hpo.tune(out / f"pack{pack}", settings.replace(pack_trials=pack), space=space)
        runs[pack] = {
            "trials": sorted([r.config_id, r.budget, r.status, r.resumed_from, r.epochs_trained, r.value]
                             for r in experiment.trials),
            "loops": sorted(read_json(p)["loop"] for p in (out / f"pack{pack}").rglob("result.json")),
        }
    # Stopped by its time limit after its first pack: the jobs handed out with it but not
    # started go back to the queue untouched; run again, it finishes as the others did.
    stopped = out / "stopped"
    try:
        hpo.tune(stopped, settings.replace(pack_trials=3), space=space, timeout=0)
    except TimeoutError:
        pass
    jobs = read_json(stopped / "search_state.json")["jobs"]
    runs["stopped"] = sorted((j["status"], len(j["interruptions"])) for j in jobs)
    experiment = hpo.tune(stopped, space=space)
    runs["resumed"] = sorted([r.config_id, r.budget, r.status, r.resumed_from, r.epochs_trained, r.value]
                             for r in experiment.trials)
    print(json.dumps(runs))
    """
)


@pytest.mark.slow
def test_the_local_engine_packs_a_rungs_trials_with_the_losses_they_get_alone(tmp_path, embedded_root):
    cache = {"SEGLIB_CACHE": str(tmp_path / "cache")}
    runs = run_python(LOCAL_ENGINE, str(embedded_root), str(tmp_path), backend="jax", extra_env=cache, timeout=1800)
    alone, packed = runs["1"], runs["3"]
    assert "packed" in packed["loops"] and "packed" not in alone["loops"]
    assert len(alone["trials"]) == len(packed["trials"]) > 3
    for one, other in zip(alone["trials"], packed["trials"]):
        assert one[:5] == other[:5]  # configuration, budget, status, warm start, epochs
        assert other[5] == pytest.approx(one[5], abs=5e-5)
    # R = 3: the first rungs of both brackets handed out at once, 3 jobs of 1 epoch and 2 of 3,
    # packed by their epochs. The first pack trained and its rung promoted its best (queued);
    # the 2 jobs handed out but never started are queued again, with no interruption recorded.
    assert runs["stopped"] == [["QUEUED", 0]] * 3 + [["SUCCEEDED", 0]] * 3
    for one, other in zip(packed["trials"], runs["resumed"]):
        assert one[:5] == other[:5]
        assert other[5] == pytest.approx(one[5], abs=5e-5)


@pytest.mark.parametrize(
    "recipe", [{"augment": "d4"}, {"lr_schedule": "cosine"}, {"keep_epoch": "best"}, {"patience": 3}]
)
def test_packing_refuses_a_recipe_it_does_not_train(recipe):
    from seglib.settings import SettingError

    Settings(pack_trials=4)  # the original recipe packs
    Settings(pack_trials=1, **recipe)  # the new recipe trains one trial at a time
    name = next(iter(recipe))
    with pytest.raises(SettingError, match=rf"pack_trials=4 trains the original recipe only.*'{name}'"):
        Settings(pack_trials=4, **recipe)
