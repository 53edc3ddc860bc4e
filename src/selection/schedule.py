"""How many items each round adds, and the seeds of every random choice. Pure Python."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

# Independent random streams, so that e.g. the random scorer's draw does not shift
# when the base-set draw changes size.
STREAM_BASE, STREAM_RANDOM_SCORES, STREAM_TRAIN, STREAM_SHUFFLE = 1, 2, 3, 4
# a scorer's own draws (joint choice, stochastic acquisition) and its pool pass (MC dropout masks)
STREAM_SCORER, STREAM_POOL_PASS = 5, 6


def derive_seed(seed: int, round_index: int, stream: int) -> int:
    """A 31-bit seed that depends on (seed, round, stream) only, never on history."""
    return int(np.random.SeedSequence([int(seed), int(round_index), int(stream)]).generate_state(1)[0] >> 1)


def plan_budgets(pool_size: int, base_size: int, budget: int | Sequence[int], rounds: int | None) -> list[int]:
    """The budget of every selection, in order.

    A run has ``len(result) + (base_size > 0)`` rounds: round 0 trains on the base set
    alone when there is one. ``rounds=None`` means: until the pool is exhausted (an int
    budget; the last selection takes what is left) or one selection per list entry.
    Raises ValueError naming the key when the plan does not fit the pool.
    """
    if base_size < 0:
        raise ValueError(f"selection.base_size={base_size} must be >= 0")
    if base_size > pool_size:
        raise ValueError(f"selection.base_size={base_size} is larger than the pool ({pool_size} items)")
    available = pool_size - base_size
    if not isinstance(budget, (int, list, tuple)):
        raise ValueError(f"selection.budget={budget!r} must be a positive integer or a list of them")
    budgets = [budget] if isinstance(budget, int) else list(budget)
    if not budgets or any((not isinstance(b, int)) or isinstance(b, bool) or b < 1 for b in budgets):
        raise ValueError(f"selection.budget={budget!r} must be a positive integer or a list of them")
    has_base = base_size > 0
    if rounds is not None and (not isinstance(rounds, int) or rounds < 1):
        raise ValueError(f"selection.rounds={rounds!r} must be a positive integer or null (until the pool is exhausted)")
    n_select = None if rounds is None else rounds - int(has_base)

    if isinstance(budget, int):
        if n_select is None:
            if available == 0:
                if not has_base:
                    raise ValueError("selection: the pool is empty, so there is nothing to select or train on")
                return []
            n_select = math.ceil(available / budget)
            return [budget] * (n_select - 1) + [available - budget * (n_select - 1)]
        plan = [budget] * n_select
    else:
        if n_select is None:
            plan = budgets
        else:
            if len(budgets) < n_select:
                raise ValueError(f"selection.budget lists {len(budgets)} budgets but selection.rounds={rounds} "
                                 f"needs {n_select}")
            plan = budgets[:n_select]
    if sum(plan) > available:
        raise ValueError(f"selection.budget: the rounds select {sum(plan)} items in total but the pool has only "
                         f"{available} left after the base set of {base_size}; lower selection.budget or "
                         "selection.rounds")
    if not plan and not has_base:
        raise ValueError("selection.rounds: the plan has no round to train (no base set and no selection)")
    return plan


HALF_POOL = "half_pool"


def steps_per_epoch(setting: int | str | None, pool_size: int, batch_size: int) -> int | None:
    """The optimizer steps of every training epoch for ``fit.steps_per_epoch``.

    ``None``: one pass over the labelled set (no fixed count); an int: that count;
    ``half_pool``: thesis 4.1.2's "fixed time", half the selection pool in batches,
    rounded up (6000 / 2 / 20 = 150 steps at the thesis' scale).
    """
    if setting == HALF_POOL:
        return max(1, math.ceil(pool_size / 2 / batch_size))
    return setting
