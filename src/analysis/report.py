"""The report of one or more runs or sweeps, as a library (``python -m src.report`` is its CLI).

Reads only the files the runs wrote (see ``trust`` for what is trusted in them) and
writes, in ``out``: one figure per metric (learning curves with ±1 std bands, thesis
figure 3.3), the epochs figure, the AUC and final-round tables, pairwise p-value matrices
(over AUCs, or final values where a labelled set shrinks), image grids
of the hardest and easiest selections, the label-quality audit of the top selections
(thesis table 4.1), the best-epoch view of val loss vs val accuracy (thesis 4.2.3),
CSVs behind all of them, ``report.md`` and a self-contained ``report.html``; with
``wandb``, the same figures and tables as one W&B summary run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.analysis import aggregate as agg
from src.analysis import html as pages
from src.analysis import mismatch, plots, selections, stats
from src.analysis.aggregate import Group, RunData
from src.analysis.wandb_report import log_report
from src.config.resolvers import format_value
from src.errors import UserError
from src.records import RoundRecord

CURVE_COLUMNS = ["group", "metric", "n_labelled", "mean", "std", "runs"]
AUC_COLUMNS = ["group", "metric", "mean", "std", "runs", "excluded_incomplete", "values", "seeds"]
FINAL_COLUMNS = [
    "group",
    "metric",
    "n_labelled",
    "mean",
    "std",
    "runs",
    "excluded_incomplete",
    "values",
    "seeds",
]
# p raw and Holm-corrected over `comparisons` tests (the matrix's unique pairs, or the k - 1 comparisons with
# --reference); the CIs are 95%: of the mean difference a - b (t) and of Cohen's d (Hedges & Olkin's SE)
PVALUE_COLUMNS = [
    "metric",
    "a",
    "b",
    "p",
    "p_holm",
    "comparisons",
    "cohens_d",
    "d_ci_low",
    "d_ci_high",
    "mean_diff",
    "diff_ci_low",
    "diff_ci_high",
    "n_a",
    "n_b",
    "test",
    "statistic",
]
# below this many runs a group's tests have little power: the report says so in its header
MIN_SEEDS = 3
# what the t-tests compare per run: its AUC over the labelled count, or its final round's value
STATISTICS = ("auto", "auc", "final")


@dataclass
class ReportOptions:
    out: str | Path | None = None  # default: <first dir>/report
    group_by: list[str] | None = None
    facet: str | None = None
    metrics: list[str] | None = None
    paired: bool = False
    alpha: float = 0.05
    include_incomplete: bool = False
    grid_k: int = 4
    grid_rounds: int = 6
    grids: bool = True  # selection grids and the label audit (rebuild the datasets)
    audit_n: int = 100  # items per group in the label-quality audit (the thesis looked at 100)
    audit_round: int | None = None  # default: each run's first selection by its scorer
    # decoded-image cache of file datasets; None: <out>/cache, reading the runs' own caches where they are
    data_cache: str | Path | None = None
    fmt: str = "png"
    title: str | None = None
    wandb: bool = False
    statistic: str = "auto"  # auc | final | auto: final when some run's labelled set shrinks
    reference: str | None = None  # a group label: compare every other group with it only

    def check(self) -> None:
        for name in ("grid_k", "grid_rounds", "audit_n"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"--{name.replace('_', '-')}={getattr(self, name)}: must be at least 1")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha={self.alpha}: must be between 0 and 1")
        if self.fmt not in ("png", "svg"):
            raise UserError(f"--format={self.fmt}: allowed: png, svg")
        if self.statistic not in STATISTICS:
            raise UserError(f"--statistic={self.statistic}: allowed: {', '.join(STATISTICS)}")


@dataclass
class ReportResult:
    out: Path
    markdown: Path
    html: Path
    figures: list[Path]
    grids: list[Path]
    audit_grids: list[Path]
    mismatch_figures: list[Path]
    csvs: dict[str, Path]
    groups: list[Group]
    keys: list[str]
    aucs: dict
    pvalues: dict
    notes: list[str]
    wandb_dir: str | None = None
    finals: dict = field(default_factory=dict)  # metric -> group label -> final-round values over seeds
    statistic: str = "auc"  # what the p-values compare: auc | final
    grouping: list[str] = field(default_factory=list)  # what the groups differ in, as the user chose it
    reference: dict = field(default_factory=dict)  # with --reference: metric -> group label -> Comparison
    warnings: list[str] = field(default_factory=list)  # shown in the page's header and on the console

    @property
    def all_figures(self) -> list[Path]:
        return self.figures + self.grids + self.audit_grids + self.mismatch_figures


@dataclass
class _Sections:
    """What the report has gathered so far; the pages and the W&B run are made from it."""

    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to out)
    grids: list[tuple[str, str]] = field(default_factory=list)
    audit_grids: list[tuple[str, str]] = field(default_factory=list)
    mismatch_figures: list[tuple[str, str]] = field(default_factory=list)
    tables: dict[str, tuple[list[str], list[dict]]] = field(
        default_factory=dict
    )  # CSV name -> (columns, rows)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    audit_note: str = ""


def check_output_dir(path: Path, option: str) -> None:
    """Refuse, before any work, a folder the report could not write into: an existing file, a
    path under a file, or a place this process cannot write. Writing is tried (a file made and
    removed at once in the nearest existing folder): ``os.access`` says yes to root on a
    read-only mount."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{option} {path}: is a file, not a folder; name a folder")
        existing = next(p for p in (path, *path.parents) if p.exists())
    except OSError as err:
        raise UserError(f"{option} {path}: cannot be looked at ({err.strerror or err})") from None
    if not existing.is_dir():
        raise UserError(f"{option} {path}: {existing} is a file, so no folder can be made under it")
    try:
        fd, probe = tempfile.mkstemp(prefix=".report-write-check-", dir=existing)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{option} {path}: cannot write in {existing} ({err.strerror or err})") from None


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def describe_keys(keys: list[str], shown: int = 5) -> str:
    if not keys:
        return "nothing (all runs form one group)"
    head = ", ".join(keys[:shown])
    return head if len(keys) <= shown else f"{head} and {len(keys) - shown} more keys"


