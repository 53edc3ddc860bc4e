"""Statistics a reviewer accepts: Holm-corrected p-values (checked against statsmodels), the
compare-to-a-reference mode with 95% CIs of the difference and of Cohen's d (checked against
scipy and the formulas written out here), and the warning for groups with fewer than 3 seeds,
through the real ``python -m src.report``."""

from __future__ import annotations

import csv
import math
import re

import numpy as np
import pytest
from omegaconf import OmegaConf
from scipy import stats as st
from statsmodels.stats.multitest import multipletests

from src.analysis.stats import (
    compare,
    d_ci,
    holm,
    paired_diff_ci,
    pvalue_matrix,
    versus_reference,
    welch_diff_ci,
)
from tests.conftest import run_module
from tests.test_report import auc_by_hand, make_run

# test/acc_top1 per round (x = 20, 40, 60): entropy and random ran seeds 1-3, margin only 1-2
ACC = {
    ("entropy", 1): [0.1, 0.3, 0.5],
    ("entropy", 2): [0.2, 0.35, 0.45],
    ("entropy", 3): [0.15, 0.3, 0.6],
    ("random", 1): [0.1, 0.2, 0.3],
    ("random", 2): [0.15, 0.2, 0.25],
    ("random", 3): [0.1, 0.25, 0.3],
    ("margin", 1): [0.1, 0.3, 0.4],
    ("margin", 2): [0.2, 0.3, 0.5],
}
Z95 = 1.959963984540054  # the normal's 97.5% quantile


def aucs(scorer: str) -> list[float]:
    return [auc_by_hand(y) for (s, _), y in sorted(ACC.items()) if s == scorer]


@pytest.fixture
def sweep(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    root = tmp_path / "multirun" / "2026-02-02_00-00-00"
    for (scorer, seed), acc in ACC.items():
        make_run(root, cfg, scorer, seed, acc, finished=True)
    return root


def report(*args: str):
    return run_module("src.report", *args, timeout=300)


def table_row(md: str, title: str, first_cell: str) -> str:
    """The Markdown row starting with ``first_cell`` of the table whose bold title starts with ``title``."""
    lines = md.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"**{title}"))
    return next(ln for ln in lines[start:] if ln.startswith(f"| {first_cell} | "))


def read_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def hedges_olkin_ci(d: float, na: int, nb: int) -> tuple[float, float]:
    se = math.sqrt((na + nb) / (na * nb) + d**2 / (2 * (na + nb)))
    return d - Z95 * se, d + Z95 * se


# -- Holm against statsmodels ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "p",
    [
        [0.01, 0.04, 0.03, 0.2],
        [0.029],  # one test: nothing to correct
        [0.01, 0.01, 0.01, 0.5, 0.5],  # ties
        [0.001, 0.02, 0.02, 0.04, 0.3, 0.9, 0.0001],
        [0.4, 0.6, 0.8],  # all capped at 1 after scaling where they exceed it
        list(np.random.default_rng(0).uniform(0, 0.1, 21)),  # the reviewer's 21 pairs
    ],
)
def test_holm_equals_statsmodels(p):
    assert holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)


def test_nan_pvalues_stay_nan_and_leave_the_family():
    p = [0.01, math.nan, 0.04, 0.03, math.nan]
    got = holm(p)
    assert np.isnan(got[[1, 4]]).all()
    # the family is the three tests made: m = 3, not 5
    expected = multipletests([0.01, 0.04, 0.03], method="holm")[1]
    assert got[[0, 2, 3]] == pytest.approx(expected, abs=1e-12)
    assert np.isnan(holm([math.nan, math.nan])).all() and holm([]).size == 0


