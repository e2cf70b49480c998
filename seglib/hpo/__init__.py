"""seglib's HyperBand run by NNI: schedule, tuner, trial entry point, lifecycle, export, CLI.

``seglib.hpo.hyperband`` is pure Python (no NNI, no Keras), so importing this package is cheap.
"""

from seglib.hpo.hyperband import (
    DEFAULT_ETA,
    DEFAULT_MAX_BUDGET,
    DEFAULT_SEARCH_SPACE,
    Bracket,
    Rung,
    brackets,
    pass_epochs,
    search_space,
)

__all__ = [
    "DEFAULT_ETA",
    "DEFAULT_MAX_BUDGET",
    "DEFAULT_SEARCH_SPACE",
    "Bracket",
    "Rung",
    "brackets",
    "pass_epochs",
    "search_space",
]
