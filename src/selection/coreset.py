"""Core-set selection: greedy k-centre (Sener & Savarese, ICLR 2018, Algorithm 1).

Given pool features x_1..x_N and the labelled items' features as the initial centres,
repeat ``budget`` times: pick the pool item farthest from its nearest centre,
    u = argmax_i min_{c in centres} ||x_i - c||,
and make it a centre. This is the paper's 2-approximation of the k-centre problem;
their robust (MIP) refinement is not included.

Memory: besides the features, one float per pool item (the distance to the nearest
centre) and one block of distances at a time: the labelled-centre distances are
computed ``chunk_rows`` pool rows at a time, and every later step needs one
matrix-vector product. Squared Euclidean distances via ||x||^2 + ||c||^2 - 2 x.c
(clamped at 0): the argmax of the squared distance is the argmax of the distance.

Ties: the lowest pool position wins (``torch.argmax`` returns the first maximum), so
the choice never depends on anything but the features' order, which the caller
fixes (pool ids ascending). With no labelled items the first centre is drawn
uniformly with ``generator`` (the paper starts from the labelled set; a random first
point is the usual choice without one), so a seeded generator makes the result
reproducible.
"""
from __future__ import annotations

import torch


def _nearest_centre_sq_dist(features: torch.Tensor, sq_norms: torch.Tensor, centres: torch.Tensor,
                            chunk_rows: int) -> torch.Tensor:
    """min over centres of ||x_i - c||^2 for every row of ``features``, ``chunk_rows`` rows at a time."""
    n = features.shape[0]
    out = torch.full((n,), float("inf"), dtype=features.dtype)
    if centres.shape[0] == 0:
        return out
    centre_sq = torch.einsum("nd,nd->n", centres, centres)
    for start in range(0, n, chunk_rows):
        block = features[start:start + chunk_rows]
        d2 = sq_norms[start:start + chunk_rows, None] + centre_sq[None, :] - 2.0 * (block @ centres.T)
        out[start:start + chunk_rows] = d2.min(dim=1).values.clamp_min_(0.0)
    return out


def k_center_greedy(features: torch.Tensor, labelled_features: torch.Tensor, budget: int, *,
                    generator: torch.Generator | None = None, chunk_rows: int = 4096) -> torch.Tensor:
    """Greedy k-centre: ``budget`` pool positions (into ``features`` [N, D]) in the order chosen.

    ``labelled_features`` [L, D] are the initial centres (L may be 0, then ``generator``
    is required for the first centre). ``chunk_rows`` bounds the distance block to
    ``chunk_rows x L`` floats.
    """
    if features.ndim != 2 or labelled_features.ndim != 2 or labelled_features.shape[1] != features.shape[1]:
        raise ValueError(f"features {tuple(features.shape)} and labelled features "
                         f"{tuple(labelled_features.shape)} must be [N, D] and [L, D]")
    n = features.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] (the pool size)")
    labelled_features = labelled_features.to(features.dtype)
    sq_norms = torch.einsum("nd,nd->n", features, features)     # no N x D temporary
    min_sq_dist = _nearest_centre_sq_dist(features, sq_norms, labelled_features, chunk_rows)
    chosen = torch.empty(budget, dtype=torch.int64)
    for step in range(budget):
        if step == 0 and labelled_features.shape[0] == 0:
            if generator is None:
                raise ValueError("core-set without labelled items needs a generator for its first centre")
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            pick = int(torch.argmax(min_sq_dist))
        chosen[step] = pick
        centre = features[pick]
        d2 = torch.addmv(sq_norms + sq_norms[pick], features, centre, alpha=-2.0).clamp_min_(0.0)
        torch.minimum(min_sq_dist, d2, out=min_sq_dist)
        # a chosen item is never chosen again, even when duplicates leave every distance at 0
        # (earlier picks stay at -1: every distance is >= 0)
        min_sq_dist[pick] = -1.0
    return chosen