# -- intervals against scipy and the formulas -----------------------------------------------------
def test_difference_intervals_equal_scipy_and_d_intervals_the_formula():
    a, b = aucs("entropy"), aucs("margin")
    ci = st.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch_diff_ci(a, b) == pytest.approx((ci.low, ci.high))
    ci = st.ttest_rel(a, aucs("random")).confidence_interval(0.95)
    assert paired_diff_ci(a, aucs("random")) == pytest.approx((ci.low, ci.high))
    # d = 1.3 between groups of 4 and 6: SE^2 = 10/24 + 1.69/20 by hand
    se = math.sqrt(10 / 24 + 1.69 / 20)
    assert d_ci(1.3, 4, 6) == pytest.approx((1.3 - Z95 * se, 1.3 + Z95 * se))
    # paired d_z = -0.8 over 5 differences: SE^2 = 1/5 + 0.64/10
    se = math.sqrt(0.2 + 0.064)
    assert d_ci(-0.8, 5) == pytest.approx((-0.8 - Z95 * se, -0.8 + Z95 * se))
    c = compare(a, [1, 2, 3], b, [1, 2])
    assert (c.diff_low, c.diff_high) == pytest.approx(
        tuple(st.ttest_ind(a, b, equal_var=False).confidence_interval())
    )
    assert (c.effect_low, c.effect_high) == pytest.approx(hedges_olkin_ci(c.effect, 3, 2))
    assert math.isnan(compare(a, [1, 2, 3], [0.3], [1]).diff_low)  # one run: no test, no interval


def test_matrix_and_reference_are_corrected_over_their_own_families():
    samples = {s: (aucs(s), [1, 2, 3] if s != "margin" else [1, 2]) for s in ("entropy", "margin", "random")}
    m = pvalue_matrix(samples)
    pairs = [("entropy", "margin"), ("entropy", "random"), ("margin", "random")]
    raw = [st.ttest_ind(aucs(a), aucs(b), equal_var=False).pvalue for a, b in pairs]
    for (a, b), p in zip(pairs, multipletests(raw, method="holm")[1]):
        assert m[a][b].p_holm == pytest.approx(p) and m[b][a].p_holm == pytest.approx(p)
    v = versus_reference(samples, "random")
    assert list(v) == ["entropy", "margin"]
    raw = [st.ttest_ind(aucs(s), aucs("random"), equal_var=False).pvalue for s in v]
    assert [c.p_holm for c in v.values()] == pytest.approx(multipletests(raw, method="holm")[1])


# -- through the CLI --------------------------------------------------------------------------------
def test_reference_mode_csv_equals_scipy_and_warns_of_few_seeds(sweep, tmp_path):
    out = tmp_path / "rep"
    proc = report(
        str(sweep), "--out", str(out), "--no-grids", "--metrics", "test/acc_top1", "--reference", "random"
    )
    assert proc.returncode == 0, proc.stderr
    warning = "warning: groups with fewer than 3 seeds (their tests have little power): margin (n=2)"
    assert warning in proc.stderr.splitlines()
    rows = read_rows(out / "pvalues.csv")
    assert [(r["a"], r["b"]) for r in rows] == [("entropy", "random"), ("margin", "random")]
    ref = aucs("random")
    raw = [st.ttest_ind(aucs(r["a"]), ref, equal_var=False).pvalue for r in rows]
    corrected = multipletests(raw, method="holm")[1]
    for r, p, p_holm in zip(rows, raw, corrected):
        a = aucs(r["a"])
        assert float(r["p"]) == pytest.approx(p) and float(r["p_holm"]) == pytest.approx(p_holm)
        assert r["comparisons"] == "2" and r["test"] == "welch"
        assert (int(r["n_a"]), int(r["n_b"])) == (len(a), 3)
        ci = st.ttest_ind(a, ref, equal_var=False).confidence_interval(0.95)
        assert float(r["mean_diff"]) == pytest.approx(np.mean(a) - np.mean(ref))
        assert (float(r["diff_ci_low"]), float(r["diff_ci_high"])) == pytest.approx((ci.low, ci.high))
        pooled = math.sqrt(((len(a) - 1) * np.var(a, ddof=1) + 2 * np.var(ref, ddof=1)) / (len(a) + 1))
        d = (np.mean(a) - np.mean(ref)) / pooled
        assert float(r["cohens_d"]) == pytest.approx(d)
        assert (float(r["d_ci_low"]), float(r["d_ci_high"])) == pytest.approx(hedges_olkin_ci(d, len(a), 3))
    md = (out / "report.md").read_text()
    assert "> **Warning:** " + warning.removeprefix("warning: ") in md
    assert "Holm-corrected over 2 comparisons" in md and "Against random" in md
    # the corrected p is shown, in bold exactly when below 0.05
    for r in rows:
        cell = f"{float(r['p_holm']):.3f}"
        line = table_row(md, "Against random", r["a"])
        assert (f"**{cell}**" in line) == (float(r["p_holm"]) < 0.05), line
    html = (out / "report.html").read_text()
    assert "<b>Warning:</b> groups with fewer than 3 seeds" in html