def select_metrics(runs: list[RunData], wanted: list[str] | None) -> list[str]:
    present = agg.metric_names(runs)
    if not wanted:
        return present
    missing = [m for m in wanted if m not in present]
    if missing:
        raise UserError(f"--metrics {' '.join(missing)}: not in the runs; present: {', '.join(present)}")
    return [m for m in present if m in wanted]


def facet_panels(groups: list[Group], runs: list[RunData], facet: str | None):
    """(panel name, groups) per value of the facet key, or None without a facet."""
    if not facet:
        return None
    key = agg.resolve_key(facet, runs)
    values = sorted({agg._hashable(g.runs[0].config.get(key)) for g in groups})
    return [
        (format_value(json.loads(v)), [g for g in groups if agg._hashable(g.runs[0].config.get(key)) == v])
        for v in values
    ]


def incomplete_note(runs: list[RunData], include_incomplete: bool) -> list[str]:
    incomplete = [r for r in runs if not r.finished]
    if not incomplete:
        return []
    return [
        f"{len(incomplete)} run(s) have no summary.json (still running or crashed): their curves are drawn "
        "up to their last completed round"
        + ("" if include_incomplete else ", and they are left out of the AUC table and the tests")
        + "."
    ]


def preflight_datasets(groups: list[Group]) -> None:
    """Check every dataset config the grids would rebuild before any work: one line if one is refused."""
    for g in groups:
        try:
            selections.dataset_config(selections.representative(g))
        except selections.NotRebuildable:
            pass  # reported as a note when the grids are drawn


def resolve_statistic(runs: list[RunData], wanted: str) -> str:
    """``auc`` or ``final``; ``auto`` is ``final`` when some run's labelled count does not grow from
    round to round (``selection.mode=prune``), where an AUC would average the whole set with its subsets."""
    if wanted != "auto":
        return wanted
    return "auc" if all(r.grows for r in runs) else "final"


