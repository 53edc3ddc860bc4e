"""Report of one or more runs or sweeps: ``python -m src.report <run or multirun dir>...``.

Reads only the files the runs wrote and produces, in ``--out`` (default
``<first dir>/report``): one figure per metric (learning curves with ±1 std bands,
thesis figure 3.3), the epochs figure, the AUC table, pairwise p-value matrices,
image grids of the hardest and easiest selections, ``curves.csv`` and ``auc.csv``,
``report.md`` and a self-contained ``report.html``. ``--wandb`` also logs the figures
and tables to one summary run in the sweep's W&B group (offline without credentials).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("WANDB_SILENT", "true")

from src.analysis import aggregate as agg  # noqa: E402
from src.analysis import html as pages  # noqa: E402
from src.analysis import plots, stats  # noqa: E402

log = logging.getLogger("src.report")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m src.report", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dirs", nargs="+", help="run directories or multirun (sweep) directories, searched recursively")
    p.add_argument("--out", help="output directory (default: <first dir>/report)")
    p.add_argument("--group-by", nargs="+", metavar="KEY",
                   help="grouping keys, e.g. scorer selection.pivot (default: every config key that differs; "
                        "the seed is always the repetition)")
    p.add_argument("--facet", metavar="KEY", help="one panel per value of this config key (e.g. dataset.name)")
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="only these metrics (default: all present)")
    p.add_argument("--paired", action="store_true", help="paired t-test where two groups ran the same seeds")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level to highlight (default 0.05)")
    p.add_argument("--include-incomplete", action="store_true",
                   help="use unfinished runs' partial curves in the AUC table and tests too")
    p.add_argument("--grid-k", type=int, default=4, help="images per side (hardest, easiest) in a grid row")
    p.add_argument("--grid-rounds", type=int, default=6, help="at most this many rounds per selection grid")
    p.add_argument("--no-grids", action="store_true", help="skip the selection grids (no dataset rebuild)")
    p.add_argument("--format", choices=("png", "svg"), default="png", help="figure format (default png)")
    p.add_argument("--title", help="page title")
    p.add_argument("--wandb", action="store_true",
                   help="log figures and tables to one summary run of the sweep's W&B group")
    return p.parse_args(argv)


# -- selection grids --------------------------------------------------------------------------
class DatasetCache:
    """Rebuilt datasets by their config: runs of one sweep share one build."""

    def __init__(self):
        self._built: dict[str, object] = {}

    def get(self, run: agg.RunData):
        from omegaconf import OmegaConf

        import src.config.resolvers  # noqa: F401  (resolvers)

        cfg = OmegaConf.load(run.path / ".hydra" / "config.yaml")
        key = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=True), sort_keys=True, default=str)
        if key not in self._built:
            import hydra

            dm = hydra.utils.instantiate(cfg.dataset)
            dm.setup()
            self._built[key] = dm.data
        return self._built[key]


def evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    picks = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [items[i] for i in picks]


def selection_rows(run: agg.RunData, data, k: int, max_rounds: int) -> list[dict]:
    """Per scored round: the ``k`` highest- and ``k`` lowest-scored ids among those selected."""
    rows = []
    scored = [r for r in run.records if r.selected_scores and len(r.selected_scores) == len(r.selected_ids)]
    for rec in evenly(scored, max_rounds):
        pairs = sorted(zip(rec.selected_ids, rec.selected_scores), key=lambda t: -t[1])
        hardest = pairs[:k]
        easiest = pairs[max(k, len(pairs) - k):][::-1]

        def cell(item):
            i, s = item
            return data.images[i].numpy(), data.label_name(int(data.labels[i])), float(s)

        rows.append({"round": rec.round, "n_labelled": rec.n_labelled,
                     "hardest": [cell(t) for t in hardest], "easiest": [cell(t) for t in easiest]})
    return rows


def representative(group: agg.Group) -> agg.RunData:
    """The run whose selections a grid shows: finished first, then the lowest seed."""
    return sorted(group.runs, key=lambda r: (not r.finished, str(r.seed), str(r.path)))[0]


def best_cells(groups, metrics, aucs) -> set:
    """(row, column) of the best mean AUC per metric, for the AUC table's highlight."""
    cells = set()
    for j, m in enumerate(metrics):
        means = [(aucs[m][g.label].mean, i) for i, g in enumerate(groups) if aucs[m][g.label].values]
        if means:
            pick = max(means) if agg.higher_is_better(m) else min(means)
            cells.add((pick[1], j + 1))
    return cells


