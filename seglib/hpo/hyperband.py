"""HyperBand (Li et al., 2018) as pure Python: the schedule, its epoch totals, the search space.

Nothing here imports NNI or Keras, so the report can draw the schedule and tests can check it
in microseconds. Budgets are in epochs (one budget unit = one epoch) and are computed with
integers, ``floor(R * eta**(i - s)) == R // eta**(s - i)``, so R = 60, η = 3 gives rungs of
2, 6, 20 and 60 epochs exactly as NNI's HyperBand handed them to the original's trials.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

DEFAULT_MAX_BUDGET = 60  # R, in epochs (the original's NNI default)
DEFAULT_ETA = 3  # η (the original's NNI default)

# The original's search space, in NNI's format (randint's upper bound is exclusive in NNI).
DEFAULT_SEARCH_SPACE: dict = {
    "batch_size": {"_type": "randint", "_value": [1, 32]},
    "learning_rate": {"_type": "loguniform", "_value": [1e-4, 0.1]},
    "activation_type": {"_type": "choice", "_value": ["relu", "tanh", "swish", None]},
}


@dataclass(frozen=True)
class Rung:
    """One rung of a bracket: ``n_configs`` configurations each trained to ``budget`` epochs."""

    n_configs: int
    budget: int


@dataclass(frozen=True)
class Bracket:
    """One HyperBand bracket ``s``: successive halving over its rungs, smallest budget first."""

    s: int
    rungs: tuple[Rung, ...]

    @property
    def n_trials(self) -> int:
        return sum(rung.n_configs for rung in self.rungs)

    def epochs(self, warm_start: bool) -> int:
        """Epochs the bracket trains; with warm start a promoted config trains only the increment."""
        total, previous = 0, 0
        for rung in self.rungs:
            total += rung.n_configs * (rung.budget - (previous if warm_start else 0))
            previous = rung.budget
        return total


def search_space(overrides: dict | None = None) -> dict:
    """The default search space with ``overrides`` merged in (a value of None drops a key)."""
    space = copy.deepcopy(DEFAULT_SEARCH_SPACE)
    for name, spec in (overrides or {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = copy.deepcopy(spec)
    return space


def s_max(max_budget: int, eta: int) -> int:
    """The largest s with eta**s <= R (integer arithmetic: log() rounds 243 / 3**5 the wrong way)."""
    check_schedule_args(max_budget, eta)
    s = 0
    while eta ** (s + 1) <= max_budget:
        s += 1
    return s


def check_schedule_args(max_budget: int, eta: int) -> None:
    """Raise ValueError unless R >= 1 and eta >= 2 are integers."""
    if int(max_budget) != max_budget or max_budget < 1:
        raise ValueError(f"HyperBand max_budget (R) must be an integer >= 1 epoch, got {max_budget!r}")
    if int(eta) != eta or eta < 2:
        raise ValueError(f"HyperBand eta must be an integer >= 2, got {eta!r}")


def brackets(max_budget: int = DEFAULT_MAX_BUDGET, eta: int = DEFAULT_ETA) -> list[Bracket]:
    """Every bracket of one HyperBand pass, s = s_max first (most configs, smallest budgets)."""
    top = s_max(max_budget, eta)
    result = []
    for s in range(top, -1, -1):
        n = -(-(top + 1) * eta**s // (s + 1))  # ceil((s_max + 1) / (s + 1) * eta**s)
        rungs = tuple(Rung(n // eta**i, max_budget // eta ** (s - i)) for i in range(s + 1))
        result.append(Bracket(s, rungs))
    return result


def pass_epochs(max_budget: int = DEFAULT_MAX_BUDGET, eta: int = DEFAULT_ETA) -> dict[str, int]:
    """Epochs one full pass trains from scratch and with warm start, and its number of trials."""
    schedule = brackets(max_budget, eta)
    return {
        "from_scratch": sum(b.epochs(warm_start=False) for b in schedule),
        "warm_start": sum(b.epochs(warm_start=True) for b in schedule),
        "trials": sum(b.n_trials for b in schedule),
    }
