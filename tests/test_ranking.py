"""Ranking, pivot window and class diversity.

Expected values are worked out by hand in comments, or come from the slow, plain-Python
reference implementations at the top of this file (written from the definitions, not
from the code under test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from src.selection.ranking import (
    diverse_accept_order,
    pivot_visit_order,
    pivot_window,
    rank_by_score,
    select,
)


# --------------------------------------------------------------------------------------
# slow references, written from the definitions
# --------------------------------------------------------------------------------------
def ref_ranking(ids, scores):
    """Positions sorted by score descending, ties by ascending id (plain sort on a key)."""
    return sorted(range(len(ids)), key=lambda i: (-float(scores[i]), int(ids[i])))


def ref_window(n, b, q):
    """Brute force: among all starts s in [0, n-b], the one whose centre s + (b-1)/2 is
    nearest to q*(n-1); ties towards the lower start."""
    b = min(b, n)
    target = q * (n - 1)
    best = None
    for s in range(0, n - b + 1):
        d = abs(s + (b - 1) / 2 - target)
        if best is None or d < best[0] - 1e-9:
            best = (d, s)
    return best[1], best[1] + b


def ref_visit(n, b, q):
    """Window ranks in order, then outwards: start-1, stop, start-2, stop+1, ... (skipping
    ranks outside [0, n)); at equal distance the harder (lower) rank comes first."""
    start, stop = ref_window(n, b, q)
    order = list(range(start, stop))
    d = 1
    while len(order) < n:
        if start - d >= 0:
            order.append(start - d)
        if stop - 1 + d < n:
            order.append(stop - 1 + d)
        d += 1
    return order


def ref_capped_walk(classes, k, budget=None):
    """Walk the items in order, accept an item while its class has < k accepted items;
    then raise k by one and walk again; until the budget (default: all) is filled.
    Returns the walk positions in acceptance order."""
    n = len(classes)
    budget = n if budget is None else min(budget, n)
    accepted, taken, counts = [], [False] * n, {}
    while len(accepted) < budget:
        for i, c in enumerate(classes):
            if len(accepted) >= budget:
                break
            if not taken[i] and counts.get(c, 0) < k:
                taken[i] = True
                counts[c] = counts.get(c, 0) + 1
                accepted.append(i)
        k += 1
    return accepted


def ref_select(ids, scores, budget, pivot=0.0, classes=None, k=None):
    """Selected ids in rank order, from the references above."""
    n = len(ids)
    budget = min(budget, n)
    ranking = ref_ranking(ids, scores)
    visit = ref_visit(n, budget, pivot)
    if classes is None:
        chosen = visit[:budget]
    else:
        walk_classes = [classes[ranking[r]] for r in visit]
        if k is None:
            k = math.ceil(budget / len(set(classes)))
        chosen = [visit[j] for j in ref_capped_walk(walk_classes, k, budget)]
    return [int(ids[ranking[r]]) for r in sorted(chosen)]


# --------------------------------------------------------------------------------------
# rank_by_score
# --------------------------------------------------------------------------------------
def test_rank_descending_hand_example():
    ids = np.array([10, 11, 12, 13])
    scores = np.array([0.2, 0.9, 0.5, 0.1])
    # highest first: 0.9 (pos 1), 0.5 (pos 2), 0.2 (pos 0), 0.1 (pos 3)
    assert rank_by_score(ids, scores).tolist() == [1, 2, 0, 3]


def test_rank_ties_by_ascending_id():
    ids = np.array([7, 3, 5, 1, 9])
    scores = np.array([0.5, 0.5, 0.9, 0.5, 0.1])
    # 0.9 -> id 5 (pos 2); then the 0.5 tie by id: 1 (pos 3), 3 (pos 1), 7 (pos 0); then id 9
    order = rank_by_score(ids, scores)
    assert order.tolist() == [2, 3, 1, 0, 4]
    assert ids[order].tolist() == [5, 1, 3, 7, 9]


def test_rank_independent_of_storage_order():
    rng = np.random.default_rng(0)
    ids = np.arange(100, 160)
    scores = rng.integers(0, 5, size=ids.size).astype(float)  # many ties
    expected_ids = ids[ref_ranking(ids, scores)].tolist()
    for _ in range(20):
        perm = rng.permutation(ids.size)
        order = rank_by_score(ids[perm], scores[perm])
        assert ids[perm][order].tolist() == expected_ids


def test_rank_nan_raises():
    with pytest.raises(ValueError, match="NaN"):
        rank_by_score(np.arange(3), np.array([0.1, np.nan, 0.3]))


def test_rank_shape_mismatch_raises():
    with pytest.raises(ValueError):
        rank_by_score(np.arange(3), np.array([0.1, 0.2]))


def test_rank_infinite_scores_are_ordered():
    ids = np.arange(4)
    scores = np.array([0.0, np.inf, -np.inf, 1.0])
    assert rank_by_score(ids, scores).tolist() == [1, 3, 0, 2]


# --------------------------------------------------------------------------------------
# pivot_window
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,b", [(10, 4), (10, 3), (11, 4), (11, 3), (1, 1), (5, 5)])
def test_window_edges(n, b):
    assert pivot_window(n, b, 0.0) == (0, b)
    assert pivot_window(n, b, 1.0) == (n - b, n)


@pytest.mark.parametrize(
    "n,b,expected",
    [
        # n=10, b=4: centre 0.5*9 = 4.5; start + 1.5 = 4.5 -> start 3
        (10, 4, (3, 7)),
        # n=10, b=3: start + 1 = 4.5 -> start 3.5: starts 3 and 4 tie, lower wins -> 3
        (10, 3, (3, 6)),
        # n=11, b=3: centre 5; start + 1 = 5 -> start 4
        (11, 3, (4, 7)),
        # n=11, b=4: centre 5; start + 1.5 = 5 -> 3.5: tie, lower -> 3
        (11, 4, (3, 7)),
        # n=9, b=2: centre 4; start + 0.5 = 4 -> 3.5: tie, lower -> 3
        (9, 2, (3, 5)),
        # n=2, b=1: centre 0.5; start = 0.5: tie, lower -> 0
        (2, 1, (0, 1)),
    ],
)
def test_window_half(n, b, expected):
    assert pivot_window(n, b, 0.5) == expected


def test_window_hand_non_half_pivots():
    # n=101, b=10, q=0.25: centre 25; start + 4.5 = 25 -> 20.5: tie -> 20
    assert pivot_window(101, 10, 0.25) == (20, 30)
    # n=101, b=10, q=0.9: centre 90 -> start 85.5 -> 85 -> (85, 95), still inside
    assert pivot_window(101, 10, 0.9) == (85, 95)
    # n=101, b=10, q=0.99: centre 99 -> start 94.5 -> 94 would overflow: shifted to (91, 101)
    assert pivot_window(101, 10, 0.99) == (91, 101)
    # n=101, b=10, q=0.01: centre 1 -> start -3.5 -> shifted to 0
    assert pivot_window(101, 10, 0.01) == (0, 10)


def test_window_matches_brute_force():
    rng = np.random.default_rng(11)
    for _ in range(500):
        n = int(rng.integers(1, 60))
        b = int(rng.integers(1, n + 1))
        q = float(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0, rng.random()]))
        assert pivot_window(n, b, q) == ref_window(n, b, q), (n, b, q)


def test_window_decimal_pivot_tie_goes_to_harder_side():
    # n=51, b=1, q=0.55: centre 0.55*50 = 27.5 exactly (on paper); ranks 27 and 28 are equally
    # near, and the documented rule breaks ties towards the harder (lower) rank -> (27, 28)
    assert pivot_window(51, 1, 0.55) == (27, 28)
    # n=51, b=3, q=0.55: start + 1 = 27.5 -> 26.5: tie, lower -> (26, 29)
    assert pivot_window(51, 3, 0.55) == (26, 29)


@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 1.0])
def test_window_budget_at_least_pool_takes_all(q):
    assert pivot_window(7, 7, q) == (0, 7)
    assert pivot_window(7, 50, q) == (0, 7)


@pytest.mark.parametrize("q", [-0.01, 1.01, 2.0, float("nan")])
def test_window_pivot_out_of_range_raises(q):
    with pytest.raises(ValueError):
        pivot_window(10, 3, q)


# --------------------------------------------------------------------------------------
# pivot_visit_order
# --------------------------------------------------------------------------------------
def test_visit_order_hand_example():
    # n=10, b=3, q=0.5 -> window (3, 6); then 2 (before 6: harder first), 6, 1, 7, 0, 8, 9
    assert pivot_visit_order(10, 3, 0.5).tolist() == [3, 4, 5, 2, 6, 1, 7, 0, 8, 9]
    # q=0: window first, then simply the rest in rank order
    assert pivot_visit_order(6, 2, 0.0).tolist() == [0, 1, 2, 3, 4, 5]
    # q=1: window (4, 6), then 3, 2, 1, 0 walking towards the hard end
    assert pivot_visit_order(6, 2, 1.0).tolist() == [4, 5, 3, 2, 1, 0]


def test_visit_order_matches_reference():
    rng = np.random.default_rng(12)
    for _ in range(300):
        n = int(rng.integers(1, 40))
        b = int(rng.integers(1, n + 1))
        q = float(rng.choice([0.0, 0.5, 1.0, rng.random()]))
        got = pivot_visit_order(n, b, q)
        assert sorted(got.tolist()) == list(range(n))
        assert got.tolist() == ref_visit(n, b, q), (n, b, q)


# --------------------------------------------------------------------------------------
# diverse_accept_order
# --------------------------------------------------------------------------------------
def test_diverse_accept_order_hand_example():
    classes = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    # k=1: pass 1 accepts 0 (c0), 4 (c1), 6 (c2); pass k=2: 1 (c0), 5 (c1);
    # k=3: 2 (c0); k=4: 3 (c0); k=5: 7 (c0)
    assert diverse_accept_order(classes, 1).tolist() == [0, 4, 6, 1, 5, 2, 3, 7]
    # k=2: pass 1 accepts 0, 1, 4, 5, 6; k=3: 2; k=4: 3; k=5: 7
    assert diverse_accept_order(classes, 2).tolist() == [0, 1, 4, 5, 6, 2, 3, 7]
    # k larger than any class count: the plain walk order
    assert diverse_accept_order(classes, 8).tolist() == list(range(8))


def test_diverse_accept_order_rejects_k_below_one():
    with pytest.raises(ValueError):
        diverse_accept_order(np.array([0, 1]), 0)


def test_diverse_accept_order_small_inputs():
    assert diverse_accept_order(np.array([], dtype=int), 1).tolist() == []
    assert diverse_accept_order(np.array([3]), 1).tolist() == [0]


def test_diverse_accept_order_matches_reference_walk():
    rng = np.random.default_rng(2024)
    for _ in range(400):
        n = int(rng.integers(1, 50))
        n_classes = int(rng.integers(1, 6))
        # non-contiguous labels, to avoid relying on 0..C-1
        labels = rng.choice([-3, 0, 2, 7, 11, 40], size=n_classes, replace=False)
        classes = rng.choice(labels, size=n)
        k = int(rng.integers(1, 6))
        got = diverse_accept_order(classes, k).tolist()
        assert got == ref_capped_walk(classes.tolist(), k), (classes.tolist(), k)


def test_diverse_accept_order_string_classes():
    classes = np.array(["cat", "cat", "dog", "cat", "bird"])
    # k=1: 0 (cat), 2 (dog), 4 (bird); k=2: 1 (cat); k=3: 3 (cat)
    assert diverse_accept_order(classes, 1).tolist() == [0, 2, 4, 1, 3]


# --------------------------------------------------------------------------------------
# select without classes: exactly the window of the ranking
# --------------------------------------------------------------------------------------
def _pool(n, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.permutation(np.arange(1000, 1000 + n))  # arbitrary ids in storage order
    scores = rng.random(n)
    return ids, scores


@pytest.mark.parametrize("q,window", [(0.0, (0, 4)), (0.5, (3, 7)), (1.0, (6, 10))])
def test_select_is_the_window_of_the_ranking(q, window):
    ids, scores = _pool(10)
    # the ranking, independently: ids sorted by score descending
    ranked_ids = ids[np.argsort(-scores, kind="stable")]
    sel = select(ids, scores, 4, pivot=q)
    start, stop = window
    assert sel.ids.tolist() == ranked_ids[start:stop].tolist()
    assert sel.ranks.tolist() == list(range(start, stop))
    # scores belong to the ids and are non-increasing (rank order)
    by_id = dict(zip(ids.tolist(), scores.tolist()))
    assert sel.scores.tolist() == [by_id[i] for i in sel.ids.tolist()]
    assert np.all(np.diff(sel.scores) <= 0)


def test_select_hand_example():
    ids = np.array([5, 6, 7, 8, 9])
    scores = np.array([0.1, 0.9, 0.5, 0.7, 0.3])
    # ranking by score: 6 (.9), 8 (.7), 7 (.5), 9 (.3), 5 (.1)
    assert select(ids, scores, 2, pivot=0.0).ids.tolist() == [6, 8]  # hardest
    assert select(ids, scores, 2, pivot=1.0).ids.tolist() == [9, 5]  # easiest
    # q=0.5, n=5, b=2: centre 2, start + .5 = 2 -> 1.5: tie, lower -> ranks (1, 3)
    assert select(ids, scores, 2, pivot=0.5).ids.tolist() == [8, 7]
    # q=0.5, b=3: start + 1 = 2 -> ranks (1, 4)
    assert select(ids, scores, 3, pivot=0.5).ids.tolist() == [8, 7, 9]


@pytest.mark.parametrize("q", [0.0, 0.5, 1.0])
def test_select_budget_at_least_pool_takes_all(q):
    ids, scores = _pool(6, seed=3)
    ranked_ids = ids[np.argsort(-scores, kind="stable")].tolist()
    assert select(ids, scores, 6, pivot=q).ids.tolist() == ranked_ids
    assert select(ids, scores, 100, pivot=q).ids.tolist() == ranked_ids


def test_select_single_item_pool():
    for q in (0.0, 0.5, 1.0):
        sel = select(np.array([42]), np.array([0.3]), 1, pivot=q)
        assert sel.ids.tolist() == [42]
        assert sel.ranks.tolist() == [0]


def test_select_rejects_bad_input():
    ids, scores = _pool(5)
    with pytest.raises(ValueError):
        select(ids, scores, 0)
    with pytest.raises(ValueError):
        select(ids, scores, 2, pivot=1.5)
    bad = scores.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError):
        select(ids, bad, 2)


def test_select_ties_do_not_depend_on_storage_order():
    ids = np.arange(20)
    scores = np.repeat([0.9, 0.5, 0.1, 0.0], 5)  # blocks of ties
    rng = np.random.default_rng(4)
    # ranking by (score desc, id asc) is simply ids 0..19; window q=0.5, b=6, n=20:
    # centre 9.5, start + 2.5 = 9.5 -> start 7 -> ids 7..12
    for _ in range(10):
        perm = rng.permutation(20)
        assert select(ids[perm], scores[perm], 6, pivot=0.5).ids.tolist() == list(range(7, 13))


# --------------------------------------------------------------------------------------
# select with class diversity
# --------------------------------------------------------------------------------------
def test_select_diversity_worked_example():
    ids = np.arange(8)
    scores = np.linspace(1.0, 0.3, 8)  # descending: rank = id
    classes = np.array([0, 0, 0, 0, 1, 1, 2, 0])
    # k=1 walk: 0 (c0), 4 (c1), 6 (c2); k=2: 1 (c0) -> budget 4 filled
    sel = select(ids, scores, 4, classes=classes, diversity_k=1)
    assert sel.ids.tolist() == [0, 1, 4, 6]
    assert sel.ranks.tolist() == [0, 1, 4, 6]
    # same pool stored in another order, with classes permuted alongside
    perm = np.array([5, 2, 7, 0, 3, 6, 1, 4])
    sel2 = select(ids[perm], scores[perm], 4, classes=classes[perm], diversity_k=1)
    assert sel2.ids.tolist() == [0, 1, 4, 6]


def test_select_diversity_default_k_is_even_share():
    # thesis example: 2 classes, budget 5 -> k = ceil(5/2) = 3: at most 3 of one class
    ids = np.arange(10)
    scores = np.linspace(1.0, 0.1, 10)  # rank = id
    classes = np.array([0] * 8 + [1] * 2)
    # k=3 walk: 0, 1, 2 (c0, then capped), 8, 9 (c1) -> 5 items, budget filled
    sel = select(ids, scores, 5, classes=classes)
    assert sel.ids.tolist() == [0, 1, 2, 8, 9]
    # explicitly k=3 gives the same; k=2 differs (0, 1, 8, 9, then k=3 adds 2: same set!)
    assert select(ids, scores, 5, classes=classes, diversity_k=3).ids.tolist() == [0, 1, 2, 8, 9]
    # with k=4 (not the default), class 0 gets 4: 0..3, then 8 -> different from the default
    assert select(ids, scores, 5, classes=classes, diversity_k=4).ids.tolist() == [0, 1, 2, 3, 8]


def test_select_diversity_default_k_three_classes():
    # 3 classes present, budget 4 -> k = ceil(4/3) = 2
    ids = np.arange(12)
    scores = -np.arange(12, dtype=float)  # rank = id
    classes = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 2])
    # k=2 walk: 0, 1 (c0), 6, 7 (c1) -> budget 4 filled before class 2 is reached
    assert select(ids, scores, 4, classes=classes).ids.tolist() == [0, 1, 6, 7]
    # k=1 would give 0, 6, 9, then 1
    assert select(ids, scores, 4, classes=classes, diversity_k=1).ids.tolist() == [0, 1, 6, 9]


def test_select_diversity_one_class_is_plain_selection():
    ids, scores = _pool(12, seed=8)
    classes = np.full(12, 5)
    for q in (0.0, 0.5, 1.0):
        assert (
            select(ids, scores, 4, pivot=q, classes=classes).ids.tolist()
            == select(ids, scores, 4, pivot=q).ids.tolist()
        )


def test_select_diversity_with_pivot_one_walks_from_easy_end():
    ids = np.arange(8)
    scores = np.linspace(1.0, 0.3, 8)  # rank = id; easiest = 7
    classes = np.array([2, 1, 1, 0, 0, 0, 0, 0])
    # q=1, budget 3 -> window ranks (5, 8); k given 1.
    # visit order: 5, 6, 7, 4, 3, 2, 1, 0
    # k=1 walk: 5 (c0), 2 (c1), 0 (c2) -> budget filled: ids {0, 2, 5}
    sel = select(ids, scores, 3, pivot=1.0, classes=classes, diversity_k=1)
    assert sel.ids.tolist() == [0, 2, 5]
    # default k = ceil(3/3) = 1: same
    assert select(ids, scores, 3, pivot=1.0, classes=classes).ids.tolist() == [0, 2, 5]
    # k=2: 5, 6 (c0), 2 (c1) -> {2, 5, 6}
    assert select(ids, scores, 3, pivot=1.0, classes=classes, diversity_k=2).ids.tolist() == [2, 5, 6]


def test_select_diversity_with_pivot_half_hand_example():
    ids = np.arange(10)
    scores = -np.arange(10, dtype=float)  # rank = id
    classes = np.array([1, 2, 0, 0, 0, 0, 0, 2, 1, 1])
    # q=0.5, b=3 -> window (3, 6); visit 3, 4, 5, 2, 6, 1, 7, 0, 8, 9
    # k=1: 3 (c0), 1 (c2), 0 (c1) -> {0, 1, 3}
    assert select(ids, scores, 3, pivot=0.5, classes=classes, diversity_k=1).ids.tolist() == [0, 1, 3]


def test_select_matches_reference_on_random_cases():
    rng = np.random.default_rng(31337)
    for case in range(300):
        n = int(rng.integers(1, 40))
        ids = rng.permutation(np.arange(n) * 3 + 100)
        # coarse scores give many ties
        scores = rng.integers(0, 6, size=n) / 5.0 if case % 2 else rng.random(n)
        budget = int(rng.integers(1, n + 3))
        pivot = float(rng.choice([0.0, 0.5, 1.0, rng.random()]))
        use_classes = case % 3 != 0
        classes = rng.integers(0, int(rng.integers(1, 5)), size=n) if use_classes else None
        k = None if (not use_classes or case % 5 == 0) else int(rng.integers(1, 4))
        sel = select(ids, scores, budget, pivot=pivot, classes=classes, diversity_k=k)
        expected = ref_select(
            ids.tolist(), scores.tolist(), budget, pivot, None if classes is None else classes.tolist(), k
        )
        assert sel.ids.tolist() == expected, (case, n, budget, pivot, k)
        assert len(sel.ids) == min(budget, n)
        assert len(set(sel.ids.tolist())) == len(sel.ids)
        # ranks are consistent with the reference ranking
        ranked_ids = [ids[i] for i in ref_ranking(ids.tolist(), scores.tolist())]
        assert [ranked_ids[r] for r in sel.ranks.tolist()] == sel.ids.tolist()
