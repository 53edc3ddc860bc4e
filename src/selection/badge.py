"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

The gradient of the cross-entropy with the predicted label yhat_i with respect to the
last Linear layer's weights is the outer product
    g_i = (p_i - onehot(yhat_i)) (x) h_i        (C x D values; a_i := p_i - onehot(yhat_i))
of the softmax p_i and the penultimate features h_i. BADGE chooses the batch by
k-means++ seeding on the g_i: the first centre is the embedding of largest norm (as
the authors' reference implementation does), every further centre is drawn with
probability proportional to its squared distance to the nearest chosen centre (D^2
sampling).

No N x (C*D) matrix is ever built. Distances come from the structure of the outer product:
    ||g_i - g_j||^2 = ||a_i||^2 ||h_i||^2 + ||a_j||^2 ||h_j||^2 - 2 (a_i . a_j)(h_i . h_j),
and a_i . a_j = p_i . p_j - p_i[yhat_j] - p_j[yhat_i] + [yhat_i = yhat_j], so not even
a = p - onehot is materialised: each new centre costs one [N, C] and one [N, D]
matrix-vector product, memory beyond the inputs is O(N).

Sampling: the ``budget - 1`` uniforms are drawn up front, u = torch.rand(budget - 1,
generator, float64); step k picks the item where the cumulative D^2 weight first
exceeds u_k times the total (inverse CDF, items in pool order). Chosen items have
weight 0 and cannot be drawn again; if every remaining weight is 0 (fewer distinct
embeddings than the budget), the lowest unchosen position is taken. Ties for the
first centre go to the lowest position.
"""
from __future__ import annotations

import torch


def _sq_dist_to(j: int, probs: torch.Tensor, predicted: torch.Tensor, features: torch.Tensor,
                sq_norm_g: torch.Tensor) -> torch.Tensor:
    """||g_i - g_j||^2 for every i, from p, yhat and h alone: dot products in the inputs' dtype,
    the difference of large terms in float64."""
    label = predicted[j]
    a_dot = torch.mv(probs, probs[j])
    a_dot -= probs[:, label]
    a_dot -= torch.index_select(probs[j], 0, predicted)
    a_dot += predicted == label
    h_dot = torch.mv(features, features[j])
    d2 = torch.addcmul(sq_norm_g + sq_norm_g[j], a_dot.double(), h_dot.double(), value=-2.0)
    return d2.clamp_min_(0.0)


def _row_sq_norms(matrix: torch.Tensor, chunk_rows: int = 8192) -> torch.Tensor:
    """sum_c m_ic^2 per row in float64, a block of rows at a time (no full-size temporary)."""
    out = torch.empty(matrix.shape[0], dtype=torch.float64)
    for start in range(0, matrix.shape[0], chunk_rows):
        block = matrix[start:start + chunk_rows].double()
        out[start:start + chunk_rows] = torch.einsum("nc,nc->n", block, block)
    return out


def gradient_embedding_sq_norms(probs: torch.Tensor, features: torch.Tensor,
                                predicted: torch.Tensor | None = None) -> torch.Tensor:
    """||g_i||^2 = ||p_i - onehot(yhat_i)||^2 ||h_i||^2 (float64), yhat = argmax p unless given."""
    if predicted is None:
        predicted = probs.argmax(dim=1)
    p_at_pred = probs.gather(1, predicted[:, None]).squeeze(1).double()
    sq_norm_a = _row_sq_norms(probs) - 2.0 * p_at_pred + 1.0
    return sq_norm_a * _row_sq_norms(features)


def badge_select(probs: torch.Tensor, features: torch.Tensor, budget: int, *, generator: torch.Generator,
                 predicted: torch.Tensor | None = None) -> torch.Tensor:
    """``budget`` pool positions chosen by BADGE, in the order chosen.

    ``probs`` [N, C] softmax, ``features`` [N, D] penultimate features of the same items,
    ``predicted`` [N] the labels the gradients are taken at (default argmax p, the paper's).
    """
    if probs.ndim != 2 or features.ndim != 2 or probs.shape[0] != features.shape[0]:
        raise ValueError(f"probs {tuple(probs.shape)} and features {tuple(features.shape)} "
                         "must be [N, C] and [N, D] for the same N items")
    n = probs.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] (the pool size)")
    if predicted is None:
        predicted = probs.argmax(dim=1)
    sq_norm_g = gradient_embedding_sq_norms(probs, features, predicted)
    uniforms = torch.rand(budget - 1, generator=generator, dtype=torch.float64)

    chosen = torch.empty(budget, dtype=torch.int64)
    chosen[0] = first = int(torch.argmax(sq_norm_g))
    min_sq_dist = _sq_dist_to(first, probs, predicted, features, sq_norm_g)
    min_sq_dist[first] = 0.0
    for step in range(1, budget):
        cumulative = torch.cumsum(min_sq_dist, dim=0)
        total = float(cumulative[-1])
        if total > 0.0:
            target = torch.tensor([float(uniforms[step - 1]) * total], dtype=torch.float64)
            pick = int(torch.searchsorted(cumulative, target, right=True))
            if pick == n:   # rounding put the target at the very end: the last item with weight
                pick = int(torch.nonzero(min_sq_dist).max())
        else:
            taken = torch.zeros(n, dtype=torch.bool)
            taken[chosen[:step]] = True
            pick = int(torch.nonzero(~taken)[0])
        chosen[step] = pick
        torch.minimum(min_sq_dist, _sq_dist_to(pick, probs, predicted, features, sq_norm_g), out=min_sq_dist)
        min_sq_dist[pick] = 0.0    # earlier picks stay at 0: every distance is >= 0
    return chosen
