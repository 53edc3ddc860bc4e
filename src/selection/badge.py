"""BADGE (Ash et al., ICLR 2020): k-means++ seeding on last-layer gradient embeddings.

The gradient of the cross-entropy with the predicted label yhat_i with respect to the
last Linear layer's weights is the outer product
    g_i = (p_i - onehot(yhat_i)) (x) h_i        (C x D values; a_i := p_i - onehot(yhat_i))
of the softmax p_i and the penultimate features h_i. BADGE chooses the batch by
k-means++ seeding on the g_i: the first centre is the embedding of largest norm (as
the authors' reference implementation does; ties to the lowest position), every
further centre is drawn with probability proportional to its squared distance to the
nearest chosen centre, w_i = min_c ||g_i - c||^2 (D^2 sampling).

No N x (C*D) matrix is ever built. Distances come from the structure of the outer product:
    ||g_i - g_j||^2 = ||a_i||^2 ||h_i||^2 + ||a_j||^2 ||h_j||^2 - 2 (a_i . a_j)(h_i . h_j),
and a_i . a_j = p_i . p_j - p_i[yhat_j] - p_j[yhat_i] + [yhat_i = yhat_j], so not even
a = p - onehot is materialised; memory beyond the inputs is O(N) plus one
``chunk_rows x refresh_every`` block.

Speed: updating every w_i after every pick would read the whole [N, C] and [N, D]
inputs once per pick, which is memory-bound (at N = 100,000, C = 1,000 about 0.6 GB
per pick). Instead the weights are refreshed for ``refresh_every`` new centres at
once (one matrix-matrix product, compute-bound), and in between the picks are drawn
exactly from the current weights by rejection: propose i with probability
proportional to the last refreshed weights w'_i (which are >= the current ones,
since a minimum over more centres can only fall), compute its current weight w_i from
the centres added since (a few dot products) and accept with probability w_i / w'_i.
Each accepted pick is distributed exactly as D^2 sampling prescribes.

Random stream: every proposal takes two float64 uniforms (u1, u2) =
torch.rand(2, generator): the proposal is the item where the cumulative w' first
exceeds u1 times their total (inverse CDF in pool order), accepted when
u2 * w'_i < w_i. The weights are refreshed after ``refresh_every`` accepted picks or
after ``max_rejections`` rejections in a row. Chosen items have weight 0; if every
remaining weight is 0 (fewer distinct embeddings than the budget) the lowest unchosen
position is taken.
"""
from __future__ import annotations

import torch


def _sq_dist_block(rows: torch.Tensor | slice, centres: torch.Tensor, probs: torch.Tensor, predicted: torch.Tensor,
                   features: torch.Tensor, sq_norm_g: torch.Tensor) -> torch.Tensor:
    """||g_i - g_c||^2 for rows (positions or a slice) x centres, [R, M] float64, from p, yhat and h alone:
    dot products in the inputs' dtype, the difference of large terms in float64."""
    p_rows, p_centres = probs[rows], probs[centres]
    y_rows, y_centres = predicted[rows], predicted[centres]
    a_dot = p_rows @ p_centres.T
    a_dot -= p_rows[:, y_centres]
    a_dot -= p_centres[:, y_rows].T
    a_dot += y_rows[:, None] == y_centres[None, :]
    h_dot = (features[rows] @ features[centres].T).double()
    d2 = (sq_norm_g[rows, None] + sq_norm_g[None, centres]).addcmul_(a_dot.double(), h_dot, value=-2.0)
    return d2.clamp_min_(0.0)


def _lower_weights(min_sq_dist: torch.Tensor, centres: torch.Tensor, args: tuple, chunk_rows: int) -> None:
    """min_sq_dist <- min(min_sq_dist, distance to the nearest of ``centres``), chunk_rows rows at a time."""
    n = min_sq_dist.shape[0]
    for start in range(0, n, chunk_rows):
        rows = slice(start, min(start + chunk_rows, n))    # a view: no copy of the rows
        block = _sq_dist_block(rows, centres, *args).min(dim=1).values
        torch.minimum(min_sq_dist[start:start + chunk_rows], block, out=min_sq_dist[start:start + chunk_rows])
    min_sq_dist[centres] = 0.0


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
                 predicted: torch.Tensor | None = None, refresh_every: int = 64, max_rejections: int = 32,
                 chunk_rows: int = 8192) -> torch.Tensor:
    """``budget`` pool positions chosen by BADGE, in the order chosen.

    ``probs`` [N, C] softmax, ``features`` [N, D] penultimate features of the same items,
    ``predicted`` [N] the labels the gradients are taken at (default argmax p, the paper's).
    ``refresh_every`` / ``max_rejections`` / ``chunk_rows``: see the module docstring.
    """
    if probs.ndim != 2 or features.ndim != 2 or probs.shape[0] != features.shape[0]:
        raise ValueError(f"probs {tuple(probs.shape)} and features {tuple(features.shape)} "
                         "must be [N, C] and [N, D] for the same N items")
    n = probs.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] (the pool size)")
    if refresh_every < 1 or max_rejections < 1:
        raise ValueError(f"refresh_every={refresh_every} and max_rejections={max_rejections} must be >= 1")
    if predicted is None:
        predicted = probs.argmax(dim=1)
    sq_norm_g = gradient_embedding_sq_norms(probs, features, predicted)
    args = (probs, predicted, features, sq_norm_g)

    chosen = [int(torch.argmax(sq_norm_g))]
    stale = torch.full((n,), float("inf"), dtype=torch.float64)   # w' (exact as of the last refresh)
    pending = list(chosen)                                          # centres the refresh has not seen
    rejections, cumulative, total = 0, None, 0.0
    while len(chosen) < budget:
        if cumulative is None or len(pending) >= refresh_every or rejections >= max_rejections:
            if pending:
                _lower_weights(stale, torch.tensor(pending), args, chunk_rows)
            pending, rejections = [], 0
            cumulative = torch.cumsum(stale, dim=0)
            total = float(cumulative[-1])
        if total <= 0.0:
            taken = torch.zeros(n, dtype=torch.bool)
            taken[chosen] = True
            pick = int(torch.nonzero(~taken)[0])
        else:
            u1, u2 = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            pick = min(int(torch.searchsorted(cumulative, torch.tensor([u1 * total], dtype=torch.float64),
                                              right=True)), n - 1)
            current = float(stale[pick])
            if pending and current > 0.0:
                current = 0.0 if pick in pending else min(current, float(_sq_dist_block(
                    torch.tensor([pick]), torch.tensor(pending), *args).min()))
            if not u2 * float(stale[pick]) < current:
                rejections += 1
                continue
        chosen.append(pick)
        pending.append(pick)
        rejections = 0
    return torch.tensor(chosen, dtype=torch.int64)
