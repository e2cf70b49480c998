"""seglib's hyperparameter search: HyperBand, ASHA or BOHB (and random search at equal epochs)
over the original's search space, run by an engine: NNI (trial processes, web UI, several
machines) or in-process (``engine="local"``: one process, nothing to install, fastest on one GPU).

In a notebook::

    from seglib import hpo
    experiment = hpo.tune("runs/quick/hpo", settings)      # runs to the end; resumes if interrupted
    experiment.best.params, experiment.trials             # the export (seglib.artifacts.Experiment)

``hpo.progress(out_dir)`` reads a search's state at any time; ``hpo.export(out_dir)`` rewrites
``trials.json``, ``trials.csv`` and ``best.json``. The searches (``schedule``, ``hyperband``,
``asha``, ``bohb``) are pure Python; importing this package registers every one of them, so a
state file of any kind loads.
"""

from seglib.hpo.asha import Asha
from seglib.hpo.bohb import BOHB
from seglib.hpo.driver import SearchRunning, stop
from seglib.hpo.export import export, format_progress, progress
from seglib.hpo.hyperband import Bracket, HyperBand, Job, RandomSearch, Rung, Search, brackets, pass_epochs
from seglib.hpo.search import SearchHalted, plan, tune
from seglib.hpo.space import DEFAULT_SEARCH_SPACE, search_space

__all__ = [
    "BOHB",
    "DEFAULT_SEARCH_SPACE",
    "Asha",
    "Bracket",
    "HyperBand",
    "Job",
    "RandomSearch",
    "Rung",
    "Search",
    "SearchHalted",
    "SearchRunning",
    "brackets",
    "export",
    "format_progress",
    "pass_epochs",
    "plan",
    "progress",
    "search_space",
    "stop",
    "tune",
]
