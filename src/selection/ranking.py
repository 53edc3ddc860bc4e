"""From scores to a selection: ranking, pivot window and class diversity.

Pure numpy over one score (and optionally one class) per pool id. Definitions
(thesis 3.1.2 and 4.1.3):

* ranking: highest score first; equal scores are broken by ascending id so the
  order never depends on the pool's storage order.
* pivot q in [0, 1]: the selection is the window of exactly ``budget`` consecutive
  ranks centred on rank q*(N-1); at the edges it is shifted to stay inside [0, N).
  q = 0 takes the hardest items, q = 1 the easiest.
* class diversity with leniency k: walk the candidates and accept an item only
  while its class has fewer than k accepted items; raise k by one and walk again
  until the budget is filled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def rank_by_score(ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Positions of the items sorted by score descending, ties by ascending id."""
    ids = np.asarray(ids)
    scores = np.asarray(scores, dtype=np.float64)
    if ids.shape != scores.shape:
        raise ValueError(f"ids {ids.shape} and scores {scores.shape} differ in shape")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN; a scorer must return finite values")
    return np.lexsort((ids, -scores))


def pivot_window(n: int, budget: int, pivot: float) -> tuple[int, int]:
    """[start, stop) of the ``budget`` ranks centred on rank pivot*(n-1), kept in [0, n)."""
    if not 0.0 <= pivot <= 1.0:
        raise ValueError(f"pivot must be in [0, 1], got {pivot}")
    budget = min(budget, n)
    # rounded so that decimal pivots hitting a half rank (0.55 * 50) tie exactly, not by float noise
    centre = round(pivot * (n - 1), 9)
    # Centre of ranks [s, s+b) is s + (b-1)/2; ties (half ranks) go to the harder side.
    start = math.ceil(centre - (budget - 1) / 2 - 0.5)
    start = min(max(start, 0), n - budget)
    return start, start + budget


def pivot_visit_order(n: int, budget: int, pivot: float) -> np.ndarray:
    """All ranks 0..n-1, the pivot window first, then outwards from it.

    Without diversity the first ``budget`` entries are exactly the window. With
    diversity the walk continues to the nearest ranks outside the window, so a
    class cap fills the budget with items as close to the pivot as possible.
    """
    ranks = np.arange(n)
    start, stop = pivot_window(n, budget, pivot)
    # Distance to the window (0 inside); outside, ties go to the harder (lower) rank.
    dist = np.where(ranks < start, start - ranks, np.where(ranks >= stop, ranks - stop + 1, 0))
    return np.lexsort((ranks, dist))


def diverse_accept_order(classes: np.ndarray, k: int) -> np.ndarray:
    """Order in which a capped walk over ``classes`` accepts the items.

    The walk with cap k accepts every item whose occurrence index within its class
    (0-based, in walk order) is below k; each further pass with cap k+1, k+2, ...
    accepts the next occurrence of every class. So the acceptance order is: sort by
    pass = max(0, occurrence - k + 1), then by walk position. Vectorised, O(N log N).
    """
    if k < 1:
        raise ValueError(f"diversity leniency k must be >= 1, got {k}")
    classes = np.asarray(classes)
    n = classes.shape[0]
    positions = np.arange(n)
    # occurrence index of each item within its class, in walk order
    by_class = np.lexsort((positions, classes))
    sorted_classes = classes[by_class]
    is_first = np.r_[True, sorted_classes[1:] != sorted_classes[:-1]] if n else np.zeros(0, bool)
    first_of_group = np.maximum.accumulate(np.where(is_first, positions, 0)) if n else positions
    occurrence = np.empty(n, dtype=np.int64)
    occurrence[by_class] = positions - first_of_group
    passes = np.maximum(0, occurrence - k + 1)
    return np.lexsort((positions, passes))


@dataclass
class Selection:
    ids: np.ndarray  # selected ids, in rank order (hardest first)
    scores: np.ndarray  # their scores
    ranks: np.ndarray  # their ranks in the full ranking (0 = highest score)


def select(
    ids: np.ndarray,
    scores: np.ndarray,
    budget: int,
    pivot: float = 0.0,
    classes: np.ndarray | None = None,
    diversity_k: int | None = None,
) -> Selection:
    """Pick ``budget`` ids: rank, walk from the pivot window, optionally cap classes.

    ``classes`` switches class diversity on; ``diversity_k`` None means
    ceil(budget / number of classes among the candidates), the even share.
    """
    ids = np.asarray(ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if budget < 1:
        raise ValueError(f"budget must be positive, got {budget}")
    n = ids.shape[0]
    budget = min(budget, n)
    ranking = rank_by_score(ids, scores)  # position -> item, by rank
    visit = pivot_visit_order(n, budget, pivot)  # ranks in visiting order
    if classes is None:
        chosen_ranks = visit[:budget]
    else:
        classes = np.asarray(classes)[ranking][visit]
        if diversity_k is None:
            diversity_k = math.ceil(budget / max(1, np.unique(classes).size))
        chosen_ranks = visit[diverse_accept_order(classes, diversity_k)[:budget]]
    chosen_ranks = np.sort(chosen_ranks)
    items = ranking[chosen_ranks]
    return Selection(ids=ids[items], scores=scores[items], ranks=chosen_ranks)
