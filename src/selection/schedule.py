"""How many items each round adds (or, pruning, keeps), and the seeds of every random choice. Pure Python."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# Independent random streams, so that e.g. the random scorer's draw does not shift
# when the base-set draw changes size.
STREAM_BASE, STREAM_RANDOM_SCORES, STREAM_TRAIN, STREAM_SHUFFLE = 1, 2, 3, 4
# a scorer's own draws (joint choice, stochastic acquisition) and its pool pass (MC dropout masks)
STREAM_SCORER, STREAM_POOL_PASS = 5, 6


def derive_seed(seed: int, round_index: int, stream: int) -> int:
    """A 31-bit seed that depends on (seed, round, stream) only, never on history."""
    return int(np.random.SeedSequence([int(seed), int(round_index), int(stream)]).generate_state(1)[0] >> 1)


def plan_budgets(
    pool_size: int, base_size: int, budget: int | Sequence[int], rounds: int | None
) -> list[int]:
    """The budget of every selection, in order.

    A run has ``len(result) + (base_size > 0)`` rounds: round 0 trains on the base set
    alone when there is one. ``rounds=None`` means: until the pool is exhausted (an int
    budget; the last selection takes what is left) or one selection per list entry.
    Raises ValueError naming the key when the plan does not fit the pool.
    """
    budgets = _check_base_and_rounds(pool_size, base_size, budget, rounds)
    available = pool_size - base_size
    has_base = base_size > 0
    n_select = None if rounds is None else rounds - int(has_base)

    if isinstance(budget, int):
        if n_select is None:
            if available == 0:
                if not has_base:
                    raise ValueError(
                        "selection: the pool is empty, so there is nothing to select or train on"
                    )
                return []
            n_select = math.ceil(available / budget)
            return [budget] * (n_select - 1) + [available - budget * (n_select - 1)]
        plan = [budget] * n_select
    else:
        if n_select is None:
            plan = budgets
        else:
            if len(budgets) < n_select:
                raise ValueError(
                    f"selection.budget lists {len(budgets)} budgets but selection.rounds={rounds} "
                    f"needs {n_select}"
                )
            plan = budgets[:n_select]
    if sum(plan) > available:
        raise ValueError(
            f"selection.budget: the rounds select {sum(plan)} items in total but the pool has only "
            f"{available} left after the base set of {base_size}; lower selection.budget or "
            "selection.rounds"
        )
    if not plan and not has_base:
        raise ValueError("selection.rounds: the plan has no round to train (no base set and no selection)")
    return plan


PRUNE = "prune"


def keep_count(n: int, fraction: float) -> int:
    """How many of ``n`` items a share ``fraction`` keeps: rounded (half to even, Python's ``round``), at least 1.

    The same count as ``python -m src.select mode=keep fraction=...``.
    """
    return max(1, round(fraction * n))


def _check_base_and_rounds(pool_size: int, base_size: int, budget, rounds) -> list[int]:
    """The checks every plan shares; returns the budget as a list."""
    if base_size < 0:
        raise ValueError(f"selection.base_size={base_size} must be >= 0")
    if base_size > pool_size:
        raise ValueError(f"selection.base_size={base_size} is larger than the pool ({pool_size} items)")
    if not isinstance(budget, (int, list, tuple)):
        raise ValueError(f"selection.budget={budget!r} must be a positive integer or a list of them")
    budgets = [budget] if isinstance(budget, int) else list(budget)
    if not budgets or any((not isinstance(b, int)) or isinstance(b, bool) or b < 1 for b in budgets):
        raise ValueError(f"selection.budget={budget!r} must be a positive integer or a list of them")
    if rounds is not None and (not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1):
        raise ValueError(
            f"selection.rounds={rounds!r} must be a positive integer or null (until the pool is exhausted)"
        )
    return budgets


def plan_prune(
    pool_size: int,
    base_size: int,
    budget: int | Sequence[int],
    rounds: int | None,
    fraction: float | None = None,
) -> list[int]:
    """The kept count of every prune round (``selection.mode=prune``), in order.

    Round 0 trains on the base set: ``base_size`` random pool items, or the whole pool
    when ``base_size`` is 0. Every later round keeps a subset of the set the round before
    trained on: ``fraction`` of it (``keep_count``), or ``budget`` items (an int: in every
    prune round; a list: one entry per prune round). A run has ``len(result) + 1`` rounds;
    ``rounds=None`` means one prune round (one per entry of a list budget), ``rounds=1``
    the base round alone. Raises ValueError naming the key when a round would keep more
    than it chooses from.
    """
    budgets = _check_base_and_rounds(pool_size, base_size, budget, rounds)
    labelled = base_size or pool_size
    if labelled == 0:
        raise ValueError("selection: the pool is empty, so there is nothing to train on or prune")
    n_prune = None if rounds is None else rounds - 1
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
            raise ValueError(
                f"selection.fraction={fraction!r} must be a number in (0, 1] (the share of the "
                "labelled set a prune round keeps) or null (selection.budget items)"
            )
        plan = []
        for _ in range(1 if n_prune is None else n_prune):
            plan.append(keep_count(plan[-1] if plan else labelled, fraction))
        return plan
    if isinstance(budget, int):
        plan = [budget] * (1 if n_prune is None else n_prune)
    elif n_prune is None:
        plan = budgets
    else:
        if len(budgets) < n_prune:
            raise ValueError(
                f"selection.budget lists {len(budgets)} kept counts but selection.rounds={rounds} "
                f"needs {n_prune} (one per prune round after the base round)"
            )
        plan = budgets[:n_prune]
    chosen_from = labelled
    for j, keep in enumerate(plan, start=1):
        if keep > chosen_from:
            what = (
                "the whole pool"
                if j == 1 and not base_size
                else ("the base set" if j == 1 else "what it kept")
            )
            raise ValueError(
                f"selection.budget={budget!r}: prune round {j} would keep {keep} items but round "
                f"{j - 1} trains on only {chosen_from} ({what}); a prune round keeps at most the "
                "set it chooses from: lower selection.budget or use selection.fraction"
            )
        chosen_from = keep
    return plan


def plan_selections(
    mode: str,
    pool_size: int,
    base_size: int,
    budget: int | Sequence[int],
    rounds: int | None,
    fraction: float | None = None,
) -> list[int]:
    """The budget of every selection for ``selection.mode``: ``plan_prune`` for prune, else ``plan_budgets``."""
    if mode == PRUNE:
        return plan_prune(pool_size, base_size, budget, rounds, fraction)
    if fraction is not None:
        raise ValueError(
            f"selection.fraction={fraction!r} applies to selection.mode=prune only (the share of "
            f"the labelled set a prune round keeps); selection.mode={mode} adds selection.budget "
            "items: set selection.fraction=null"
        )
    return plan_budgets(pool_size, base_size, budget, rounds)


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
