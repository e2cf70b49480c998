"""Run profiles: the one place where the quick and full settings are defined.

Configuration flows one way: module defaults (the original's values) -> profile ->
notebook parameters -> NNI parameters. A profile only names what differs between a CPU
run of minutes and the original's GPU run.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Profile:
    """Every setting a pipeline run needs, with units in the names where they have one."""

    name: str
    data: str | None  # dataset folder; None = the embedded default dataset
    patch_size: int
    max_patches: int | None  # subsample of the prepared patches (None = all)
    split: str  # "seed" (random 80/20, the original's) or "tiles" (held-out tiles)
    base_filters: int  # filters at the first U-Net level (original: 16)
    depth: int  # number of down-sampling levels (original: 4)
    epochs: int  # baseline training epochs
    batch_size: int
    learning_rate: float
    activation: str | None
    max_budget: int  # HyperBand R, in epochs
    eta: int  # HyperBand η
    max_trials: int | None  # None = one full HyperBand pass
    concurrency: int  # trials at once
    # "fp32" (the original's), "bf16" (mixed; GPUs of the Ampere generation or newer) or
    # "fp16" (mixed, with loss scaling; TensorFlow's fit()). The default only lets run.json
    # files written before this field existed load.
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision={self.precision!r}; expected one of {PRECISIONS}")

    def replace(self, **changes) -> "Profile":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    # CPU, minutes: the embedded dataset, small patches, a small net, small R.
    "quick": Profile(
        name="quick",
        data=None,
        patch_size=64,
        max_patches=None,
        split="tiles",
        base_filters=8,
        depth=3,
        epochs=4,
        batch_size=16,
        learning_rate=0.007,
        activation="relu",
        max_budget=3,
        eta=3,
        max_trials=None,
        concurrency=2,
        precision="fp32",
    ),
    # The original's settings: 256x256 patches, 50 baseline epochs, R = 60, η = 3,
    # 72 trials, 4 at a time.
    "full": Profile(
        name="full",
        data=None,
        patch_size=256,
        max_patches=None,
        split="seed",
        base_filters=16,
        depth=4,
        epochs=50,
        batch_size=16,
        learning_rate=0.007,
        activation="relu",
        max_budget=60,
        eta=3,
        max_trials=72,
        concurrency=4,
        precision="fp32",
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    """The named profile, with ``overrides`` applied (None values are ignored)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}") from None
    return profile.replace(**{k: v for k, v in overrides.items() if v is not None})
