"""A synthetic multi-fidelity validation loss over the original's search space, with a known optimum.

For comparing searches on a virtual clock (``seglib.hpo.simulate``): what a trial of
configuration x would report after t epochs, where the full budget R is the last rung.
Not part of seglib: a user sizing a search needs the simulator and a cost model, not this.
Written here rather than taken from mf-prior-bench, whose MF-Hartmann functions live on a
continuous unit cube: the original's space has an integer batch size and a categorical
activation, and the optimum has to be known exactly over that space.

The formula, with u = log10(learning_rate) and z = log2(batch_size)::

    g(x)    = 0.25 + 0.04 (u - u*)^2 + 0.01 (z - 4)^2 + penalty[activation]
    f(x, t) = g(x) + 0.5 (exp(-t / tau(x)) - exp(-R / tau(x))) + N(0, noise * sqrt(R / t))

so f(x, R) = g(x) up to noise, and the optimum at the full budget is g = 0.25 at batch size
16, learning rate 10**u* and ``swish`` (penalties: swish 0, relu 0.02, tanh 0.06, linear 0.15).
The noise is a deterministic function of (seed, configuration, t), larger at low fidelities.

* ``ranking="well"``: u* = -2.5 and tau = R / 6 for every configuration, so every
  configuration's curve is the same shape and the early loss orders configurations as the
  final one does, up to the noise.
* ``ranking="badly"``: u* = -3.5 and tau(x) = (0.1 / learning_rate) ** 0.5 epochs: low
  learning rates learn slowly but end best, so at the small rungs the high learning rates
  look best and early losses mislead (HyperBand's motivating worst case).

The regret of a chosen configuration is its true loss at the full budget, without noise,
minus the optimum's: ``g(x) - 0.25``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

FLOOR = 0.25
BEST_BATCH_SIZE = 16
PENALTY = {"swish": 0.0, "relu": 0.02, "tanh": 0.06, None: 0.15}
GAP = 0.5  # how far above its final loss a configuration starts
BEST_LOG_LR = {"well": -2.5, "badly": -3.5}


@dataclass(frozen=True)
class Synthetic:
    """f(params, budget) for budgets up to ``max_budget`` (R); ``noise`` is the σ at the full budget."""

    max_budget: int
    ranking: str = "well"
    seed: int = 0
    noise: float = 0.005

    def __post_init__(self):
        if self.ranking not in BEST_LOG_LR:
            raise ValueError(f"ranking must be one of {sorted(BEST_LOG_LR)}, got {self.ranking!r}")

    def final(self, params: dict) -> float:
        """g(x): the loss at the full budget without noise."""
        u = math.log10(params["learning_rate"])
        z = math.log2(params["batch_size"])
        return (
            FLOOR
            + 0.04 * (u - BEST_LOG_LR[self.ranking]) ** 2
            + 0.01 * (z - math.log2(BEST_BATCH_SIZE)) ** 2
            + PENALTY[params["activation"]]
        )

    def tau(self, params: dict) -> float:
        """Epochs a configuration's excess loss takes to fall by e."""
        if self.ranking == "well":
            return self.max_budget / 6
        return (0.1 / params["learning_rate"]) ** 0.5

    def curve(self, params: dict, budget: float) -> float:
        """f(x, t) without noise."""
        tau = self.tau(params)
        return self.final(params) + GAP * (math.exp(-budget / tau) - math.exp(-self.max_budget / tau))

    def __call__(self, params: dict, budget: int) -> float:
        key = (self.seed, params["batch_size"], repr(params["learning_rate"]), params["activation"], budget)
        sigma = self.noise * math.sqrt(self.max_budget / budget)
        return self.curve(params, budget) + random.Random(repr(key)).gauss(0.0, sigma)

    def optimum(self) -> tuple[dict, float]:
        """The best configuration at the full budget and its loss there."""
        best = {"batch_size": BEST_BATCH_SIZE, "learning_rate": 10 ** BEST_LOG_LR[self.ranking], "activation": "swish"}
        return best, FLOOR

    def regret(self, params: dict) -> float:
        """The chosen configuration's true full-budget loss minus the optimum's (>= 0)."""
        return self.final(params) - FLOOR
