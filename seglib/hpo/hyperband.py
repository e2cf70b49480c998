"""HyperBand (Li et al., 2018) and random search at equal epochs, on the common state machine.

Budgets are computed with integers, ``floor(R * eta**(i - s)) == R // eta**(s - i)``, so
R = 60, η = 3 gives rungs of 2, 6, 20 and 60 epochs exactly as NNI's HyperBand handed them to
the original's trials. Random search is one bracket of one rung: configurations at R epochs
each until its epochs are spent. The base, :class:`seglib.hpo.schedule.Search`, holds what
every search shares (jobs, the registry, the state file).
"""

from __future__ import annotations

from seglib.hpo.schedule import Bracket, Job, Rung, Search, check_epochs
from seglib.settings import Settings


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


def brackets(max_budget: int, eta: int) -> list[Bracket]:
    """Every bracket of one HyperBand pass, s = s_max first (most configs, smallest budgets)."""
    top = s_max(max_budget, eta)
    result = []
    for s in range(top, -1, -1):
        n = -(-(top + 1) * eta**s // (s + 1))  # ceil((s_max + 1) / (s + 1) * eta**s)
        rungs = tuple(Rung(n // eta**i, max_budget // eta ** (s - i)) for i in range(s + 1))
        result.append(Bracket(s, rungs))
    return result


def pass_epochs(max_budget: int, eta: int) -> dict[str, int]:
    """Epochs one full pass trains from scratch and with warm start, and its number of trials."""
    schedule = brackets(max_budget, eta)
    return {
        "from_scratch": sum(b.epochs(warm_start=False) for b in schedule),
        "warm_start": sum(b.epochs(warm_start=True) for b in schedule),
        "trials": sum(b.n_trials for b in schedule),
    }


class HyperBand(Search, kind="hyperband"):
    """One HyperBand pass at R = ``max_budget`` epochs and ``eta``, with warm start."""

    title = "HyperBand"
    plans_ahead = True  # each bracket draws its configurations when it opens; rungs wait for all

    def __init__(self, max_budget: int, eta: int, space: dict | None = None, seed: int = 0):
        super().__init__(brackets(max_budget, eta), max_budget, eta, space, seed)

    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        totals = pass_epochs(settings.max_budget, settings.eta)
        cap = settings.max_trials
        return (totals["trials"] if cap is None else min(cap, totals["trials"])), totals["warm_start"]

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> HyperBand:
        return cls(settings.max_budget, settings.eta, space, settings.seed)


def random_trials(epochs: int, budget: int, cap: int | None) -> int:
    """Trials a random search of ``epochs`` in all at ``budget`` epochs each plans (at most ``cap``)."""
    planned = -(-int(epochs) // int(budget))
    return planned if cap is None else min(cap, planned)


class RandomSearch(Search, kind="random"):
    """Configurations drawn at random and trained ``budget`` epochs each, until ``epochs`` are spent.

    Trials are drawn one by one while epochs remain, the last one trained only what is left,
    so the total equals ``epochs`` exactly (what HyperBand spent, for an equal-budget
    comparison). Epochs are counted by :func:`charged_epochs`.
    """

    title = "random search"
    plans_ahead = True

    @classmethod
    def planned(cls, settings: Settings, max_epochs: int | None = None) -> tuple[int, int]:
        epochs = int(max_epochs or pass_epochs(settings.max_budget, settings.eta)["warm_start"])
        return random_trials(epochs, settings.max_budget, settings.max_trials), epochs

    @classmethod
    def create(cls, settings: Settings, space: dict, epochs: int) -> RandomSearch:
        return cls(epochs, settings.max_budget, space, settings.seed, settings.max_trials)

    def __init__(
        self, epochs: int, budget: int, space: dict | None = None, seed: int = 0, max_trials: int | None = None
    ):
        check_epochs("random search", epochs)
        if int(budget) != budget or budget < 1:
            raise ValueError(f"random search needs a budget per trial >= 1 epoch, got {budget!r}")
        super().__init__([], int(budget), None, space, seed)
        self.state.update(
            epochs=int(epochs),
            max_trials=max_trials,
            brackets=[{"index": 0, "s": 0, "rung": 0, "rungs": [[0, int(budget)]]}],
        )

    def _can_draw(self) -> bool:
        cap = self.state["max_trials"]
        return self.state["epochs"] - self.committed >= 1 and (cap is None or len(self.jobs) < cap)

    def next_job(self) -> Job | None:
        if self.halted:
            return None
        if not self._queued and self._can_draw():
            bracket = self.state["brackets"][0]
            budget = min(self.state["max_budget"], self.state["epochs"] - self.committed)
            bracket["rungs"][0][0] += 1
            self._add_job(bracket, self._new_config(0), budget, resume_from=0)
        return super().next_job()

    @property
    def finished(self) -> bool:
        return not self.handed_out and not self._can_draw()

    def planned_trials(self) -> int:
        planned = random_trials(self.state["epochs"], self.state["max_budget"], self.state["max_trials"])
        return max(len(self.jobs), planned)

    def _on_finished(self, job: Job) -> list[Job]:
        return []