def test_paired_reference_mode_uses_the_paired_interval_where_seeds_match(sweep, tmp_path):
    out = tmp_path / "rep"
    proc = report(
        str(sweep),
        "--out",
        str(out),
        "--no-grids",
        "--metrics",
        "test/acc_top1",
        "--reference",
        "random",
        "--paired",
    )
    assert proc.returncode == 0, proc.stderr
    rows = {r["a"]: r for r in read_rows(out / "pvalues.csv")}
    e, ref = rows["entropy"], aucs("random")
    assert e["test"] == "paired" and rows["margin"]["test"] == "welch"  # margin lacks seed 3
    ci = st.ttest_rel(aucs("entropy"), ref).confidence_interval(0.95)
    assert (float(e["diff_ci_low"]), float(e["diff_ci_high"])) == pytest.approx((ci.low, ci.high))
    diffs = np.subtract(aucs("entropy"), ref)
    dz = diffs.mean() / diffs.std(ddof=1)
    se = math.sqrt(1 / 3 + dz**2 / 6)
    assert float(e["cohens_d"]) == pytest.approx(dz)
    assert (float(e["d_ci_low"]), float(e["d_ci_high"])) == pytest.approx((dz - Z95 * se, dz + Z95 * se))
    raw = [
        st.ttest_rel(aucs("entropy"), ref).pvalue,
        st.ttest_ind(aucs("margin"), ref, equal_var=False).pvalue,
    ]
    assert [float(rows[s]["p_holm"]) for s in ("entropy", "margin")] == pytest.approx(
        multipletests(raw, method="holm")[1]
    )


def test_pairwise_csv_has_raw_and_holm_p_and_the_page_shows_the_corrected_one(sweep, tmp_path):
    out = tmp_path / "rep"
    proc = report(str(sweep), "--out", str(out), "--no-grids", "--metrics", "test/acc_top1")
    assert proc.returncode == 0, proc.stderr
    rows = {(r["a"], r["b"]): r for r in read_rows(out / "pvalues.csv")}
    assert len(rows) == 6  # ordered pairs of 3 groups
    pairs = [("entropy", "margin"), ("entropy", "random"), ("margin", "random")]
    raw = [st.ttest_ind(aucs(a), aucs(b), equal_var=False).pvalue for a, b in pairs]
    md = (out / "report.md").read_text()
    assert "Holm-corrected over 3 comparisons" in md
    for (a, b), p, p_holm in zip(pairs, raw, multipletests(raw, method="holm")[1]):
        for key in ((a, b), (b, a)):
            assert float(rows[key]["p"]) == pytest.approx(p) and float(rows[key]["p_holm"]) == pytest.approx(
                p_holm
            )
            assert rows[key]["comparisons"] == "3"
        ci = st.ttest_ind(aucs(a), aucs(b), equal_var=False).confidence_interval(0.95)
        assert (float(rows[a, b]["diff_ci_low"]), float(rows[a, b]["diff_ci_high"])) == pytest.approx(
            (ci.low, ci.high)
        )
        assert float(rows[b, a]["d_ci_low"]) == pytest.approx(-float(rows[a, b]["d_ci_high"]))
        line = table_row(md, "p-values", a)
        cell = re.search(rf"\*?\*?{float(p_holm):.3f} \(d=", line)
        assert cell, line
        assert cell.group(0).startswith("**") == (p_holm < 0.05)