def build_report(dirs, options: ReportOptions | None = None, **kwargs) -> ReportResult:
    """Write the report of the runs under ``dirs``; ``kwargs`` are ``ReportOptions`` fields."""
    opts = options or ReportOptions(**kwargs)
    opts.check()
    if opts.out:
        check_output_dir(Path(opts.out), "--out")
    if opts.grids and opts.data_cache:
        check_output_dir(Path(opts.data_cache), "--data-cache")
    runs = agg.load_runs(dirs)
    out = Path(opts.out) if opts.out else Path(dirs[0]) / "report"
    if not opts.out:
        check_output_dir(out, "the default report folder (name another with --out)")
    groups, keys = agg.group_runs(runs, opts.group_by)
    grouping = agg.grouping_names(groups, keys, opts.group_by)
    metrics = select_metrics(runs, opts.metrics)
    facets = facet_panels(groups, runs, opts.facet)
    references = reference_groups(groups, facets, opts.reference, opts.facet)
    if opts.grids:
        preflight_datasets(groups)
    epoch_rows = mismatch.mismatch_rows(groups)  # reads the per-epoch logs: a malformed one stops here
    (out / "figures").mkdir(parents=True, exist_ok=True)

    s = _Sections(notes=incomplete_note(runs, opts.include_incomplete))
    subtitle = textwrap.fill("grouped by " + describe_keys(grouping, shown=3), 110)
    for metric in metrics:
        path = plots.plot_metric(
            groups, metric, out / "figures" / f"{plots.file_stem(metric)}.{opts.fmt}", subtitle, facets
        )
        s.figures.append((plots.metric_title(metric), path.relative_to(out).as_posix()))
    s.tables["curves.csv"] = (CURVE_COLUMNS, agg.curves_table(groups, metrics))
    statistic = resolve_statistic(runs, opts.statistic)
    auc_table, aucs = auc_section(groups, metrics, opts, s)
    if not all(r.grows for r in runs) and statistic == "final":
        auc_table = None  # still in auc.csv
        s.notes.append(
            "The labelled count of some runs does not grow from round to round (selection.mode=prune: "
            "round 0 trains on the whole set, later rounds on subsets of it), so an AUC over the "
            "labelled count would average the whole set with its subsets: the page compares each "
            "run's final round instead (the AUCs stay in auc.csv; --statistic auc tests them)."
        )
    final_table, finals = final_section(groups, metrics, opts, s)
    fit_table = fit_health_section(groups, opts, s)
    pvalue_tables, matrices, versus = pvalue_section(
        groups, aucs if statistic == "auc" else finals, statistic, opts, s, references, facets
    )
    if opts.grids:
        image_sections(groups, opts, out, s)
    mismatch_table = mismatch_section(groups, epoch_rows, opts, out, s)
    for name, (columns, rows) in s.tables.items():
        _write_csv(out / name, rows, columns)

    content = page_content(
        dirs,
        runs,
        groups,
        grouping,
        opts,
        s,
        auc_table,
        pvalue_tables,
        mismatch_table,
        final_table,
        fit_table,
    )
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(pages.render_markdown(content))
    html_path.write_text(pages.render_html(content, out))
    result = ReportResult(
        out=out,
        markdown=md_path,
        html=html_path,
        figures=[out / f for _, f in s.figures],
        grids=[out / f for _, f in s.grids],
        audit_grids=[out / f for _, f in s.audit_grids],
        mismatch_figures=[out / f for _, f in s.mismatch_figures],
        csvs={n: out / n for n in s.tables},
        groups=groups,
        keys=keys,
        aucs=aucs,
        pvalues=matrices,
        notes=s.notes,
        finals=finals,
        statistic=statistic,
        grouping=grouping,
        reference=versus,
        warnings=s.warnings,
    )
    if opts.wandb:
        result.wandb_dir = log_report(runs, content, out, s.tables)
    return result


FIT_SHARES = ("early_stopping", "epoch_cap", "step_cap", "fixed_length", "not_recorded", "restored_epoch_0")
FIT_HEALTH_COLUMNS = ["group", "fits", *FIT_SHARES, "median_epochs"]
# what makes a comparison unfair (issue: one arm's fits stop at a cap, another's restore a 3-step model)
FIT_WARNINGS = (
    ("epoch_cap", "ended at the epoch cap"),
    ("step_cap", "ended at the step cap"),
    ("restored_epoch_0", "restored to epoch 0"),
)
FIT_WARN_SHARE = 0.10


