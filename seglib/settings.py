"""Every setting of a run, named once, with the original project's values as its defaults.

Configuration flows one way: these defaults (the original's) -> a profile, which names only
what differs -> overrides (``seglib run -p KEY=VALUE``, a notebook's ``OVERRIDES``) -> the
hyperparameters a search hands a trial. Each step makes a new :class:`Settings`, and every
value is checked where it is made, so a bad one fails at once with its name, the value and
what is allowed, before any notebook, training or trial starts.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass

PRECISIONS = ("fp32", "bf16", "fp16")
ACTIVATIONS = ("relu", "tanh", "swish", None)  # None: linear
SPLITS = ("seed", "tiles")
ENGINES = ("nni", "local")
# The training recipe; the first of each is the original's (docs/hpo.md, "The training recipe").
AUGMENTS = ("none", "d4", "d4+color")  # d4: the 8 symmetries of a square; +color: brightness/contrast
LR_SCHEDULES = ("constant", "cosine")  # cosine: linear warm-up, then cosine decay to ~0
KEEP_EPOCHS = ("last", "best")  # best: the weights of the epoch with the lowest validation loss
# The searches seglib runs (seglib.hpo registers a class for each name); random search at the
# main search's epochs is the comparison, so it is never a run's main search.
TUNERS = ("hyperband", "asha", "bohb", "random")
MAIN_TUNERS = ("hyperband", "asha", "bohb")
# What a search tunes; a trial's settings are the run's with these replaced.
HYPERPARAMETERS = ("batch_size", "learning_rate", "activation")


class SettingError(ValueError):
    """A setting with a value outside what it allows; the message names both."""


@dataclass(frozen=True)
class Settings:
    """One run's settings; units in the names where they have one."""

    data: str | None = None  # dataset folder; None = the embedded default dataset
    patch_size: int = 256  # pixels per side
    max_patches: int | None = None  # a fixed random subsample of the patches (None = all)
    split: str = "seed"  # "seed": random 80/20, the original's; "tiles": held-out tiles
    base_filters: int = 16  # filters at the U-Net's first level
    depth: int = 4  # down-sampling levels
    epochs: int = 50  # baseline and tuned-model training
    batch_size: int = 16
    learning_rate: float = 0.007
    activation: str | None = "relu"
    max_budget: int = 60  # HyperBand R, in epochs
    eta: int = 3  # HyperBand η
    max_trials: int | None = 72  # None = one full HyperBand pass
    concurrency: int = 4  # trials at once (the nni engine)
    # Trials the local engine trains together in one program when a rung hands out several
    # and the backend is JAX (seglib.train.packed); 1: one after another.
    pack_trials: int = 1
    # Background threads that compile, while the local engine trains one trial at a time on
    # JAX, the programs of the trials to come (seglib.train.ahead); 0: each is compiled when
    # its first trial needs it.
    compile_ahead: int = 0
    # "fp32" (the original's), "bf16" (mixed; GPUs of the Ampere generation or newer) or
    # "fp16" (mixed, with loss scaling; for a T4).
    precision: str = "fp32"
    engine: str = "nni"  # runs the search's trials: "nni" (processes, web UI) or "local" (in-process)
    # The run's main search: "hyperband" (the original's), "asha" (asynchronous successive
    # halving) or "bohb" (HyperBand's schedule, new configurations from a model); docs/hpo.md.
    tuner: str = "hyperband"
    seed: int = 0  # configurations drawn, weights, dropout, shuffling, augmentation
    augment: str = "none"  # per-patch augmentation of each epoch's training patches
    # The learning rate per epoch. Its horizon is the run's epochs for the baseline and tuned
    # model, max_budget for a search's trials (never a rung's budget: warm start stays exact).
    lr_schedule: str = "constant"
    warmup_epochs: int = 0  # linear warm-up epochs of the cosine schedule
    keep_epoch: str = "last"  # the weights a training returns
    patience: int | None = None  # stop after this many epochs without a lower val_loss (None: off)
    # The report's held-out whole images also scored averaged over the 8 flips and rotations:
    # eight times the blended windows' time (27 min of a 2-core CPU run at 64 px).
    whole_image_tta: bool = True

    def __post_init__(self):
        for spec in dataclasses.fields(self):
            _check(spec.name, getattr(self, spec.name))
        if self.patch_size % 2**self.depth:
            raise SettingError(
                f"patch_size={self.patch_size} with depth={self.depth}: the patch side must be a "
                f"multiple of 2**depth = {2**self.depth} (each U-Net level halves it)"
            )
        recipe = {"augment": "none", "lr_schedule": "constant", "keep_epoch": "last", "patience": None}
        changed = {name: getattr(self, name) for name, value in recipe.items() if getattr(self, name) != value}
        if self.pack_trials > 1 and changed:
            raise SettingError(
                f"pack_trials={self.pack_trials} trains the original recipe only ({recipe}); found "
                f"{changed}: set pack_trials=1 to train this recipe"
            )
        if not isinstance(self.learning_rate, float):  # an int such as 1 from a command line
            object.__setattr__(self, "learning_rate", float(self.learning_rate))

    def replace(self, **changes) -> Settings:
        """These settings with ``changes`` applied (each checked); unknown names are refused."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> Settings:
        """Settings from a dict read from ``source`` (a file name, for the error message)."""
        unknown = sorted(set(values) - set(NAMES))
        if unknown:
            raise SettingError(
                f"{source}: unknown setting(s) {unknown}; expected some of {sorted(NAMES)} "
                "(was it written by another seglib version?)"
            )
        return cls(**values)

    def hyperparameters(self) -> dict:
        """The values a search tunes, by their one name."""
        return {name: getattr(self, name) for name in HYPERPARAMETERS}


NAMES = tuple(f.name for f in dataclasses.fields(Settings))
# The settings that make the training recipe: recorded beside a saved model (``seglib predict``
# turns test-time averaging on by default for a model trained with augmentation), named in the report.
RECIPE = ("learning_rate", "augment", "lr_schedule", "warmup_epochs", "keep_epoch", "patience")

PROFILES: dict[str, dict] = {
    # The original's settings: 256x256 patches, U-Net of 16 filters and depth 4, 50 epochs,
    # R = 60, η = 3, 72 trials, 4 at a time.
    "full": {},
    # CPU, minutes: the embedded dataset, small patches, a small U-Net, a small R.
    "quick": {
        "patch_size": 64,
        "split": "tiles",
        "base_filters": 8,
        "depth": 3,
        "epochs": 4,
        "max_budget": 3,
        "max_trials": None,
        "concurrency": 2,
    },
    # The original's U-Net, data and search, trained with the improved recipe (docs/hpo.md,
    # "The training recipe"): lr 0.001 (0.007 collapsed in epoch 1 on real data, 2-core CPU),
    # symmetries and colour jitter, the best epoch's weights, a constant rate (a cosine schedule
    # scored lower at 10 epochs and no better at 40: docs/benchmarks.md, the recipe's ablation).
    "best": {
        "learning_rate": 0.001,
        "augment": "d4+color",
        "keep_epoch": "best",
    },
    # A real-data run on a 2-core CPU (docs/benchmarks.md): 64 px patches, 800 of them, held-out
    # tiles, the original's U-Net, one HyperBand pass of 3 brackets (R = 9, eta = 3), in-process,
    # the `best` recipe (its ablation's best row); the whole images scored without the 8-fold
    # average, which alone took 27 of a 105-minute run.
    "best-cpu": {
        "patch_size": 64,
        "max_patches": 800,
        "split": "tiles",
        "epochs": 30,
        "max_budget": 9,
        "eta": 3,
        "max_trials": None,
        "concurrency": 1,
        "engine": "local",
        "learning_rate": 0.001,
        "augment": "d4+color",
        "keep_epoch": "best",
        "whole_image_tta": False,
    },
}


def original() -> Settings:
    """The original project's settings (what the report compares a run with)."""
    return Settings()


