"""Core-set selection: greedy k-centre (Sener & Savarese, ICLR 2018, Algorithm 1).

Given pool features x_1..x_N and the labelled items' features as the initial centres,
repeat ``budget`` times: pick the pool item farthest from its nearest centre,
    u = argmax_i min_{c in centres} ||x_i - c||,
and make it a centre. This is the paper's 2-approximation of the k-centre problem;
their robust (MIP) refinement is not included.

Memory: besides the features, one float per pool item (an upper bound of its squared
distance to the nearest centre) and one block of distances at a time, computed
``chunk_rows`` pool rows at a time. Squared Euclidean distances via
||x||^2 + ||c||^2 - 2 x.c (clamped at 0): the argmax of the squared distance is the
argmax of the distance.

Speed, exactly (lazy greedy): updating every item's distance after every pick costs
N x D per pick and reads all features each time. Instead each item keeps an upper
bound (its exact distance to the centres of the last full update; new centres can
only lower it). A pick takes the item with the largest bound, computes its exact
value against the centres added since, and accepts it if no new centre lowers it
(then its value is the maximum of all true values, which are <= their bounds);
otherwise the bound is lowered to the exact value and the next largest is tried.
After ``max_lazy_checks`` lowered bounds in one pick, every bound is brought up to
date with one blocked matrix product. The result is the plain greedy algorithm's.

Ties: the lowest pool position wins (``torch.argmax`` returns the first maximum), so
the choice never depends on anything but the features' order, which the caller
fixes (pool ids ascending). With no labelled items the first centre is drawn
uniformly with ``generator`` (the paper starts from the labelled set; a random first
point is the usual choice without one), so a seeded generator makes the result
reproducible.
"""

from __future__ import annotations

import torch


def _nearest_centre_sq_dist(
    features: torch.Tensor, sq_norms: torch.Tensor, centres: torch.Tensor, chunk_rows: int
) -> torch.Tensor:
    """min over centres of ||x_i - c||^2 for every row of ``features``, ``chunk_rows`` rows at a time."""
    n = features.shape[0]
    out = torch.full((n,), float("inf"), dtype=features.dtype)
    if centres.shape[0] == 0:
        return out
    centre_sq = torch.einsum("nd,nd->n", centres, centres)
    for start in range(0, n, chunk_rows):
        block = features[start : start + chunk_rows]
        d2 = sq_norms[start : start + chunk_rows, None] + centre_sq[None, :] - 2.0 * (block @ centres.T)
        out[start : start + chunk_rows] = d2.min(dim=1).values.clamp_min_(0.0)
    return out


def k_center_greedy(
    features: torch.Tensor,
    labelled_features: torch.Tensor,
    budget: int,
    *,
    generator: torch.Generator | None = None,
    chunk_rows: int = 4096,
    max_lazy_checks: int = 64,
) -> torch.Tensor:
    """Greedy k-centre: ``budget`` pool positions (into ``features`` [N, D]) in the order chosen.

    ``labelled_features`` [L, D] are the initial centres (L may be 0, then ``generator``
    is required for the first centre). ``chunk_rows`` bounds a distance block to
    ``chunk_rows`` x (L or the waiting centres) floats; ``max_lazy_checks``: see the module docstring.
    """
    if features.ndim != 2 or labelled_features.ndim != 2 or labelled_features.shape[1] != features.shape[1]:
        raise ValueError(
            f"features {tuple(features.shape)} and labelled features "
            f"{tuple(labelled_features.shape)} must be [N, D] and [L, D]"
        )
    n = features.shape[0]
    if not 0 < budget <= n:
        raise ValueError(f"budget={budget} must be in [1, {n}] (the pool size)")
    labelled_features = labelled_features.to(features.dtype)
    sq_norms = torch.einsum("nd,nd->n", features, features)  # no N x D temporary
    bound = _nearest_centre_sq_dist(features, sq_norms, labelled_features, chunk_rows)
    chosen: list[int] = []
    absorbed = 0  # chosen centres already included in ``bound``
    while len(chosen) < budget:
        if not chosen and labelled_features.shape[0] == 0:
            if generator is None:
                raise ValueError("core-set without labelled items needs a generator for its first centre")
            pick = int(torch.randint(n, (1,), generator=generator))
        else:
            pick = _lazy_argmax(bound, features, sq_norms, chosen[absorbed:], max_lazy_checks)
            if pick is None:  # many bounds were loose: bring every bound up to date, then retry
                waiting = features[chosen[absorbed:]]
                torch.minimum(
                    bound, _nearest_centre_sq_dist(features, sq_norms, waiting, chunk_rows), out=bound
                )
                bound[chosen] = -1.0
                absorbed = len(chosen)
                continue
        chosen.append(pick)
        bound[pick] = -1.0  # never chosen again, even when duplicates leave every distance at 0
    return torch.tensor(chosen, dtype=torch.int64)


def _lazy_argmax(
    bound: torch.Tensor, features: torch.Tensor, sq_norms: torch.Tensor, waiting: list[int], max_checks: int
) -> int | None:
    """argmax_i min(bound_i, d^2(x_i, waiting centres)), or None after ``max_checks`` loose bounds.

    ``bound`` holds upper bounds of the true values (exact for the centres it includes);
    the item with the largest bound is the answer once its bound is exact, i.e. no waiting
    centre lowers it; otherwise its bound is lowered to its exact value and the next
    largest bound is tried. torch.argmax returns the lowest position among equal bounds,
    so ties still go to the lowest position.
    """
    if not waiting:
        return int(torch.argmax(bound))
    centres = features[waiting]
    centre_sq = sq_norms[waiting]
    for _ in range(max_checks):
        i = int(torch.argmax(bound))
        d2 = float((centre_sq + sq_norms[i] - 2.0 * (centres @ features[i])).clamp_min(0.0).min())
        if d2 >= float(bound[i]):
            return i
        bound[i] = d2
    return None