def test_no_warning_when_every_group_has_three_seeds(tmp_path, compose_cfg):
    cfg = compose_cfg("debug=fast")
    for (scorer, seed), acc in ACC.items():
        if scorer != "margin":
            make_run(tmp_path / "sweep", cfg, scorer, seed, acc, finished=True)
    proc = report(str(tmp_path / "sweep"), "--out", str(tmp_path / "rep"), "--no-grids")
    assert proc.returncode == 0, proc.stderr
    assert "fewer than 3 seeds" not in proc.stderr + (tmp_path / "rep" / "report.md").read_text()


def test_an_unknown_reference_is_one_error_line_listing_the_groups(sweep, tmp_path):
    out = tmp_path / "rep"
    proc = report(str(sweep), "--out", str(out), "--no-grids", "--reference", "nope")
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert err == ["error: --reference nope: not a group; groups: entropy, margin, random"], err
    assert not out.exists()


def test_the_matrix_highlights_the_corrected_p_not_the_raw_one():
    from src.analysis.html import pvalue_table
    from src.analysis.stats import Comparison

    # raw p = 0.029 (the reviewer's case) corrected to 0.087 over 3 tests: shown, not highlighted
    def pair(p, p_holm):
        return Comparison(p, 5.8, "welch", 2, 2, p_holm=p_holm)

    same = Comparison(1.0, 0.0, "same", 2, 2, p_holm=1.0)
    labels = ["a", "b", "c"]
    hot, cold = pair(0.001, 0.003), pair(0.029, 0.087)
    matrix = {
        "a": {"a": same, "b": cold, "c": hot},
        "b": {"a": cold, "b": same, "c": pair(0.4, 0.4)},
        "c": {"a": hot, "b": pair(0.4, 0.4), "c": same},
    }
    t = pvalue_table("test/acc_top1", labels, matrix, 0.05, paired=False)
    assert t.rows[0][2].startswith("0.087 ") and t.rows[0][3].startswith("0.003 ")
    assert t.significant == {(0, 3), (2, 1)}
    assert "Holm-corrected over 3 comparisons" in t.note


def dataset_sweep(sweep, cfg, tables: dict) -> None:
    """One finished run per (scorer, seed) of each dataset's accuracy table, in one sweep folder."""
    for dataset, table in tables.items():
        on = OmegaConf.merge(cfg, {"dataset": {"name": dataset}})
        for (scorer, seed), acc in table.items():
            make_run(sweep, on, scorer, seed, acc, finished=True, name=f"{dataset}-{scorer}-s{seed}")


def facet_report(sweep, out, *extra: str):
    """The report of ``sweep`` into ``out``, faceted by dataset, top-1 only, no grids."""
    return report(
        str(sweep),
        "--out",
        str(out),
        "--no-grids",
        "--metrics",
        "test/acc_top1",
        "--facet",
        "dataset.name",
        *extra,
    )


def test_reference_mode_with_a_facet_compares_within_each_panel(tmp_path, compose_cfg):
    """--facet dataset.name --reference random: each dataset's scorers against that dataset's random,
    Holm-corrected within the dataset (the thesis' per-dataset tables), checked against scipy and
    statsmodels."""
    cfg = compose_cfg("debug=fast")
    other = {key: [min(1.0, v + 0.05 * (key[1] - 2)) for v in acc] for key, acc in ACC.items()}
    values = {"v2": ACC, "mixed": other}
    dataset_sweep(tmp_path / "sweep", cfg, values)
    out = tmp_path / "rep"
    proc = facet_report(tmp_path / "sweep", out, "--reference", "random")
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out / "pvalues.csv")
    for dataset, table in values.items():

        def scorer(
            label: str, dataset: str = dataset
        ) -> str:  # the label is the dataset and the scorer, in the report's key order
            parts = label.split(", ")
            assert len(parts) == 2 and dataset in parts, label
            return next(part for part in parts if part != dataset)

        mine = [r for r in rows if dataset in r["b"].split(", ")]
        assert [scorer(r["a"]) for r in mine] == ["entropy", "margin"] and len(mine) == 2
        by_hand = {
            s: [auc_by_hand(y) for (name, _), y in sorted(table.items()) if name == s]
            for s in ("entropy", "margin", "random")
        }
        raw = [st.ttest_ind(by_hand[scorer(r["a"])], by_hand["random"], equal_var=False).pvalue for r in mine]
        for r, p, p_holm in zip(mine, raw, multipletests(raw, method="holm")[1]):
            assert float(r["p"]) == pytest.approx(p) and float(r["p_holm"]) == pytest.approx(p_holm)
            assert r["comparisons"] == "2" and scorer(r["b"]) == "random"
    # a reference missing from a panel is one line naming the panel
    proc = facet_report(tmp_path / "sweep", tmp_path / "rep2", "--reference", "nope")
    assert proc.returncode == 2 and "--reference nope: no group of facet panel" in proc.stderr