def describe_keys(keys: list[str], shown: int = 5) -> str:
    if not keys:
        return "nothing (all runs form one group)"
    head = ", ".join(keys[:shown])
    return head if len(keys) <= shown else f"{head} and {len(keys) - shown} more keys"


# -- the report ---------------------------------------------------------------------------------
def _rel(path: Path, base: Path) -> str:
    return path.relative_to(base).as_posix()


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def build_report(dirs, out=None, group_by=None, facet=None, metrics=None, paired=False, alpha=0.05,
                 include_incomplete=False, grid_k=4, grid_rounds=6, grids=True, fmt="png", title=None,
                 wandb=False) -> dict:
    """Write the report; returns what it wrote (paths) and the numbers behind it."""
    runs = agg.load_runs(dirs)
    if not runs:
        raise SystemExit(f"error: no runs (rounds.jsonl) found under {', '.join(map(str, dirs))}")
    out = Path(out) if out else Path(dirs[0]) / "report"
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    groups, keys = agg.group_runs(runs, group_by)
    all_metrics = agg.metric_names(runs)
    if metrics:
        missing = [m for m in metrics if m not in all_metrics]
        if missing:
            raise SystemExit(f"error: metric(s) {', '.join(missing)} not in the runs; present: {', '.join(all_metrics)}")
        all_metrics = [m for m in all_metrics if m in metrics]
    notes = []
    incomplete = [r for r in runs if not r.finished]
    if incomplete:
        notes.append(f"{len(incomplete)} run(s) have no summary.json (still running or crashed): their curves "
                     "are drawn up to their last completed round"
                     + ("" if include_incomplete else ", and they are left out of the AUC table and the tests") + ".")

    facets = None
    if facet:
        fkey = facet if any(facet in r.config for r in runs) else agg._group_key(facet, runs)
        values = sorted({agg._hashable(g.runs[0].config.get(fkey)) for g in groups})
        facets = [(json.loads(v) if v != "null" else "none", [g for g in groups
                   if agg._hashable(g.runs[0].config.get(fkey)) == v]) for v in values]
        facets = [(str(name), members) for name, members in facets]

    # figures: every metric, the epochs figure included
    figures = []
    subtitle = textwrap.fill("grouped by " + describe_keys(keys, shown=3), 110)
    for metric in all_metrics:
        path = plots.plot_metric(groups, metric, fig_dir / f"{plots.file_stem(metric)}.{fmt}", subtitle, facets)
        figures.append((plots.metric_title(metric), _rel(path, out)))

    # AUC table and significance over test metrics (thesis tables 4.2-4.5)
    auc_metrics = [m for m in all_metrics if m.startswith("test/")] or [m for m in all_metrics if "/" in m]
    aucs = {m: {g.label: agg.group_auc(g, m, include_incomplete) for g in groups} for m in auc_metrics}
    auc_rows = []
    for g in groups:
        for m in auc_metrics:
            a = aucs[m][g.label]
            auc_rows.append({"group": g.label, "metric": m, "mean": a.mean, "std": a.std, "runs": len(a.values),
                             "excluded_incomplete": a.n_excluded, "values": json.dumps(a.values),
                             "seeds": json.dumps(a.seeds, default=str)})
    auc_table = None
    if auc_metrics:
        auc_table = pages.Table(
            title="AUC (normalised: trapezoid over the labelled count / its range), mean ± std over seeds",
            header=["group"] + auc_metrics,
            rows=[[g.legend] + [f"{pages.fmt(aucs[m][g.label].mean)} ± {pages.fmt(aucs[m][g.label].std)}"
                                for m in auc_metrics] for g in groups],
            note="In the metric's units: the curve's mean height over the labelled range, so runs of different "
                 "budgets compare. Highlighted: the best group per metric (highest accuracy or mAP, lowest loss).",
            significant=best_cells(groups, auc_metrics, aucs))
    pvalue_tables, matrices = [], {}
    test_metrics = [m for m in auc_metrics if not m.startswith("test/ap/")]
    if len(groups) > 1:
        for m in test_metrics:
            samples = {g.label: (aucs[m][g.label].values, aucs[m][g.label].seeds) for g in groups}
            matrices[m] = stats.pvalue_matrix(samples, paired=paired)
            pvalue_tables.append(pages.pvalue_table(m, [g.label for g in groups], matrices[m], alpha, paired))

    # CSVs
    curves_csv, auc_csv, pv_csv = out / "curves.csv", out / "auc.csv", out / "pvalues.csv"
    _write_csv(curves_csv, agg.curves_table(groups, all_metrics), ["group", "metric", "n_labelled", "mean", "std", "runs"])
    _write_csv(auc_csv, auc_rows, ["group", "metric", "mean", "std", "runs", "excluded_incomplete", "values", "seeds"])
    pv_rows = [{"metric": m, "a": a, "b": b, "p": c.p, "cohens_d": c.effect, "test": c.test}
               for m, mat in matrices.items() for a, row in mat.items() for b, c in row.items() if a != b]
    _write_csv(pv_csv, pv_rows, ["metric", "a", "b", "p", "cohens_d", "test"])

    # selection grids
    grid_files = []
    if grids:
        cache = DatasetCache()
        for i, g in enumerate(groups):
            run = representative(g)
            try:
                rows = selection_rows(run, cache.get(run), grid_k, grid_rounds)
            except Exception as err:   # a dataset that cannot be rebuilt here (files absent) must not stop the report
                notes.append(f"selection grid of {g.label} skipped: the dataset could not be rebuilt ({err})")
                continue
            if not rows:
                continue
            path = plots.plot_selection_grid(rows, fig_dir / f"selection_{i:02d}.{fmt}",
                                             f"{g.label}: run {run.path.name} (seed {run.seed})")
            grid_files.append((f"{g.label} — seed {run.seed}", _rel(path, out)))

    run_table = pages.Table(
        title=f"{len(runs)} runs in {len(groups)} groups",
        header=["group", "seed", "status", "rounds", "labelled", "run directory"],
        rows=[[g.label, str(r.seed), r.status, str(len(r.records)),
               str(r.records[-1].n_labelled) if r.records else "0", str(r.path)] for g in groups for r in g.runs])
    content = pages.ReportContent(
        title=title or f"Active-learning report: {', '.join(Path(d).name or str(d) for d in dirs)}",
        intro=[f"Runs grouped by {describe_keys(keys)}; seeds are "
               "repetitions. Every point is a completed active-learning round (train from the baseline "
               "weights on the labelled set, then test)."],
        runs=run_table, figures=figures, auc=auc_table, pvalues=pvalue_tables, grids=grid_files,
        downloads=[("aggregated curves (CSV)", _rel(curves_csv, out)), ("per-group AUCs (CSV)", _rel(auc_csv, out)),
                   ("pairwise tests (CSV)", _rel(pv_csv, out))],
        notes=notes)
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text(pages.render_markdown(content))
    html_path.write_text(pages.render_html(content, out))

    result = {"out": out, "markdown": md_path, "html": html_path, "figures": [out / f for _, f in figures],
              "grids": [out / f for _, f in grid_files], "curves_csv": curves_csv, "auc_csv": auc_csv,
              "pvalues_csv": pv_csv, "groups": groups, "keys": keys, "aucs": aucs, "pvalues": matrices,
              "notes": notes, "wandb_dir": None}
    if wandb:
        from src.analysis.wandb_report import log_report

        result["wandb_dir"] = log_report(runs, content, out, auc_rows, pv_rows)
    return result


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = parse_args(argv)
    try:
        res = build_report(a.dirs, out=a.out, group_by=a.group_by, facet=a.facet, metrics=a.metrics, paired=a.paired,
                           alpha=a.alpha, include_incomplete=a.include_incomplete, grid_k=a.grid_k,
                           grid_rounds=a.grid_rounds, grids=not a.no_grids, fmt=a.format, title=a.title,
                           wandb=a.wandb)
    except (FileNotFoundError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for n in res["notes"]:
        log.info("note: %s", n)
    log.info("%d groups, %d figures, %d selection grids -> %s (report.html, report.md)",
             len(res["groups"]), len(res["figures"]), len(res["grids"]), res["out"])
    if res["wandb_dir"]:
        log.info("W&B summary run: %s", res["wandb_dir"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
