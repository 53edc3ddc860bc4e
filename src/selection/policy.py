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


def kept_labelled(mode: str, labelled: np.ndarray, base: np.ndarray) -> np.ndarray:
    """What stays labelled when a selection is added: the labelled set (accumulate) or the base set (reselect)."""
    _check_mode(mode)
    return np.asarray(labelled if mode == "accumulate" else base, dtype=np.int64)


def labelled_after(mode: str, labelled: np.ndarray, base: np.ndarray, selected: Sequence[int]) -> np.ndarray:
    """The labelled set a round trains on: what stays labelled, then the selection in rank order."""
    return np.concatenate([kept_labelled(mode, labelled, base), np.asarray(selected, dtype=np.int64)])
