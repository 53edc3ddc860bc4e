"""``scorer=badge``: k-means++ seeding on last-layer gradient embeddings (Ash et al. 2020).

The pool pass keeps each candidate's softmax p [C] and penultimate features h [D] (one
eval pass); ``src.selection.badge.badge_select`` chooses the batch from them using the
outer-product structure g = (p - onehot(argmax p)) (x) h, so no N x (D * C) matrix is
ever built: memory is N x (C + D). The D^2 sampling draws from the round's seeded
generator.
"""

from __future__ import annotations

import torch

from src.selection.badge import badge_select
from src.selection.scorers import RowCollector, Scorer
from src.tensors import at_least_float32


def _probs_and_features(outputs) -> dict[str, torch.Tensor]:
    features = at_least_float32(outputs.features())  # the same pass gives the logits
    return {"probs": torch.softmax(at_least_float32(outputs.logits()), dim=1), "features": features}


class BadgeScorer(Scorer):
    uses = frozenset({"features", "logits"})
    joint = True

    def collector(self, n: int) -> RowCollector:
        return RowCollector(n, _probs_and_features)

    def choose(self, pool: RowCollector, labelled, budget: int, generator: torch.Generator) -> torch.Tensor:
        return badge_select(pool.get("probs"), pool.get("features"), budget, generator=generator)