def table_metrics(metrics: list[str]) -> list[str]:
    """What the AUC and final-round tables show: the test metrics, else every split's metrics."""
    return [m for m in metrics if m.startswith("test/")] or [m for m in metrics if "/" in m]


def auc_section(groups: list[Group], metrics: list[str], opts: ReportOptions, s: _Sections):
    """The AUC table over test metrics (thesis table 4.2) and the per-group AUCs behind it."""
    auc_metrics = table_metrics(metrics)
    aucs = {m: {g.label: agg.group_auc(g, m, opts.include_incomplete) for g in groups} for m in auc_metrics}
    rows = [
        {
            "group": g.label,
            "metric": m,
            "mean": aucs[m][g.label].mean,
            "std": aucs[m][g.label].std,
            "runs": len(aucs[m][g.label].values),
            "excluded_incomplete": aucs[m][g.label].n_excluded,
            "values": json.dumps(aucs[m][g.label].values),
            "seeds": json.dumps(aucs[m][g.label].seeds, default=str),
        }
        for g in groups
        for m in auc_metrics
    ]
    s.tables["auc.csv"] = (AUC_COLUMNS, rows)
    if not auc_metrics:
        return None, aucs
    table = pages.Table(
        title="AUC (normalised: trapezoid over the labelled count / its range), mean ± std over seeds",
        header=["group"] + auc_metrics,
        rows=[
            [g.legend]
            + [f"{pages.fmt(aucs[m][g.label].mean)} ± {pages.fmt(aucs[m][g.label].std)}" for m in auc_metrics]
            for g in groups
        ],
        note="In the metric's units: the curve's mean height over the labelled range, so runs of different "
        "budgets compare. Highlighted: the best group per metric (highest accuracy or mAP, lowest loss).",
        significant=best_cells(groups, auc_metrics, aucs),
    )
    return table, aucs


def final_section(groups: list[Group], metrics: list[str], opts: ReportOptions, s: _Sections):
    """The final-round table over test metrics: what each group ends with, and the values behind it."""
    final_metrics = table_metrics(metrics)
    finals = {
        m: {g.label: agg.group_final(g, m, opts.include_incomplete) for g in groups} for m in final_metrics
    }
    counts = {
        m: {g.label: agg.final_counts(g, m, opts.include_incomplete) for g in groups} for m in final_metrics
    }
    rows = [
        {
            "group": g.label,
            "metric": m,
            "n_labelled": " ".join(map(str, counts[m][g.label])),
            "mean": finals[m][g.label].mean,
            "std": finals[m][g.label].std,
            "runs": len(finals[m][g.label].values),
            "excluded_incomplete": finals[m][g.label].n_excluded,
            "values": json.dumps(finals[m][g.label].values),
            "seeds": json.dumps(finals[m][g.label].seeds, default=str),
        }
        for g in groups
        for m in final_metrics
    ]
    s.tables["final.csv"] = (FINAL_COLUMNS, rows)
    if not final_metrics:
        return None, finals
    table = pages.Table(
        title="Final round: each run's last completed round, mean ± std over seeds",
        header=["group", "labelled"] + final_metrics,
        rows=[
            [g.legend, ", ".join(map(str, counts[final_metrics[0]][g.label])) or "–"]
            + [
                f"{pages.fmt(finals[m][g.label].mean)} ± {pages.fmt(finals[m][g.label].std)}"
                for m in final_metrics
            ]
            for g in groups
        ],
        note="What each group ends with: the model of the last round, trained on the labelled count shown. "
        "Highlighted: the best group per metric (highest accuracy or mAP, lowest loss).",
        significant=best_cells(groups, final_metrics, finals, first_column=2),
    )
    return table, finals


