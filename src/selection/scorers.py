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
    """What the pool-scoring pass needs to know about a scorer.

    ``score_batch(logits, labels)`` maps one batch of logits to one score per item.
    ``needs_model`` is False only for ``random``: its scores come from a seeded
    generator, so the pool pass can skip the forward pass entirely unless class
    diversity on predicted labels asks for predictions anyway.
    """

    name: str
    needs_model: bool
    needs_labels: bool
    score_batch: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor] | None


def get_scorer(name: str) -> Scorer:
    if name == "random":
        return Scorer("random", needs_model=False, needs_labels=False, score_batch=None)
    if name == "loss":
        return Scorer("loss", needs_model=True, needs_labels=True,
                      score_batch=lambda logits, labels: cross_entropy_loss(logits, labels))
    if name in UNCERTAINTY:
        fn = UNCERTAINTY[name]
        return Scorer(name, needs_model=True, needs_labels=False,
                      score_batch=lambda logits, labels: fn(torch.softmax(logits.float(), dim=1)))
    raise ValueError(f"scorer.name={name!r} is not a known scorer; allowed: {', '.join(SCORER_NAMES)}")


def random_scores(n: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform scores: ranking by them is a seeded random permutation."""
    return torch.rand(n, generator=generator, dtype=torch.float64)
