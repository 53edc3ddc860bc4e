"""Budget plan, seed derivation and the normalised learning-curve AUC.

Expected values are computed by hand in comments, or with an independent numpy
implementation (``numpy.trapezoid``).
"""

from __future__ import annotations

import numpy as np
import pytest

from src.analysis.curves import normalised_auc
from src.selection.schedule import (
    STREAM_BASE,
    STREAM_RANDOM_SCORES,
    STREAM_SHUFFLE,
    STREAM_TRAIN,
    derive_seed,
    plan_budgets,
)


# --------------------------------------------------------------------------------------
# plan_budgets: int budget
# --------------------------------------------------------------------------------------
def test_until_exhausted_last_budget_is_remainder():
    # pool 250, no base: 100 + 100 + 50 = 250
    assert plan_budgets(250, 0, 100, None) == [100, 100, 50]


def test_until_exhausted_with_base():
    # pool 250, base 50 -> 200 left: 100 + 100
    assert plan_budgets(250, 50, 100, None) == [100, 100]
    # base 30 -> 220 left: 100 + 100 + 20
    assert plan_budgets(250, 30, 100, None) == [100, 100, 20]


def test_until_exhausted_exact_division_and_small_cases():
    assert plan_budgets(300, 0, 100, None) == [100, 100, 100]
    assert plan_budgets(7, 0, 10, None) == [7]  # one budget bigger than the pool
    assert plan_budgets(5, 0, 1, None) == [1] * 5
    assert plan_budgets(50, 50, 10, None) == []  # the base takes everything: base round only


@pytest.mark.parametrize("pool,base,budget", [(250, 0, 100), (250, 50, 100), (1000, 17, 33), (9, 2, 4)])
def test_until_exhausted_sums_to_pool(pool, base, budget):
    plan = plan_budgets(pool, base, budget, None)
    assert sum(plan) == pool - base
    assert all(b == budget for b in plan[:-1])
    assert 1 <= plan[-1] <= budget


def test_explicit_rounds_without_base():
    # no base: every round is a selection
    assert plan_budgets(250, 0, 50, 3) == [50, 50, 50]
    assert plan_budgets(250, 0, 50, 1) == [50]


def test_explicit_rounds_count_the_base_round():
    # rounds=3 with a base set: round 0 is the base, so 2 selections
    assert plan_budgets(250, 50, 100, 3) == [100, 100]
    assert plan_budgets(250, 50, 10, 5) == [10, 10, 10, 10]
    # rounds=1 with a base: only the base round
    assert plan_budgets(250, 50, 10, 1) == []


def test_explicit_rounds_filling_the_pool_exactly_is_allowed():
    # base 50 + 2 x 100 = 250
    assert plan_budgets(250, 50, 100, 3) == [100, 100]
    assert plan_budgets(250, 0, 125, 2) == [125, 125]


# --------------------------------------------------------------------------------------
# plan_budgets: list budgets
# --------------------------------------------------------------------------------------
def test_list_budget_one_selection_per_entry():
    assert plan_budgets(250, 0, [10, 20, 40], None) == [10, 20, 40]
    assert plan_budgets(250, 50, [10, 20, 40], None) == [10, 20, 40]


def test_list_budget_truncated_to_rounds():
    # no base, rounds=2 -> the first two entries
    assert plan_budgets(250, 0, [10, 20, 40], 2) == [10, 20]
    # base, rounds=3 -> 2 selections
    assert plan_budgets(250, 50, [10, 20, 40], 3) == [10, 20]
    # base, rounds=4 -> 3 selections: the whole list
    assert plan_budgets(250, 50, [10, 20, 40], 4) == [10, 20, 40]


def test_list_budget_does_not_alias_input():
    budgets = [10, 20]
    plan = plan_budgets(100, 0, budgets, None)
    plan.append(99)
    assert budgets == [10, 20]


# --------------------------------------------------------------------------------------
# plan_budgets: errors name the key
# --------------------------------------------------------------------------------------
def test_error_base_larger_than_pool():
    with pytest.raises(ValueError, match=r"selection\.base_size"):
        plan_budgets(100, 101, 10, None)


def test_error_negative_base():
    with pytest.raises(ValueError, match=r"selection\.base_size"):
        plan_budgets(100, -1, 10, None)


@pytest.mark.parametrize(
    "pool,base,budget,rounds",
    [
        (250, 0, 100, 3),  # 300 > 250
        (250, 50, 100, 4),  # base + 3 x 100 = 350 > 250
        (250, 50, 201, 2),  # 1 selection of 201 > 200 left
        (100, 0, [50, 60], None),  # 110 > 100
        (100, 10, [50, 50], None),  # 100 > 90 left
    ],
)
def test_error_total_larger_than_pool(pool, base, budget, rounds):
    with pytest.raises(ValueError, match=r"selection\.budget"):
        plan_budgets(pool, base, budget, rounds)


@pytest.mark.parametrize("budget", [0, -5, [10, 0], [10, -1], [], [10, 2.5], True, [True, 3]])
def test_error_non_positive_or_bad_budget(budget):
    with pytest.raises(ValueError, match=r"selection\.budget"):
        plan_budgets(100, 0, budget, None)


def test_error_short_budget_list():
    # rounds=4 without base needs 4 budgets; with base 3
    with pytest.raises(ValueError, match=r"selection\.budget") as info:
        plan_budgets(250, 0, [10, 20], 4)
    assert "selection.rounds" in str(info.value)
    with pytest.raises(ValueError, match=r"selection\.budget"):
        plan_budgets(250, 50, [10, 20], 4)


