"""Scorers: pure functions from a batch of model outputs to one float per item.

Higher score = more worth selecting. The uncertainty formulas are exactly the
thesis' equations 3.1-3.3 (each normalised to [0, 1]); ``loss`` is the model's own
cross-entropy against the true label ("loss descending"). Nothing here imports
Lightning or touches files, so every formula is tested in milliseconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from src.errors import UserError


def _check_probs(probs: torch.Tensor) -> int:
    if probs.ndim != 2:
        raise ValueError(f"expected probabilities of shape [N, C], got {tuple(probs.shape)}")
    n_classes = probs.shape[1]
    if n_classes < 2:
        raise ValueError(f"uncertainty scores need at least 2 classes, got {n_classes}")
    return n_classes


def least_confidence(probs: torch.Tensor) -> torch.Tensor:
    """(1 - p(y*)) * n / (n - 1)   (thesis eq. 3.1)."""
    n = _check_probs(probs)
    top = probs.max(dim=1).values
    return ((1.0 - top) * (n / (n - 1))).clamp_(0.0, 1.0)


def margin(probs: torch.Tensor) -> torch.Tensor:
    """1 - (p(y1*) - p(y2*))   (thesis eq. 3.2)."""
    _check_probs(probs)
    top2 = probs.topk(2, dim=1).values
    return (1.0 - (top2[:, 0] - top2[:, 1])).clamp_(0.0, 1.0)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """-sum_y p log2 p / log2 n, with 0 log 0 = 0   (thesis eq. 3.3)."""
    n = _check_probs(probs)
    # xlogy gives exactly 0 for p = 0, where p * log(p) would be nan.
    nats = -torch.special.xlogy(probs, probs).sum(dim=1)
    return (nats / math.log(n)).clamp_(0.0, 1.0)


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-item cross-entropy with the true label: the classifier's own training loss."""
    return F.cross_entropy(logits.float(), labels, reduction="none")


UNCERTAINTY = {
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
}
SCORER_NAMES = ("random", "least_confidence", "margin", "entropy", "loss")


@dataclass(frozen=True)
class Scorer:
    """What pool scoring needs to know about a scorer, whatever the task.

    ``needs`` says what an item's score is a function of:
      * ``"probabilities"``: the predicted class distribution; ``of_probabilities``
        maps [N, C] probabilities to N scores (a detector applies it per detection);
      * ``"loss"``: the model's own loss with the true label (each task computes it);
      * ``"nothing"``: ``random``, whose scores come from a seeded generator, so the
        pool pass is skipped unless class diversity asks for predicted classes.
    """

    name: str
    needs: str
    of_probabilities: Callable[[torch.Tensor], torch.Tensor] | None = None

    @property
    def needs_model(self) -> bool:
        return self.needs != "nothing"

    @property
    def needs_labels(self) -> bool:
        return self.needs == "loss"

    def score_logits(self, logits: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """One score per item from a classifier's logits (and true labels for ``loss``)."""
        if self.needs == "loss":
            return cross_entropy_loss(logits, labels)
        if self.needs == "probabilities":
            return self.of_probabilities(torch.softmax(logits.float(), dim=1))
        return None


def get_scorer(name: str) -> Scorer:
    if name == "random":
        return Scorer("random", needs="nothing")
    if name == "loss":
        return Scorer("loss", needs="loss")
    if name in UNCERTAINTY:
        return Scorer(name, needs="probabilities", of_probabilities=UNCERTAINTY[name])
    raise UserError(f"scorer.name={name!r} is not a known scorer; allowed: {', '.join(SCORER_NAMES)}")


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores: ranking by them is a seeded random permutation."""
    return torch.rand(n, generator=generator, dtype=torch.float64)