def fit_health_section(groups: list[Group], opts: ReportOptions, s: _Sections):
    """How each group's fits ended (the rounds' ``stopped_by`` and ``best_epoch``), and a warning in the
    header for a group whose comparison is unfair: more than ``FIT_WARN_SHARE`` of its fits stopped at
    a cap while early stopping was watching, or were restored to their first epoch."""
    rows = []
    for g in groups:
        health = fit_health(
            [r for run in g.runs if run.finished or opts.include_incomplete for r in run.records]
        )
        rows.append({"group": g.label, **health})
    s.tables["fit_health.csv"] = (FIT_HEALTH_COLUMNS, rows)
    bad = [
        f"{row['group']} ({', '.join(f'{row[k]:.0%} {what}' for k, what in FIT_WARNINGS if row[k] > FIT_WARN_SHARE)})"
        for row in rows
        if any(row[k] > FIT_WARN_SHARE for k, _ in FIT_WARNINGS)
    ]
    if bad:
        s.warnings.append(
            f"fits that did not converge in more than {FIT_WARN_SHARE:.0%} of rounds: "
            f"{'; '.join(bad)}. Their curves measure the training regime as much as the "
            "selection (see the fit-health table; raise trainer.max_epochs or "
            "trainer.min_epochs)"
        )
    if not any(row["fits"] for row in rows):
        return None
    return pages.Table(
        title="Fit health: how each round's fit ended, share of all fits of the group",
        header=[
            "group",
            "fits",
            "early stopping",
            "epoch cap",
            "step cap",
            "fixed length",
            "not recorded",
            "restored to epoch 0",
            "median epochs",
        ],
        rows=[
            [row["group"], str(row["fits"])]
            + [f"{row[k]:.0%}" for k in FIT_SHARES]
            + [pages.fmt(row["median_epochs"], 1)]
            for row in rows
        ],
        note="Epoch cap / step cap: the fit ran until trainer.max_epochs / max_steps while early stopping was "
        "watching, so it may not have converged. Restored to epoch 0: the best weights, which were "
        "tested and chose the next items, are those after the first epoch although the fit ran longer. "
        "Fixed length: no early stopping by design (fit.epochs, callbacks=none). Groups compared "
        "with many of either measure their training as much as their selection.",
    )


def fit_health(records: list[RoundRecord]) -> dict:
    """Counts and shares of how ``records``' fits ended (``FIT_SHARES``), from their ``stopped_by`` and
    ``best_epoch``; ``fits`` the number of records, ``median_epochs`` their median length."""
    n = len(records)
    ended = [r.stopped_by for r in records]
    share = (lambda count: count / n) if n else (lambda count: 0.0)
    return {
        "fits": n,
        "early_stopping": share(ended.count("early_stopping")),
        "epoch_cap": share(ended.count("epoch_cap")),
        "step_cap": share(ended.count("step_cap")),
        "fixed_length": share(ended.count("fixed_length")),
        "not_recorded": share(ended.count(None)),
        "restored_epoch_0": share(sum(r.best_epoch == 0 and r.epochs > 1 for r in records)),
        "median_epochs": float(np.median([r.epochs for r in records])) if n else math.nan,
    }


def best_cells(groups: list[Group], metrics: list[str], aucs: dict, first_column: int = 1) -> set:
    """(row, column) of the best mean per metric (AUC or final value), for a table's highlight;
    the metrics' columns start at ``first_column``."""
    cells = set()
    for j, m in enumerate(metrics):
        means = [(aucs[m][g.label].mean, i) for i, g in enumerate(groups) if aucs[m][g.label].values]
        if means:
            pick = max(means) if agg.higher_is_better(m) else min(means)
            cells.add((pick[1], j + first_column))
    return cells


def reference_groups(
    groups: list[Group], facets, reference: str | None, facet: str | None = None
) -> list[tuple[str, list[Group]]]:
    """(reference label, the groups compared with it) per family of tests: all groups, or with a facet
    each panel, whose reference is the panel's group named ``reference`` once the panel's own value
    is left out of the label ("random, v2" in panel v2, "base_size=0, random" in panel 0, for
    --reference random)."""
    if reference is None:
        return []
    if not facets:
        labels = [g.label for g in groups]
        if reference not in labels:
            raise UserError(f"--reference {reference}: not a group; groups: {', '.join(labels)}")
        return [(reference, groups)]
    families = []
    for panel, members in facets:
        found = [
            g for g in members if g.label == reference or _without_panel(g.label, panel, facet) == reference
        ]
        if len(found) != 1:
            names = ", ".join(g.label for g in members)
            raise UserError(
                f"--reference {reference}: {'no' if not found else 'more than one'} group of facet "
                f"panel {panel} is named so; its groups: {names}"
            )
        families.append((found[0].label, members))
    return families


