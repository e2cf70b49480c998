"""ASHA: asynchronous successive halving (Li et al., "A System for Massively Parallel
Hyperparameter Tuning", MLSys 2020) on the common state machine.

Implementation notes. ASHA has one bracket: the rungs of HyperBand's most aggressive one
(budgets ``R·η^-k``: 2, 6, 20 and 60 epochs at R = 60, η = 3). It never waits for a rung to
fill. Whenever a job is asked for, it promotes a configuration that ranks in the top ``1/η``
of its rung's finished trials and was not promoted yet, looking at the highest rung first;
otherwise it starts a new configuration at the bottom rung. A promoted configuration resumes
from its own checkpoint of the rung below (warm start), as in HyperBand.

What counts: a rung's *finished* trials are its SUCCEEDED and DIVERGED ones (a diverged trial
counts in the ``1/η`` and is never promoted; a FAILED one, its configuration's own error,
does not count). The search stops when its epochs are spent: by default the epochs one
HyperBand pass trains with warm start (780 at R = 60, η = 3), counted as
:func:`~seglib.hpo.schedule.charged_epochs` counts them (a trial that diverged early gives
back what it did not use). A job is handed out only if its increment fits in what is left,
never cut short, so every trial is trained to its rung's budget and ranks against its rung;
the search ends with less than the bottom rung's budget unspent (0 epochs at R = 60, η = 3,
where every increment is even). ``max_trials``, when set, also caps the trials.

Each rung keeps two sorted lists of rank keys, all finished trials and those not promoted
yet, so a decision is a few binary searches however many trials there are.
"""

from __future__ import annotations

import bisect

from seglib.artifacts import FINISHED
from seglib.hpo.hyperband import brackets, pass_epochs
from seglib.hpo.schedule import Bracket, Job, Rung, Search, check_epochs, is_usable, rank_key
from seglib.settings import Settings


def asha_rungs(max_budget: int, eta: int) -> tuple[int, ...]:
    """ASHA's rung budgets: those of HyperBand's most aggressive bracket, smallest first."""
    return tuple(rung.budget for rung in brackets(max_budget, eta)[0].rungs)


def _promotable(done: list[tuple], waiting: list[tuple], eta: int) -> tuple | None:
    """The best trial not yet promoted, if it ranks in the top ``1/eta`` of its rung's finished trials."""
    if not waiting:
        return None
    best = waiting[0]
    return best if bisect.bisect_left(done, best) < len(done) // eta else None


class Asha(Search, kind="asha"):
    """ASHA over the rungs of HyperBand's most aggressive bracket, until ``epochs`` are spent."""

    title = "ASHA"

    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        epochs = int(max_epochs or pass_epochs(settings.max_budget, settings.eta)["warm_start"])
        return expected_trials(settings.max_budget, settings.eta, epochs, settings.max_trials), epochs

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> Asha:
        return cls(settings.max_budget, settings.eta, epochs, space, settings.seed, settings.max_trials)

    def __init__(
        self,
        max_budget: int,
        eta: int,
        epochs: int | None = None,
        space: dict | None = None,
        seed: int = 0,
        max_trials: int | None = None,
    ):
        budgets = asha_rungs(max_budget, eta)
        epochs = pass_epochs(max_budget, eta)["warm_start"] if epochs is None else epochs
        check_epochs("ASHA", epochs)
        if max_trials is not None and (int(max_trials) != max_trials or max_trials < 1):
            raise ValueError(f"ASHA's max_trials must be None or an integer >= 1, got {max_trials!r}")
        bracket = Bracket(len(budgets) - 1, tuple(Rung(0, budget) for budget in budgets))
        super().__init__([bracket], max_budget, eta, space, seed)
        self.state["brackets"][0]["rung"] = len(budgets) - 1  # every rung is open from the start
        self.state.update(epochs=int(epochs), max_trials=max_trials)

    # -- queries ----------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return not self.handed_out and self._decide() is None

    def planned_trials(self) -> int:
        if self._planned is None:  # a dry run of the whole search: worked out once per process
            s = self.state
            self._planned = expected_trials(s["max_budget"], s["eta"], s["epochs"], s["max_trials"])
        return max(len(self.jobs), self._planned)

    # -- transitions ------------------------------------------------------------------------
    def next_job(self) -> Job | None:
        """A job put back first; else the highest promotion that fits; else a new configuration."""
        if self.halted:
            return None
        if self._queued:
            return self._hand_out(self.jobs[min(self._queued)])
        decision = self._decide()
        if decision is None:
            return None
        bracket = self.state["brackets"][0]
        rung, config_id = decision
        budgets = self._budgets()
        bracket["rungs"][rung][0] += 1
        if config_id is None:
            config_id = self._new_config(0)
        else:
            self._waiting[rung - 1].pop(0)  # the promoted one is always the rung's best waiting
        job = self._add_job(bracket, config_id, budgets[rung], budgets[rung - 1] if rung else 0, rung)
        return self._hand_out(job)

    # -- internals --------------------------------------------------------------------------
    def _budgets(self) -> list[int]:
        return [budget for _, budget in self.state["brackets"][0]["rungs"]]

    def _decide(self) -> tuple[int, str | None] | None:
        """(rung, configuration to promote or None for a new one) of the next job, or None: nothing fits."""
        cap = self.state["max_trials"]
        if cap is not None and len(self.jobs) >= cap:
            return None
        left = self.state["epochs"] - self.committed
        budgets = self._budgets()
        for rung in range(len(budgets) - 2, -1, -1):
            best = _promotable(self._done[rung], self._waiting[rung], self.state["eta"])
            if best is not None and budgets[rung + 1] - budgets[rung] <= left:
                return rung + 1, self.jobs[best[-1]].config_id
        return (0, None) if budgets[0] <= left else None

    def _reindex(self) -> None:
        self._planned: int | None = None
        rungs = len(self.state["brackets"][0]["rungs"])
        self._done: list[list[tuple]] = [[] for _ in range(rungs)]
        self._waiting: list[list[tuple]] = [[] for _ in range(rungs)]
        super()._reindex()
        for job in self.jobs:
            self._file(job)

    def _on_finished(self, job: Job) -> list[Job]:
        """File the trial under its rung; promotions wait for the next request."""
        self._file(job)
        return []

    def _file(self, job: Job) -> None:
        """A finished trial into its rung's ranking, and into its waiting list unless promoted or at the top."""
        if job.status not in FINISHED:
            return
        bisect.insort(self._done[job.rung], rank_key(job))
        above = job.rung + 1
        if is_usable(job) and above < len(self._done) and self.find(job.config_id, self._budgets()[above]) is None:
            bisect.insort(self._waiting[job.rung], rank_key(job))


def expected_trials(max_budget: int, eta: int, epochs: int, max_trials: int | None = None) -> int:
    """Trials ASHA hands out in ``epochs`` when every trial succeeds and ranks in arrival order.

    The real count depends on the losses (a late, better trial is promoted past earlier
    ones): this is what the progress line and the plan show before the search runs.
    """
    search = Asha(max_budget, eta, epochs, space={}, max_trials=max_trials)
    while (job := search.next_job()) is not None:
        search.report(job.parameter_id, 1.0, epochs_trained=job.budget - job.resume_from)
    return len(search.jobs)
