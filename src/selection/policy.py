"""What a selection chooses from, how many it takes, and the labelled set it leaves.

Pure numpy over ids (thesis 4.1.5, and chapter 1's retroactive selection):
  * ``accumulate``: earlier selections stay labelled; each selection takes
    ``budgets[j]`` new ids from the pool items not labelled yet.
  * ``reselect``: the whole labelled set (base set aside) is re-chosen every
    round by the current model; selection j takes ``sum(budgets[:j + 1])`` ids
    from every pool item outside the base set.
  * ``prune``: round 0 trains on the base set (the whole pool when
    ``selection.base_size`` is 0); each later round keeps ``budgets[j]`` ids of the
    set the round before trained on, chosen by that round's model, and trains on
    them alone. The labelled set only shrinks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.selection.schedule import PRUNE

MODES = ("accumulate", "reselect", PRUNE)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"selection.mode={mode!r}; allowed: {', '.join(MODES)}")


def has_base_round(mode: str, base_size: int) -> bool:
    """Whether round 0 trains on a base set (a random one, or the whole pool when pruning) before any selection."""
    _check_mode(mode)
    return base_size > 0 or mode == PRUNE


def base_set(mode: str, pool_ids: np.ndarray, base_size: int, rng: np.random.Generator) -> np.ndarray:
    """The sorted base set: ``base_size`` ids drawn from ``pool_ids`` with ``rng``; when pruning
    with ``base_size`` 0, every pool id (no draw); else none."""
    _check_mode(mode)
    pool_ids = np.asarray(pool_ids, dtype=np.int64)
    if base_size > 0:
        return np.sort(rng.choice(pool_ids, size=base_size, replace=False))
    return np.sort(pool_ids) if mode == PRUNE else np.zeros(0, dtype=np.int64)


def candidates_and_budget(
    mode: str,
    pool_ids: np.ndarray,
    labelled: np.ndarray,
    base: np.ndarray,
    budgets: Sequence[int],
    selection_index: int,
) -> tuple[np.ndarray, int]:
    """(the sorted ids selection ``selection_index`` may choose from, how many it takes)."""
    _check_mode(mode)
    if mode == PRUNE:
        return np.sort(np.asarray(labelled, dtype=np.int64)), int(budgets[selection_index])
    if mode == "reselect":
        return np.setdiff1d(pool_ids, base), int(sum(budgets[: selection_index + 1]))
    return np.setdiff1d(pool_ids, labelled), int(budgets[selection_index])


def kept_labelled(mode: str, labelled: np.ndarray, base: np.ndarray) -> np.ndarray:
    """What stays labelled when a selection is added: the labelled set (accumulate), the base set
    (reselect), nothing (prune: the selection is the whole next set)."""
    _check_mode(mode)
    if mode == PRUNE:
        return np.zeros(0, dtype=np.int64)
    return np.asarray(labelled if mode == "accumulate" else base, dtype=np.int64)


def labelled_after(mode: str, labelled: np.ndarray, base: np.ndarray, selected: Sequence[int]) -> np.ndarray:
    """The labelled set a round trains on: what stays labelled, then the selection in rank order."""
    return np.concatenate([kept_labelled(mode, labelled, base), np.asarray(selected, dtype=np.int64)])
