"""Stochastic batch acquisition (Kirsch et al., TMLR 2023): sample the batch instead of top-k.

Any scorer's scores s_i (higher = more worth selecting) become sampling weights with a
temperature beta (the paper's coldness):
    power:     w_i ∝ s_i^beta                 (scores must be >= 0; s_i = 0 is never drawn
                                               while positive-score items remain)
    softmax:   w_i ∝ exp(beta s_i)
    soft-rank: w_i ∝ rank_i^(-beta),  rank 1 = highest score, ties ranked by ascending position
and k items are drawn without replacement, each draw proportional to the weights of
the items still left (successive sampling, as the paper does it), by the Gumbel-top-k
trick: the k largest log w_i + G_i with G_i i.i.d. standard Gumbel. The returned order
is the draw order. beta -> infinity gives the top-k of the scores for all three; beta
= 0 gives a uniform random batch.

Gumbel noise comes from ``generator`` (float64 uniforms), so the same scores and seed
give the same batch. Items of weight 0 (power with s_i = 0) come after every item of
positive weight, in ascending position, when k exceeds the positive ones.
"""

from __future__ import annotations

import numpy as np
import torch

from src.selection import ranking

MODES = ("power", "softmax", "soft_rank")


def log_weights(scores: torch.Tensor, mode: str, beta: float) -> torch.Tensor:
    """Unnormalised log sampling weights (float64) of every item."""
    if mode not in MODES:
        raise ValueError(f"stochastic mode={mode!r} is not known; allowed: {', '.join(MODES)}")
    if beta < 0:
        raise ValueError(f"stochastic beta={beta} must be >= 0")
    scores = scores.double()
    if mode == "power":
        if bool((scores < 0).any()):
            raise ValueError("power sampling needs scores >= 0; use softmax or soft_rank for signed scores")
        # beta * log s, with s = 0 -> -inf also at beta = 0 (0^0 taken as 0: a zero score is never worth a pick)
        return (beta * torch.log(scores.clamp_min(1e-300))).masked_fill_(scores <= 0, -torch.inf)
    if mode == "softmax":
        return beta * scores
    # stable sort of -scores: equal scores keep ascending position, so ranks break ties by position
    order = torch.sort(-scores, stable=True).indices
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return -beta * torch.log(ranks)


def gumbel_keys(log_w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """log w_i + G_i with G_i standard Gumbel (float64 uniforms): ranking by these keys, highest
    first, is successive sampling ∝ w without replacement; weight-0 items get -inf."""
    uniforms = torch.rand(log_w.shape[0], generator=generator, dtype=torch.float64).clamp_(min=1e-300)
    return log_w - torch.log(-torch.log(uniforms))


def sample_without_replacement(log_w: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """k positions drawn successively ∝ exp(log_w) without replacement (Gumbel-top-k), in draw order."""
    n = log_w.shape[0]
    if not 0 < k <= n:
        raise ValueError(f"k={k} must be in [1, {n}] (the number of items)")
    keys = gumbel_keys(log_w, generator)
    positive = torch.isfinite(keys)
    n_positive = int(positive.sum())
    # exact float ties between Gumbel keys have probability ~0
    drawn = torch.topk(keys.masked_fill(~positive, -torch.inf), min(k, n_positive)).indices
    if n_positive >= k:
        return drawn
    return torch.cat([drawn, torch.nonzero(~positive).squeeze(1)[: k - n_positive]])


def stochastic_select(
    scores: torch.Tensor, k: int, *, mode: str, beta: float, generator: torch.Generator
) -> torch.Tensor:
    """The paper's power / softmax / soft-rank acquisition: k positions into ``scores``, in draw order."""
    if scores.ndim != 1:
        raise ValueError(f"expected one score per item, got shape {tuple(scores.shape)}")
    return sample_without_replacement(log_weights(scores, mode, beta), k, generator)


def choose(
    candidates: np.ndarray,
    scores: np.ndarray,
    budget: int,
    pivot: float = 0.0,
    classes: np.ndarray | None = None,
    diversity_k: int | None = None,
    stochastic: dict | None = None,
    generator: torch.Generator | None = None,
) -> tuple[ranking.Selection, np.ndarray]:
    """The selection step, as a round of the loop and ``src.select`` take it: rank the sorted
    ``candidates`` by ``scores`` (with ``stochastic`` = {mode, beta}: by Gumbel-perturbed log-weights
    of them, drawn from ``generator``), walk from the pivot window, cap classes. Returns the
    selection, carrying the chosen items' own scores, and their positions in ``candidates``."""
    rank_by = scores
    if stochastic is not None:
        rank_by = gumbel_keys(log_weights(torch.from_numpy(scores), **stochastic), generator).numpy()
    chosen = ranking.select(
        candidates, rank_by, budget, pivot=pivot, classes=classes, diversity_k=diversity_k
    )
    at = np.searchsorted(candidates, chosen.ids)
    if rank_by is not scores:
        chosen = ranking.Selection(ids=chosen.ids, scores=scores[at], ranks=chosen.ranks)
    return chosen, at
