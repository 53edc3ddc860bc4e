"""What a selection chooses from, how many it takes, and the labelled set it leaves.

Pure numpy over ids (thesis 4.1.5):
  * ``accumulate``: earlier selections stay labelled; each selection takes
    ``budgets[j]`` new ids from the pool items not labelled yet.
  * ``reselect``: the whole labelled set (base set aside) is re-chosen every
    round by the current model; selection j takes ``sum(budgets[:j + 1])`` ids
    from every pool item outside the base set.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

MODES = ("accumulate", "reselect")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"selection.mode={mode!r}; allowed: {', '.join(MODES)}")


def candidates_and_budget(mode: str, pool_ids: np.ndarray, labelled: np.ndarray, base: np.ndarray,
                          budgets: Sequence[int], selection_index: int) -> tuple[np.ndarray, int]:
    """(the sorted ids selection ``selection_index`` may choose from, how many it takes)."""
    _check_mode(mode)
    if mode == "reselect":
        return np.setdiff1d(pool_ids, base), int(sum(budgets[: selection_index + 1]))
    return np.setdiff1d(pool_ids, labelled), int(budgets[selection_index])


def labelled_after(mode: str, labelled: np.ndarray, base: np.ndarray, selected: Sequence[int]) -> np.ndarray:
    """The labelled set a round trains on: what stays labelled, then the selection in rank order."""
    _check_mode(mode)
    kept = labelled if mode == "accumulate" else base
    return np.concatenate([np.asarray(kept, dtype=np.int64), np.asarray(selected, dtype=np.int64)])
