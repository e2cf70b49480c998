"""BOHB (Falkner et al., "BOHB: Robust and Efficient Hyperparameter Optimization at Scale",
ICML 2018): HyperBand's schedule, with new configurations proposed by a model of the good ones.

Implementation notes. The brackets, rungs, promotions and warm start are HyperBand's exactly
(:class:`~seglib.hpo.hyperband.HyperBand`); only where a bracket's new configurations come from
differs. HyperBand draws a bracket's configurations when it opens; BOHB proposes each one when
it is handed out, so every proposal sees every trial finished by then. A proposal follows
BOHB's rules:

* the model is fitted on the trials of the *largest budget* that has at least ``n_min``
  finished trials (``n_min`` = number of hyperparameters + 1); with none, the proposal is
  random;
* a third of the proposals are random whatever the model (``RANDOM_FRACTION``), so the search
  keeps exploring;
* a trial that diverged or failed is an observation with an infinite loss: the model learns to
  avoid its region.

The density model is Optuna's TPE (``optuna.samplers.TPESampler``, multivariate: one kernel
density over all hyperparameters, as BOHB's), used through its ask/tell interface: for each
proposal an in-memory study is rebuilt from the finished trials of the modelled budget and
asked once, with a sampler seeded from the search's seed and the new configuration's id. So
the state file alone decides every proposal: a resumed search proposes exactly what an
uninterrupted one would have. Random proposals use seglib's own sampler (NNI's semantics).
"""

from __future__ import annotations

import bisect
import contextlib
import math
import warnings

from seglib.artifacts import DIVERGED, FAILED, SUCCEEDED
from seglib.hpo.hyperband import HyperBand
from seglib.hpo.schedule import Job, is_usable
from seglib.hpo.space import sample

RANDOM_FRACTION = 1 / 3  # proposals drawn at random whatever the model (the paper's ρ)
GOOD_FRACTION = 0.15  # the share of a budget's trials that model the good density (the paper's q)
OBSERVED = (SUCCEEDED, DIVERGED, FAILED)  # a trial whose end says something about its configuration
MODELLED_TYPES = ("choice", "randint", "uniform", "loguniform")


def n_min(space: dict) -> int:
    """Finished trials a budget needs before it is modelled: number of hyperparameters + 1 (BOHB's N_min)."""
    return len(space) + 1


def check_modelled_space(space: dict) -> None:
    """Raise ValueError naming an entry that Optuna's TPE cannot model as seglib draws it."""
    for name, spec in space.items():
        kind, values = spec.get("_type"), spec.get("_value")
        primitive = kind != "choice" or all(v is None or isinstance(v, (bool, int, float, str)) for v in values)
        if kind not in MODELLED_TYPES or not primitive:
            what = "a choice among lists or dicts" if kind == "choice" else f"of _type {kind!r}"
            raise ValueError(
                f"search space entry {name!r} is {what}: BOHB models choice (of numbers, strings, booleans or "
                f"None), randint, uniform and loguniform entries only; change the entry, or use --tuner "
                "hyperband or --tuner asha with this space"
            )


def model_budget(observed: dict[int, list[Job]], minimum: int) -> int | None:
    """The largest budget with at least ``minimum`` finished trials, or None."""
    return max((budget for budget, jobs in observed.items() if len(jobs) >= minimum), default=None)


class BOHB(HyperBand, kind="bohb"):
    """HyperBand's pass at R = ``max_budget`` and ``eta``, configurations proposed by BOHB's rules."""

    title = "BOHB"
    plans_ahead = False  # a bracket's configurations come from the model of the results so far

    def __init__(self, max_budget: int, eta: int, space: dict | None = None, seed: int = 0):
        super().__init__(max_budget, eta, space, seed)
        check_modelled_space(self.state["search_space"])

    def proposal(self, config_id: str) -> dict:
        """What the search proposes for ``config_id`` now: its params, and the budget modelled (None: random)."""
        space = self.state["search_space"]
        rng = self._rng(config_id)
        budget = model_budget(self._observed, n_min(space))
        if rng.random() < RANDOM_FRACTION or budget is None:
            return {"params": sample(space, rng), "model_budget": None}
        observations = [(self.params(job), job.value if is_usable(job) else math.inf) for job in self._observed[budget]]
        return {"params": tpe_proposal(space, observations, seed=rng.getrandbits(32)), "model_budget": budget}

    # -- internals --------------------------------------------------------------------------
    def _open_bracket(self, bracket: dict) -> None:
        """Open the bracket's first rung; its configurations are proposed one by one as they are handed out."""
        bracket["rung"] = 0
        bracket["to_propose"] = bracket["rungs"][0][0]

    def _new_config(self, bracket_index: int) -> str:
        configs = self.state["configs"]
        config_id = f"c{len(configs):04d}"
        configs[config_id] = {"bracket": bracket_index, **self.proposal(config_id)}
        return config_id

    def _reindex(self) -> None:
        super()._reindex()
        self._observed: dict[int, list[Job]] = {}
        for job in self.jobs:
            if job.status in OBSERVED:
                self._observed.setdefault(job.budget, []).append(job)

    def _on_finished(self, job: Job) -> list[Job]:
        if job.status in OBSERVED:
            # in the order they were handed out, as a reload files them, whatever order they ended in
            bisect.insort(self._observed.setdefault(job.budget, []), job, key=lambda j: j.parameter_id)
        return super()._on_finished(job)


def tpe_proposal(space: dict, observations: list[tuple[dict, float]], seed: int) -> dict:
    """One configuration from Optuna's multivariate TPE fitted on ``observations`` ((params, loss) pairs)."""
    import optuna

    distributions = {name: _distribution(optuna, spec) for name, spec in space.items()}
    with _quiet(optuna):
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_min(space), multivariate=True, gamma=_good_count(n_min(space))
        )
        study = optuna.create_study(direction="minimize", sampler=sampler)
        study.add_trials(
            [
                optuna.trial.create_trial(params=params, distributions=distributions, value=loss)
                for params, loss in observations
            ]
        )
        return dict(study.ask(distributions).params)


def _good_count(minimum: int):
    """BOHB's split of the observations: the best ``max(n_min, 15 %)`` model the good density, the rest the bad.

    Optuna's default (the best 10 %) leaves one good trial among the few a budget has, and at a
    budget reached only by promoted trials (all of them good ones) its TPE then proposes away
    from them: BOHB's larger good set keeps the proposals where the losses are low. Optuna
    deprecates this argument from 4.9 and drops it in 6.0, hence ``optuna<6`` in pyproject.toml.
    """
    return lambda n: max(1, min(n - 1, max(minimum, math.ceil(GOOD_FRACTION * n))))


def _distribution(optuna, spec: dict):
    """An NNI-format entry as the Optuna distribution it samples from (randint's upper bound excluded)."""
    kind, values = spec["_type"], spec["_value"]
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(values))
    if kind == "randint":
        return optuna.distributions.IntDistribution(int(values[0]), int(values[1]) - 1)
    return optuna.distributions.FloatDistribution(values[0], values[1], log=kind == "loguniform")


@contextlib.contextmanager
def _quiet(optuna):
    """Optuna without its INFO lines (a study per proposal) and its warnings about the arguments seglib chose."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.filterwarnings("ignore", "`gamma` has been deprecated", FutureWarning)  # see _good_count
            yield
    finally:
        optuna.logging.set_verbosity(level)
