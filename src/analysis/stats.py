"""Significance of differences between groups: t-tests over per-seed AUCs.

Welch's t-test (unequal variances) by default; a paired t-test when asked and both
groups ran the same seeds (a seed fixes the split-independent randomness: base set,
init, shuffles, so run i of one method pairs with run i of the other). The effect size
is Cohen's d: for Welch the mean difference over the pooled standard deviation, for
the paired test the mean of the differences over their standard deviation (d_z).

Every comparison carries 95% confidence intervals: of the mean difference (the t interval
of the test that was run: Welch-Satterthwaite degrees of freedom, or n - 1 for the paired
differences) and of d (normal approximation with the large-sample standard error of
Hedges & Olkin, 1985). A family of comparisons (the unique pairs of a matrix, or every
group against one reference) is corrected with Holm's step-down method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

LEVEL = 0.95  # of every confidence interval


@dataclass
class Comparison:
    p: float
    effect: float  # Cohen's d (a minus b)
    test: str  # "welch" | "paired" | "same" | "-" (too few runs)
    n_a: int
    n_b: int
    p_holm: float = math.nan  # p corrected over its family (set by pvalue_matrix / versus_reference)
    diff: float = math.nan  # mean of a minus mean of b (paired: mean of the differences)
    diff_low: float = math.nan  # 95% CI of diff
    diff_high: float = math.nan
    effect_low: float = math.nan  # 95% CI of d
    effect_high: float = math.nan


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input's order. NaN (no test) is not part of
    the family and stays NaN, so m counts the tests actually made."""
    p = np.asarray(pvalues, np.float64).ravel()
    out = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = tested.size
    if m == 0:
        return out
    order = tested[np.argsort(p[tested], kind="stable")]
    # the i-th smallest (from 0) is scaled by m - i; the running maximum keeps the order of
    # decisions monotone (a larger raw p never gets a smaller adjusted one)
    scaled = (m - np.arange(m)) * p[order]
    out[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return out


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


def _t_interval(centre: float, se: float, df: float) -> tuple[float, float]:
    if not (se > 0 and df > 0):  # no spread seen (or no df): no interval can be given
        return math.nan, math.nan
    half = float(_st.t.ppf(0.5 + LEVEL / 2, df)) * se
    return centre - half, centre + half


def welch_diff_ci(a, b) -> tuple[float, float]:
    """CI of mean(a) - mean(b) without assuming equal variances (Welch-Satterthwaite df)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    denominator = va**2 / (a.size - 1) + vb**2 / (b.size - 1)
    df = (va + vb) ** 2 / denominator if denominator > 0 else math.nan
    return _t_interval(float(a.mean() - b.mean()), math.sqrt(va + vb), df)


def paired_diff_ci(a, b) -> tuple[float, float]:
    """CI of the mean of the paired differences a - b (t with n - 1 df)."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return _t_interval(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size), d.size - 1)


def d_ci(d: float, n_a: int, n_b: int | None = None) -> tuple[float, float]:
    """Normal-approximation CI of Cohen's d. Two samples: SE = sqrt((na+nb)/(na*nb) + d^2/(2(na+nb)))
    (Hedges & Olkin); ``n_b=None`` is a paired d_z over n_a differences: SE = sqrt(1/n + d^2/(2n))."""
    if not math.isfinite(d):
        return math.nan, math.nan
    if n_b is None:
        se = math.sqrt(1 / n_a + d * d / (2 * n_a))
    else:
        se = math.sqrt((n_a + n_b) / (n_a * n_b) + d * d / (2 * (n_a + n_b)))
    z = float(_st.norm.ppf(0.5 + LEVEL / 2))
    return d - z * se, d + z * se


def compare(a, seeds_a, b, seeds_b, paired: bool = False) -> Comparison:
    """Two samples of AUCs: the p-value, effect size and their intervals of the difference a - b."""
    a, b = list(a), list(b)
    if paired and seeds_a and sorted(seeds_a) == sorted(seeds_b) and len(set(seeds_a)) == len(seeds_a):
        order_b = {s: v for s, v in zip(seeds_b, b)}
        xa = np.asarray([v for _, v in sorted(zip(seeds_a, a), key=lambda t: t[0])])
        xb = np.asarray([order_b[s] for s in sorted(seeds_a)])
        if xa.size < 2:
            return Comparison(math.nan, math.nan, "-", len(a), len(b))
        p = float(_st.ttest_rel(xa, xb).pvalue)
        d = paired_d(xa, xb)
        low, high = paired_diff_ci(xa, xb)
        d_low, d_high = d_ci(d, xa.size)
        return Comparison(
            p,
            d,
            "paired",
            len(a),
            len(b),
            diff=float((xa - xb).mean()),
            diff_low=low,
            diff_high=high,
            effect_low=d_low,
            effect_high=d_high,
        )
    if len(a) < 2 or len(b) < 2:
        return Comparison(math.nan, math.nan, "-", len(a), len(b))
    p = float(_st.ttest_ind(a, b, equal_var=False).pvalue)
    d = cohens_d(a, b)
    low, high = welch_diff_ci(a, b)
    d_low, d_high = d_ci(d, len(a), len(b))
    return Comparison(
        p,
        d,
        "welch",
        len(a),
        len(b),
        diff=float(np.mean(a) - np.mean(b)),
        diff_low=low,
        diff_high=high,
        effect_low=d_low,
        effect_high=d_high,
    )


def unique_pairs(labels: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]


def family_size(matrix: dict[str, dict[str, Comparison]]) -> int:
    """How many tests a matrix's Holm correction is over: its unique pairs that have a p-value."""
    return sum(not math.isnan(matrix[a][b].p) for a, b in unique_pairs(list(matrix)))


def pvalue_matrix(
    samples: dict[str, tuple[list, list]], paired: bool = False
) -> dict[str, dict[str, Comparison]]:
    """All pairs of ``{label: (values, seeds)}``; the diagonal is p = 1, d = 0 (as in thesis 4.3-4.5).
    ``p_holm`` is corrected over the unique pairs (each pair is one test, shown twice)."""
    labels = list(samples)
    out: dict[str, dict[str, Comparison]] = {a: {} for a in labels}
    for a in labels:
        va, sa = samples[a]
        for b in labels:
            if a == b:
                out[a][b] = Comparison(1.0, 0.0, "same", len(va), len(va), p_holm=1.0)
                continue
            vb, sb = samples[b]
            out[a][b] = compare(va, sa, vb, sb, paired=paired)
    pairs = unique_pairs(labels)
    for (a, b), p in zip(pairs, holm([out[a][b].p for a, b in pairs])):
        out[a][b].p_holm = out[b][a].p_holm = float(p)
    return out


def versus_reference(
    samples: dict[str, tuple[list, list]], reference: str, paired: bool = False
) -> dict[str, Comparison]:
    """Every other group against ``reference`` (group minus reference), Holm-corrected over these
    k - 1 comparisons only."""
    ref_values, ref_seeds = samples[reference]
    out = {
        label: compare(values, seeds, ref_values, ref_seeds, paired=paired)
        for label, (values, seeds) in samples.items()
        if label != reference
    }
    for c, p in zip(out.values(), holm([c.p for c in out.values()])):
        c.p_holm = float(p)
    return out