@pytest.mark.parametrize("rounds", [0, -1])
def test_error_rounds_below_one(rounds):
    with pytest.raises(ValueError, match=r"selection\.rounds"):
        plan_budgets(250, 0, 10, rounds)
    with pytest.raises(ValueError, match=r"selection\.rounds"):
        plan_budgets(250, 50, [10, 20], rounds)


def test_list_budget_single_round_without_base():
    # rounds=1 and no base is one selection
    assert plan_budgets(250, 0, [10], 1) == [10]


# --------------------------------------------------------------------------------------
# derive_seed
# --------------------------------------------------------------------------------------
def test_derive_seed_deterministic_and_31_bit():
    for seed in (0, 1, 42, 2**31 - 1):
        for r in range(5):
            for stream in (STREAM_BASE, STREAM_RANDOM_SCORES, STREAM_TRAIN, STREAM_SHUFFLE):
                s = derive_seed(seed, r, stream)
                assert isinstance(s, int)
                assert 0 <= s < 2**31
                assert s == derive_seed(seed, r, stream)


def test_derive_seed_independent_of_call_history():
    a = derive_seed(7, 3, STREAM_TRAIN)
    for r in range(10):
        derive_seed(7, r, STREAM_BASE)
    np.random.seed(0)  # global state must not matter either
    assert derive_seed(7, 3, STREAM_TRAIN) == a


def test_derive_seed_differs_across_seed_round_and_stream():
    streams = (STREAM_BASE, STREAM_RANDOM_SCORES, STREAM_TRAIN, STREAM_SHUFFLE)
    assert len(set(streams)) == 4
    seeds = {(seed, r, st): derive_seed(seed, r, st) for seed in range(3) for r in range(6) for st in streams}
    # 72 distinct inputs -> 72 distinct seeds (a collision in 31 bits would be ~1e-6 likely)
    assert len(set(seeds.values())) == len(seeds)
    # and specifically: not a simple offset such as seed + round
    assert derive_seed(0, 1, STREAM_TRAIN) != derive_seed(1, 0, STREAM_TRAIN)


# --------------------------------------------------------------------------------------
# normalised_auc
# --------------------------------------------------------------------------------------
def test_auc_hand_values():
    # x=[0,10,20], y=[0,1,1]: trapezoids (0+1)/2*10 = 5 and (1+1)/2*10 = 10 -> 15 / 20
    assert normalised_auc([0, 10, 20], [0, 1, 1]) == pytest.approx(0.75, abs=1e-15)
    # uneven grid: x=[100, 200, 500], y=[0.2, 0.4, 0.7]
    # (0.2+0.4)/2*100 = 30 and (0.4+0.7)/2*300 = 165 -> 195 / 400 = 0.4875
    assert normalised_auc([100, 200, 500], [0.2, 0.4, 0.7]) == pytest.approx(0.4875, abs=1e-12)
    # a constant curve has AUC equal to the constant
    assert normalised_auc([5, 6, 9, 30], [0.3] * 4) == pytest.approx(0.3, abs=1e-15)
    # two points: mean of the two
    assert normalised_auc([0, 4], [1, 3]) == pytest.approx(2.0, abs=1e-15)


def test_auc_matches_numpy_trapezoid_on_random_curves():
    rng = np.random.default_rng(77)
    for _ in range(100):
        m = int(rng.integers(2, 30))
        x = np.sort(rng.choice(np.arange(1, 10_000), size=m, replace=False)).astype(float)
        y = rng.random(m)
        expected = np.trapezoid(y, x) / (x[-1] - x[0])
        assert normalised_auc(x, y) == pytest.approx(expected, rel=1e-12, abs=1e-14)
        assert y.min() - 1e-12 <= normalised_auc(x, y) <= y.max() + 1e-12


def test_auc_unsorted_x_is_sorted_with_its_y():
    # the hand example, shuffled as pairs: still 0.75
    assert normalised_auc([20, 0, 10], [1, 0, 1]) == pytest.approx(0.75, abs=1e-15)
    rng = np.random.default_rng(78)
    x = np.sort(rng.choice(np.arange(1000), size=12, replace=False)).astype(float)
    y = rng.random(12)
    expected = np.trapezoid(y, x) / (x[-1] - x[0])
    perm = rng.permutation(12)
    assert normalised_auc(x[perm], y[perm]) == pytest.approx(expected, rel=1e-12)
    # lists work as well as arrays
    assert normalised_auc(list(x[perm]), list(y[perm])) == pytest.approx(expected, rel=1e-12)


def test_auc_single_point_returns_its_value():
    assert normalised_auc([100], [0.42]) == 0.42
    assert isinstance(normalised_auc([100], [0.42]), float)


@pytest.mark.parametrize(
    "x,y",
    [
        ([0, 1, 2], [0, 1]),
        ([0, 1], [0, 1, 2]),
        ([], []),
        ([[0, 1], [2, 3]], [[0, 1], [2, 3]]),
    ],
)
def test_auc_bad_shapes_raise(x, y):
    with pytest.raises(ValueError):
        normalised_auc(x, y)


def test_plan_budgets_rejects_an_empty_pool_and_non_integer_budgets():
    with pytest.raises(ValueError, match="pool is empty"):
        plan_budgets(0, 0, 10, None)
    with pytest.raises(ValueError, match="selection.budget=100.0"):
        plan_budgets(500, 0, 100.0, None)