def _without_panel(label: str, panel: str, facet: str | None) -> str:
    """A group's label with the facet's part left out: the part that is the panel's value as the
    labels write it (``v2``; ``base_size=0`` or ``selection.base_size=0`` for --facet
    selection.base_size)."""
    spelled = {panel}
    if facet:
        spelled |= {f"{facet}={panel}", f"{facet.rsplit('.', 1)[-1]}={panel}"}
    parts = label.split(", ")
    at = next((i for i, part in enumerate(parts) if part in spelled), None)
    return ", ".join(parts[:at] + parts[at + 1 :]) if at is not None else label


def few_seeds_warning(groups: list[Group], per_run: dict, metrics: list[str]) -> list[str]:
    """The groups whose tests rest on fewer than ``MIN_SEEDS`` runs (the fewest over the tested metrics)."""
    counts = [(g.label, min(len(per_run[m][g.label].values) for m in metrics)) for g in groups]
    few = [f"{label} (n={n})" for label, n in counts if n < MIN_SEEDS]
    if not few:
        return []
    return [f"groups with fewer than {MIN_SEEDS} seeds (their tests have little power): {', '.join(few)}"]


def _pvalue_row(metric: str, a: str, b: str, c: stats.Comparison, comparisons: int, statistic: str) -> dict:
    return {
        "metric": metric,
        "a": a,
        "b": b,
        "p": c.p,
        "p_holm": c.p_holm,
        "comparisons": comparisons,
        "cohens_d": c.effect,
        "d_ci_low": c.effect_low,
        "d_ci_high": c.effect_high,
        "mean_diff": c.diff,
        "diff_ci_low": c.diff_low,
        "diff_ci_high": c.diff_high,
        "n_a": c.n_a,
        "n_b": c.n_b,
        "test": c.test,
        "statistic": statistic,
    }


def pvalue_section(
    groups: list[Group],
    per_run: dict,
    statistic: str,
    opts: ReportOptions,
    s: _Sections,
    references: list[tuple[str, list[Group]]] | None = None,
    facets=None,
):
    """Pairwise t-tests over a per-seed statistic of every test metric (thesis tables 4.3-4.5): the
    AUCs (``statistic="auc"``) or the final-round values (``"final"``), Holm-corrected per metric over
    the matrix's unique pairs; with ``opts.reference``, every group against that one only, corrected
    over those k - 1 comparisons (``references``: per facet panel, against the panel's reference,
    corrected within the panel). With a facet (``facets``) each panel's groups are one matrix and
    one family: pairs across panels (another dataset) are not tested."""
    tables, matrices, versus, rows = [], {}, {}, []
    tested = [m for m in per_run if not m.startswith("test/ap/")] if len(groups) > 1 else []
    for m in tested:
        if references:
            versus[m] = {}
            for reference, members in references:
                samples = {g.label: (per_run[m][g.label].values, per_run[m][g.label].seeds) for g in members}
                family = stats.versus_reference(samples, reference, paired=opts.paired)
                n = sum(not math.isnan(c.p) for c in family.values())
                rows += [_pvalue_row(m, a, reference, c, n, statistic) for a, c in family.items()]
                tables.append(
                    pages.reference_table(m, reference, family, opts.alpha, opts.paired, statistic=statistic)
                )
                versus[m].update(family)
            continue
        matrices[m] = {}
        for panel, members in facets or [(None, groups)]:  # with a facet: one matrix (one family) per panel
            samples = {g.label: (per_run[m][g.label].values, per_run[m][g.label].seeds) for g in members}
            matrix = stats.pvalue_matrix(samples, paired=opts.paired)
            n = stats.family_size(matrix)
            rows += [
                _pvalue_row(m, a, b, c, n, statistic)
                for a, row in matrix.items()
                for b, c in row.items()
                if a != b
            ]
            tables.append(
                pages.pvalue_table(
                    m if panel is None else f"{m} ({opts.facet} = {panel})",
                    list(samples),
                    matrix,
                    opts.alpha,
                    opts.paired,
                    statistic=statistic,
                )
            )
            matrices[m].update(matrix)
    s.tables["pvalues.csv"] = (PVALUE_COLUMNS, rows)
    if tested:
        s.warnings += few_seeds_warning(groups, per_run, tested)
    return tables, matrices, versus


