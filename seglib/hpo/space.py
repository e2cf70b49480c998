"""The search space (NNI's format) and how a configuration is drawn from it, without NNI.

Its keys are the settings' own names (``seglib.settings.HYPERPARAMETERS``), so a drawn
configuration replaces those settings as it is.
"""

from __future__ import annotations

import copy
import itertools
import math
import random

from seglib.settings import ACTIVATIONS, HYPERPARAMETERS

# The original's search space. NNI's randint excludes its upper bound: batch sizes 1..31.
DEFAULT_SEARCH_SPACE: dict = {
    "batch_size": {"_type": "randint", "_value": [1, 32]},
    "learning_rate": {"_type": "loguniform", "_value": [1e-4, 0.1]},
    "activation": {"_type": "choice", "_value": list(ACTIVATIONS)},
}


def search_space(overrides: dict | None = None) -> dict:
    """The default search space with ``overrides`` merged in (a value of None drops a key)."""
    space = copy.deepcopy(DEFAULT_SEARCH_SPACE)
    for name, spec in (overrides or {}).items():
        if spec is None:
            space.pop(name, None)
        else:
            space[name] = copy.deepcopy(spec)
    return space


def sample(space: dict, rng: random.Random) -> dict:
    """One configuration drawn from an NNI-format search space (NNI's semantics per type)."""
    return {name: _sample_one(name, spec, rng) for name, spec in space.items()}


def _sample_one(name: str, spec: dict, rng: random.Random):
    kind, value = spec.get("_type"), spec.get("_value")
    if kind == "choice":
        return value[rng.randrange(len(value))]
    if kind == "randint":  # NNI: lower inclusive, upper exclusive
        return rng.randrange(int(value[0]), int(value[1]))
    if kind in ("uniform", "quniform"):
        x = rng.uniform(value[0], value[1])
    elif kind in ("loguniform", "qloguniform"):
        x = math.exp(rng.uniform(math.log(value[0]), math.log(value[1])))
    elif kind in ("normal", "qnormal"):
        x = rng.gauss(value[0], value[1])
    elif kind in ("lognormal", "qlognormal"):
        x = math.exp(rng.gauss(value[0], value[1]))
    else:
        raise ValueError(
            f"search space entry {name!r}: unsupported _type {kind!r}; expected choice, randint, "
            "(q)uniform, (q)loguniform, (q)normal or (q)lognormal"
        )
    if kind.startswith("q"):
        q = value[-1]
        x = round(x / q) * q
        if kind in ("quniform", "qloguniform"):
            x = min(max(x, value[0]), value[1])
    return x


def grid(space: dict, names=HYPERPARAMETERS, limit: int = 10_000) -> list[dict]:
    """Every combination of the values the space's finite entries (choice, randint) among ``names`` can take.

    Other entries are left out. Empty when the combinations are more than ``limit``.
    """
    values = {}
    for name, spec in space.items():
        kind, value = spec.get("_type"), spec.get("_value")
        if name not in names:
            continue
        if kind == "choice":
            values[name] = value
        elif kind == "randint":  # NNI: lower inclusive, upper exclusive
            values[name] = range(int(value[0]), int(value[1]))
    if math.prod(len(v) for v in values.values()) > limit:
        return []
    return [dict(zip(values, combination)) for combination in itertools.product(*values.values())]


def check_search_space(space: dict) -> None:
    """Raise ValueError naming the entry when a search space entry cannot be sampled."""
    rng = random.Random(0)
    for name, spec in space.items():
        if not isinstance(spec, dict) or "_type" not in spec or "_value" not in spec:
            raise ValueError(f"search space entry {name!r} must be {{'_type': ..., '_value': [...]}}, got {spec!r}")
        _sample_one(name, spec, rng)
