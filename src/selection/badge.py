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
a = p - onehot is materialised; memory beyond the inputs is O(N), the chosen
centres' rows (budget x (C + D)) and one block of ``chunk_rows`` x waiting centres.

Speed: updating every w_i after every pick costs N x (C + D) per pick and reads the
whole inputs each time (memory-bound: at N = 100,000, C = 1,000 about 0.6 GB per
pick). Instead the picks are drawn exactly by rejection from stale weights: propose
i with probability proportional to the weights w'_i of the last refresh (which are
>= the current ones: a minimum over more centres can only fall), compute its current
weight w_i from the centres added since (a few hundred dot products at most) and
accept with probability w_i / w'_i. Each accepted pick is distributed exactly as D^2
sampling prescribes. The weights are refreshed (all rows against the waiting centres,
one matrix product per block of rows) only when proposals keep failing, i.e. when
the stale weights have become a poor proposal, so on a spread-out pool most centres
are never compared with all N items.

Random stream: every proposal takes two float64 uniforms (u1, u2) =
torch.rand(2, generator): the proposal is the item where the cumulative w' first
exceeds u1 times their total (inverse CDF in pool order), accepted when
u2 * w'_i < w_i. The weights are refreshed after ``max_rejections`` rejections in a
row, or when ``refresh_every`` centres wait (None: no such limit). Chosen items have weight 0; if every
remaining weight is 0 (fewer distinct embeddings than the budget) the lowest unchosen
position is taken.
"""

from __future__ import annotations

import torch


def _sq_dist_block(
    rows: torch.Tensor | slice,
    centres: torch.Tensor,
    probs: torch.Tensor,
    predicted: torch.Tensor,
    features: torch.Tensor,
    sq_norm_g: torch.Tensor,
) -> torch.Tensor:
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
        rows = slice(start, min(start + chunk_rows, n))  # a view: no copy of the rows
        block = _sq_dist_block(rows, centres, *args).min(dim=1).values
        torch.minimum(
            min_sq_dist[start : start + chunk_rows], block, out=min_sq_dist[start : start + chunk_rows]
        )
    min_sq_dist[centres] = 0.0


def _row_sq_norms(matrix: torch.Tensor, chunk_rows: int = 8192) -> torch.Tensor:
    """sum_c m_ic^2 per row in float64, a block of rows at a time (no full-size temporary)."""
    out = torch.empty(matrix.shape[0], dtype=torch.float64)
    for start in range(0, matrix.shape[0], chunk_rows):
        block = matrix[start : start + chunk_rows].double()
        out[start : start + chunk_rows] = torch.einsum("nc,nc->n", block, block)
    return out


def gradient_embedding_sq_norms(
    probs: torch.Tensor, features: torch.Tensor, predicted: torch.Tensor | None = None
) -> torch.Tensor:
    """||g_i||^2 = ||p_i - onehot(yhat_i)||^2 ||h_i||^2 (float64), yhat = argmax p unless given."""
    if predicted is None:
        predicted = probs.argmax(dim=1)
    p_at_pred = probs.gather(1, predicted[:, None]).squeeze(1).double()
    sq_norm_a = _row_sq_norms(probs) - 2.0 * p_at_pred + 1.0
    return sq_norm_a * _row_sq_norms(features)


class _Centres:
    """The chosen centres' rows (p, yhat, h, ||g||^2) copied out once, so a proposal's distances to
    the centres added since the last refresh need no gather from the [N, *] inputs."""

    def __init__(self, budget: int, probs, predicted, features, sq_norm_g):
        self.p = torch.empty(budget, probs.shape[1], dtype=probs.dtype)
        self.h = torch.empty(budget, features.shape[1], dtype=features.dtype)
        self.y = torch.empty(budget, dtype=predicted.dtype)
        self.sq = torch.empty(budget, dtype=torch.float64)
        self.ids: list[int] = []
        self.inputs = (probs, predicted, features, sq_norm_g)

    def add(self, i: int) -> None:
        probs, predicted, features, sq_norm_g = self.inputs
        k = len(self.ids)
        self.p[k], self.h[k], self.y[k], self.sq[k] = probs[i], features[i], predicted[i], sq_norm_g[i]
        self.ids.append(i)

    def min_sq_dist(self, i: int, since: int) -> float:
        """min over centres since..end of ||g_i - g_c||^2 (the same formula as _sq_dist_block)."""
        probs, predicted, features, sq_norm_g = self.inputs
        p_c, y_c = self.p[since : len(self.ids)], self.y[since : len(self.ids)]
        a_dot = p_c @ probs[i] - probs[i, y_c] - p_c[:, predicted[i]] + (y_c == predicted[i])
        h_dot = (self.h[since : len(self.ids)] @ features[i]).double()
        d2 = (self.sq[since : len(self.ids)] + sq_norm_g[i]).addcmul_(a_dot.double(), h_dot, value=-2.0)
        return float(d2.min().clamp_min(0.0))


def badge_select(
    probs: torch.Tensor,
    features: torch.Tensor,
    budget: int,
    *,
    generator: torch.Generator,
    predicted: torch.Tensor | None = None,
    refresh_every: int | None = None,
    max_rejections: int = 16,
    chunk_rows: int = 8192,
) -> torch.Tensor:
    """``budget`` pool positions chosen by BADGE, in the order chosen.

    ``probs`` [N, C] softmax, ``features`` [N, D] penultimate features of the same items,
    ``predicted`` [N] the labels the gradients are taken at (default argmax p, the paper's).
    ``refresh_every`` (None: no limit) / ``max_rejections`` / ``chunk_rows``: see the module docstring.
    """
    if probs.ndim != 2 or features.ndim != 2 or probs.shape[0] != features.shape[0]:
        raise ValueError(
            f"probs {tuple(probs.shape)} and features {tuple(features.shape)} "
            "must be [N, C] and [N, D] for the same N items"
        )
    n = probs.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] (the pool size)")
    if (refresh_every is not None and refresh_every < 1) or max_rejections < 1:
        raise ValueError(f"refresh_every={refresh_every} and max_rejections={max_rejections} must be >= 1")
    if predicted is None:
        predicted = probs.argmax(dim=1)
    sq_norm_g = gradient_embedding_sq_norms(probs, features, predicted)
    centres = _Centres(budget, probs, predicted, features, sq_norm_g)
    centres.add(int(torch.argmax(sq_norm_g)))
    is_centre = torch.zeros(n, dtype=torch.bool)
    is_centre[centres.ids[0]] = True
    stale = torch.full((n,), float("inf"), dtype=torch.float64)  # w' (exact as of the last refresh)
    absorbed, rejections, cumulative, total = 0, 0, None, 0.0  # centres the weights include
    while len(centres.ids) < budget:
        waiting = len(centres.ids) - absorbed
        if cumulative is None or rejections >= max_rejections or (refresh_every and waiting >= refresh_every):
            if waiting:
                _lower_weights(
                    stale,
                    torch.tensor(centres.ids[absorbed:]),
                    (probs, predicted, features, sq_norm_g),
                    chunk_rows,
                )
            absorbed, rejections = len(centres.ids), 0
            cumulative = torch.cumsum(stale, dim=0)
            total = float(cumulative[-1])
        if total <= 0.0:
            pick = int(torch.nonzero(~is_centre)[0])
        else:
            u1, u2 = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
            pick = min(
                int(
                    torch.searchsorted(
                        cumulative, torch.tensor([u1 * total], dtype=torch.float64), right=True
                    )
                ),
                n - 1,
            )
            current = 0.0 if is_centre[pick] else float(stale[pick])
            if current > 0.0 and len(centres.ids) > absorbed:
                current = min(current, centres.min_sq_dist(pick, absorbed))
            if not u2 * float(stale[pick]) < current:
                rejections += 1
                continue
        centres.add(pick)
        is_centre[pick] = True
        rejections = 0
    return torch.tensor(centres.ids, dtype=torch.int64)