def profile(name: str, **overrides) -> Settings:
    """The named profile with ``overrides`` applied."""
    if name not in PROFILES:
        raise SettingError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    _check_names(overrides)
    return Settings(**{**PROFILES[name], **overrides})


# ---------------------------------------------------------------------------------------------
# What each setting allows


def _integer(minimum: int, maximum: int | None = None):
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")

    def ok(value) -> bool:
        return (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= minimum
            and (maximum is None or value <= maximum)
        )

    return ok, allowed


def _optional(rule):
    ok, allowed = rule
    return (lambda value: value is None or ok(value)), f"None or {allowed}"


def _one_of(choices):
    return (lambda value: value in choices and type(value) in (str, type(None))), f"one of {list(choices)}"


def _boolean():
    return (lambda value: isinstance(value, bool)), "True or False"


def _positive_number():
    def ok(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0

    return ok, "a finite number > 0"


def _folder_or_none():
    return (
        lambda value: value is None or (isinstance(value, str) and value.strip() != "")
    ), "None (the embedded dataset) or a folder path"


RULES = {
    "data": _folder_or_none(),
    "patch_size": _integer(8),
    "max_patches": _optional(_integer(3)),
    "split": _one_of(SPLITS),
    "base_filters": _integer(1),
    "depth": _integer(1, 8),
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _positive_number(),
    "activation": _one_of(ACTIVATIONS),
    "max_budget": _integer(1),
    "eta": _integer(2),
    "max_trials": _optional(_integer(1)),
    "concurrency": _integer(1),
    "pack_trials": _integer(1),
    "compile_ahead": _integer(0),
    "precision": _one_of(PRECISIONS),
    "engine": _one_of(ENGINES),
    "tuner": _one_of(MAIN_TUNERS),
    "seed": _integer(0),
    "augment": _one_of(AUGMENTS),
    "lr_schedule": _one_of(LR_SCHEDULES),
    "warmup_epochs": _integer(0),
    "keep_epoch": _one_of(KEEP_EPOCHS),
    "patience": _optional(_integer(1)),
    "whole_image_tta": _boolean(),
}


def _check(name: str, value) -> None:
    ok, allowed = RULES[name]
    if not ok(value):
        raise SettingError(f"{name}={value!r}: expected {allowed}")


def _check_names(values: dict) -> None:
    for name in values:
        if name not in NAMES:
            close = difflib.get_close_matches(name, NAMES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise SettingError(f"unknown setting {name!r}{hint}; expected one of {sorted(NAMES)}")
