"""Significance of differences between groups: t-tests over per-seed AUCs.

Welch's t-test (unequal variances) by default; a paired t-test when asked and both
groups ran the same seeds (a seed fixes the split-independent randomness: base set,
init, shuffles, so run i of one method pairs with run i of the other). The effect size
is Cohen's d: for Welch the mean difference over the pooled standard deviation, for
the paired test the mean of the differences over their standard deviation (d_z).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st


@dataclass
class Comparison:
    p: float
    effect: float                     # Cohen's d (a minus b)
    test: str                         # "welch" | "paired" | "-" (too few runs)
    n_a: int
    n_b: int


def cohens_d(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.size < 2 or b.size < 2:
        return math.nan
    pooled = math.sqrt(((a.size - 1) * a.var(ddof=1) + (b.size - 1) * b.var(ddof=1)) / (a.size + b.size - 2))
    diff = a.mean() - b.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / pooled)


def paired_d(a, b) -> float:
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if d.size < 2:
        return math.nan
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else math.copysign(math.inf, d.mean())
    return float(d.mean() / sd)


def compare(a, seeds_a, b, seeds_b, paired: bool = False) -> Comparison:
    """Two samples of AUCs: the p-value and effect size of their difference."""
    a, b = list(a), list(b)
    if paired and seeds_a and sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a):
        order_b = {s: v for s, v in zip(seeds_b, b)}
        xa = np.asarray([v for _, v in sorted(zip(seeds_a, a), key=lambda t: t[0])])
        xb = np.asarray([order_b[s] for s in sorted(seeds_a)])
        if xa.size < 2:
            return Comparison(math.nan, math.nan, "-", len(a), len(b))
        p = float(_st.ttest_rel(xa, xb).pvalue)
        return Comparison(p, paired_d(xa, xb), "paired", len(a), len(b))
    if len(a) < 2 or len(b) < 2:
        return Comparison(math.nan, math.nan, "-", len(a), len(b))
    p = float(_st.ttest_ind(a, b, equal_var=False).pvalue)
    return Comparison(p, cohens_d(a, b), "welch", len(a), len(b))


def pvalue_matrix(samples: dict[str, tuple[list, list]], paired: bool = False) -> dict[str, dict[str, Comparison]]:
    """All pairs of ``{label: (values, seeds)}``; the diagonal is p = 1, d = 0 (as in thesis 4.3-4.5)."""
    labels = list(samples)
    out: dict[str, dict[str, Comparison]] = {a: {} for a in labels}
    for a in labels:
        va, sa = samples[a]
        for b in labels:
            if a == b:
                out[a][b] = Comparison(1.0, 0.0, "same", len(va), len(va))
                continue
            vb, sb = samples[b]
            out[a][b] = compare(va, sa, vb, sb, paired=paired)
    return out
