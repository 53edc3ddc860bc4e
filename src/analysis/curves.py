"""Learning-curve summaries: pure numpy, no I/O."""

from __future__ import annotations

import numpy as np


def normalised_auc(x, y) -> float:
    """Trapezoid area under y(x) divided by the x range.

    The result is in the units of y: the curve's mean height over the labelled
    range, so curves of different budgets (different x grids) compare directly.
    A curve with a single point has no range; its AUC is that point's value.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size == 0:
        raise ValueError(f"x and y must be equal-length 1-d arrays, got {x.shape} and {y.shape}")
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = x[-1] - x[0]
    if span == 0:
        return float(y.mean())
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / span


def curve_summary(records) -> dict:
    """AUC (normalised) of every val/test metric over the labelled count, plus its last value.

    ``records`` are round records in round order (``src.records.RoundRecord``).
    """
    if not records:
        return {}
    x = [r.n_labelled for r in records]
    summary = {"al/rounds": len(records), "al/n_labelled": x[-1]}
    for key in sorted({k for r in records for k in r.metrics if k.startswith(("test/", "val/"))}):
        ys = [r.metrics.get(key) for r in records]
        if all(isinstance(y, (int, float)) for y in ys):
            summary[f"auc/{key}"] = normalised_auc(x, ys)
            summary[f"final/{key}"] = ys[-1]
    return summary