def image_sections(groups: list[Group], opts: ReportOptions, out: Path, s: _Sections) -> None:
    """Per group, from one representative run: the selection grid and the label-quality audit."""
    # decoded images go where the user said: --data-cache, else under the report's own folder (a
    # run's own cache is read where it holds them, never written)
    cache = selections.DatasetCache(
        Path(opts.data_cache) if opts.data_cache else out / "cache", reuse_runs=not opts.data_cache
    )
    audit: list[dict] = []
    shown: list[int] = []
    with_predictions = False
    for i, g in enumerate(groups):
        run = selections.representative(g)
        try:
            data = cache.get(run)
        except selections.NotRebuildable as why:
            s.notes.append(f"selection grid and audit of {g.label} skipped: {why}")
            continue
        foreign = selections.foreign_rows(run, data)
        if foreign:
            s.notes.append(f"selection grid and audit of {g.label} skipped: {foreign}")
            continue
        rows = selections.selection_rows(run, data, opts.grid_k, opts.grid_rounds)
        if rows:
            legend = selections.grid_legend(rows[0]["selection"])
            path = plots.plot_selection_grid(
                rows,
                out / "figures" / f"selection_{i:02d}.{opts.fmt}",
                f"{g.label}: run {run.path.name} (seed {run.seed})",
                legend,
            )
            s.grids.append((f"{g.label} — seed {run.seed}", path.relative_to(out).as_posix()))
        record = selections.audit_record(run, opts.audit_round)
        if record is None:
            continue
        items = selections.audit_items(record, data, opts.audit_n)
        with_predictions |= any(it.prediction for it in items)
        shown.append(len(items))
        caption = (
            f"{g.label} — seed {run.seed}, round {record.round}: the {len(items)} highest-scored selected"
        )
        path = plots.plot_audit_grid(items, out / "figures" / f"audit_{i:02d}.{opts.fmt}", caption)
        s.audit_grids.append((caption, path.relative_to(out).as_posix()))
        audit += selections.audit_rows(g, run, record, items)
    if audit:
        s.tables["label_audit.csv"] = (selections.AUDIT_COLUMNS, audit)
        s.audit_note = audit_note(opts, with_predictions, shown)


def audit_count(shown: list[int], audit_n: int) -> str:
    """How many items the audit grids show, as the text says it: ``the 20 highest-scored selected
    items``, ``the 12 to 20 ...`` when the groups differ, saying why when fewer than ``--audit-n``."""
    low, high = min(shown), max(shown)
    count = str(low) if low == high else f"{low} to {high}"
    why = "" if low == audit_n else f" (all of a selection smaller than --audit-n={audit_n})"
    return f"the {count} highest-scored selected items{why}"


def audit_note(opts: ReportOptions, with_predictions: bool, shown: list[int] | None = None) -> str:
    which = (
        f"round {opts.audit_round}" if opts.audit_round is not None else "the first selection by its scorer"
    )
    items = audit_count(shown or [opts.audit_n], opts.audit_n)
    note = (
        f"Per group, from one run, {which}: {items}, in rank order with "
        "their true labels, as the thesis' human validation (table 4.1) looked at them. To repeat it, open "
        "label_audit.csv and put 1 in 'disagree' for every item whose label you disagree with or whose image "
        "is unusable; the share per group is the table's number."
    )
    if with_predictions:
        return note + " A red frame marks a prediction that differs from the label."
    return note + (
        " The 'prediction' column is empty: these runs' round records carry no 'selected_predictions'."
    )