def test_with_a_facet_the_matrix_is_one_family_per_panel(tmp_path, compose_cfg):
    """--facet dataset.name without --reference: one matrix per dataset, Holm over its own pairs;
    no test across datasets."""
    cfg = compose_cfg("debug=fast")
    shifted = {"v2": 0.0, "mixed": -0.1}
    dataset_sweep(
        tmp_path / "sweep",
        cfg,
        {d: {key: [v + s for v in acc] for key, acc in ACC.items()} for d, s in shifted.items()},
    )
    out = tmp_path / "rep"
    proc = facet_report(tmp_path / "sweep", out)
    assert proc.returncode == 0, proc.stderr
    rows = read_rows(out / "pvalues.csv")
    assert len(rows) == 2 * 6  # 3 ordered pairs both ways, per dataset
    for r in rows:
        datasets = [{"v2", "mixed"} & set(r[side].split(", ")) for side in ("a", "b")]
        assert len(datasets[0]) == 1 and datasets[0] == datasets[1], r  # never across datasets
        assert r["comparisons"] == "3"
    # the shift leaves every within-dataset difference as it was: the same raw and Holm p in both panels
    by_hand = {s: aucs(s) for s in ("entropy", "margin", "random")}
    pairs = [("entropy", "margin"), ("entropy", "random"), ("margin", "random")]
    raw = [st.ttest_ind(by_hand[a], by_hand[b], equal_var=False).pvalue for a, b in pairs]
    expected = dict(zip(pairs, multipletests(raw, method="holm")[1]))
    for r in rows:
        names = tuple(part for part in r["a"].split(", ") + r["b"].split(", ") if part not in ("v2", "mixed"))
        key = names if names in expected else names[::-1]
        assert float(r["p_holm"]) == pytest.approx(expected[key])
    md = (out / "report.md").read_text()
    assert "test/acc_top1 (dataset.name = v2)" in md and "test/acc_top1 (dataset.name = mixed)" in md


def test_a_numeric_facet_finds_the_reference_in_each_panel():
    """A facet on a number labels its part ``base_size=0`` while the panel is named ``0``: the
    reference of each panel is still its random group (the base_set sweep's report), and a part of
    another key with the same value stays in the label."""
    from src.analysis.aggregate import Group
    from src.analysis.report import reference_groups
    from src.errors import UserError

    labels = {
        "0": ["base_size=0, loss", "base_size=0, random", "base_size=0, entropy"],
        "60": ["base_size=60, loss", "base_size=60, random"],
    }
    facets = [(panel, [Group(label=lab, key=(lab,)) for lab in members]) for panel, members in labels.items()]
    families = reference_groups([g for _, gs in facets for g in gs], facets, "random", "selection.base_size")
    assert [ref for ref, _ in families] == ["base_size=0, random", "base_size=60, random"]
    pivots = [
        (
            "0",
            [
                Group(label=lab, key=(lab,))
                for lab in ["pivot=0, base_size=0, random", "pivot=0, base_size=0, loss"]
            ],
        )
    ]
    with pytest.raises(UserError, match="no group of facet panel 0"):
        reference_groups(pivots[0][1], pivots, "random", "selection.base_size")
    assert reference_groups(pivots[0][1], pivots, "pivot=0, random", "selection.base_size")[0][0] == (
        "pivot=0, base_size=0, random"
    )
