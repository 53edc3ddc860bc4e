"""``scorer=coreset``: greedy k-centre on penultimate features (Sener & Savarese 2018).

The pool pass keeps each candidate's penultimate-layer features (the input of the
network's last Linear layer) and, in a second pass, those of the items that stay
labelled (the labelled set when accumulating, the base set when reselecting): they are
the initial centres. The batch is the greedy k-centre choice
(``src.selection.coreset.k_center_greedy``); without any labelled item the first centre
is drawn from the round's seeded generator. Memory: N x D features, nothing N x N.
Detection gives the SSD backbone's feature maps, average-pooled and concatenated.
"""

from __future__ import annotations

import torch

from src.selection.coreset import k_center_greedy
from src.selection.scorers import RowCollector, Scorer
from src.tensors import at_least_float32


def _features(outputs) -> dict[str, torch.Tensor]:
    return {"features": at_least_float32(outputs.features())}


class CoresetScorer(Scorer):
    uses = frozenset({"features"})
    joint = True
    uses_labelled = True

    def collector(self, n: int) -> RowCollector:
        return RowCollector(n, _features)

    def choose(
        self, pool: RowCollector, labelled: RowCollector, budget: int, generator: torch.Generator
    ) -> torch.Tensor:
        features = pool.get("features")
        return k_center_greedy(
            features, labelled.get("features", shape_like=features), budget, generator=generator
        )