def mismatch_section(groups: list[Group], rows: list[dict], opts: ReportOptions, out: Path, s: _Sections):
    """Best epoch by val loss vs by val accuracy per round (thesis 4.2.3), where per-epoch logs exist
    (``rows``: ``mismatch.mismatch_rows(groups)``)."""
    if not rows:
        if mismatch.exists_for([r for g in groups for r in g.runs]):
            s.notes.append(
                "no per-epoch log with both val loss and val accuracy: the loss-vs-accuracy view is left out"
            )
        return None
    s.tables["loss_vs_accuracy.csv"] = (mismatch.MISMATCH_COLUMNS, rows)
    per_group = [(g, [r for r in rows if r["group"] == g.label]) for g in groups]
    key = rows[0]["accuracy_key"]
    path = plots.plot_mismatch(
        per_group, out / "figures" / f"best_epochs_by_loss_and_accuracy.{opts.fmt}", key
    )
    s.mismatch_figures.append(
        ("Best epoch by val loss vs by val accuracy (thesis 4.2.3)", path.relative_to(out).as_posix())
    )
    table_rows = []
    for g, group_rows in per_group:
        m = mismatch.summarise(group_rows)
        table_rows.append(
            [
                g.legend,
                str(m.rounds),
                pages.fmt(m.later_share, 2),
                pages.fmt(m.mean_gap, 2),
                f"{pages.fmt(m.mean_given_up)} ± {pages.fmt(m.std_given_up)}",
            ]
        )
    return pages.Table(
        title="Best epoch by val loss vs by val accuracy, over every round of every run",
        header=["group", "rounds", "accuracy peaks later (share)", "mean epoch gap", f"{key} given up"],
        rows=table_rows,
        note="Epoch gap: the epoch of the highest val accuracy minus the epoch of the lowest val loss (first "
        "of ties); given up: the best val accuracy minus the val accuracy at the loss-best epoch, the "
        "weights early stopping on val loss keeps. From rounds/round_NNN/metrics.csv.",
    )


def page_content(
    dirs,
    runs,
    groups,
    grouping,
    opts: ReportOptions,
    s: _Sections,
    auc_table,
    pvalue_tables,
    mismatch_table,
    final_table=None,
    fit_table=None,
) -> pages.ReportContent:
    run_table = pages.Table(
        title=f"{len(runs)} runs in {len(groups)} groups",
        header=["group", "seed", "status", "rounds", "labelled", "run directory"],
        rows=[
            [
                g.label,
                str(r.seed),
                r.status,
                str(len(r.records)),
                str(r.records[-1].n_labelled) if r.records else "0",
                str(r.path),
            ]
            for g in groups
            for r in g.runs
        ],
    )
    captions = {
        "curves.csv": "aggregated curves (CSV)",
        "auc.csv": "per-group AUCs (CSV)",
        "final.csv": "per-group final-round values (CSV)",
        "pvalues.csv": "tests, each group against the reference (CSV)"
        if opts.reference is not None
        else "pairwise tests (CSV)",
        "label_audit.csv": "label-quality audit, to annotate (CSV)",
        "loss_vs_accuracy.csv": "best epochs by val loss and by val accuracy (CSV)",
        "fit_health.csv": "how each group's fits ended (CSV)",
    }
    return pages.ReportContent(
        title=opts.title or f"Active-learning report: {', '.join(Path(d).name or str(d) for d in dirs)}",
        intro=[
            f"Runs grouped by {describe_keys(grouping)}; seeds are repetitions. Every point is a completed "
            "active-learning round (train from the baseline weights on the labelled set, then test)."
        ],
        runs=run_table,
        figures=s.figures,
        auc=auc_table,
        pvalues=pvalue_tables,
        grids=s.grids,
        downloads=[(captions[n], n) for n in s.tables],
        notes=s.notes,
        warnings=s.warnings,
        audit_grids=s.audit_grids,
        audit_note=s.audit_note,
        mismatch_figures=s.mismatch_figures,
        mismatch=mismatch_table,
        final=final_table,
        fit_health=fit_table,
    )
