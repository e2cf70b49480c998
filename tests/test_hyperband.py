"""The pure HyperBand schedule: budgets, counts and epoch totals worked out by hand."""

from __future__ import annotations

import pytest

from seglib.hpo.hyperband import DEFAULT_SEARCH_SPACE, brackets, pass_epochs, search_space


def test_original_schedule_budgets_and_counts():
    schedule = brackets(60, 3)
    assert [b.s for b in schedule] == [3, 2, 1, 0]
    assert [[(r.n_configs, r.budget) for r in b.rungs] for b in schedule] == [
        [(27, 2), (9, 6), (3, 20), (1, 60)],
        [(12, 6), (4, 20), (1, 60)],
        [(6, 20), (2, 60)],
        [(4, 60)],
    ]


def test_full_pass_trains_920_epochs_from_scratch_and_780_warm():
    assert pass_epochs(60, 3) == {"from_scratch": 920, "warm_start": 780, "trials": 69}


def test_small_pass_used_by_the_nni_tests():
    # s=2: 9x1, 3x3, 1x9; s=1: 5x3, 1x9; s=0: 3x9
    assert [[(r.n_configs, r.budget) for r in b.rungs] for b in brackets(9, 3)] == [
        [(9, 1), (3, 3), (1, 9)],
        [(5, 3), (1, 9)],
        [(3, 9)],
    ]
    assert pass_epochs(9, 3) == {"from_scratch": 78, "warm_start": 69, "trials": 22}


def test_exact_powers_do_not_lose_a_bracket_to_rounding():
    assert [b.s for b in brackets(243, 3)] == [5, 4, 3, 2, 1, 0]
    assert brackets(243, 3)[0].rungs[0].budget == 1


@pytest.mark.parametrize("max_budget, eta", [(0, 3), (9, 1), (9.5, 3)])
def test_bad_arguments_are_refused(max_budget, eta):
    with pytest.raises(ValueError, match="HyperBand"):
        brackets(max_budget, eta)


def test_search_space_defaults_and_overrides():
    assert search_space() == DEFAULT_SEARCH_SPACE
    space = search_space({"batch_size": {"_type": "choice", "_value": [8]}, "activation_type": None})
    assert space["batch_size"] == {"_type": "choice", "_value": [8]}
    assert "activation_type" not in space
    assert DEFAULT_SEARCH_SPACE["activation_type"]["_value"] == ["relu", "tanh", "swish", None]
