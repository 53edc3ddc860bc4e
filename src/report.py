"""Report of one or more runs or sweeps: ``python -m src.report <run or multirun dir>...``.

Reads only the files the runs wrote and produces, in ``--out`` (default
``<first dir>/report``): one figure per metric (learning curves with ±1 std bands,
thesis figure 3.3), the epochs figure, the AUC and final-round tables, pairwise p-value
matrices, image grids of the hardest and easiest selections, the label-quality audit of the top
selections (thesis table 4.1), best epochs by val loss vs val accuracy (thesis 4.2.3),
the CSVs behind them, ``report.md`` and a self-contained ``report.html``. ``--wandb``
also logs the figures and tables to one summary run in the sweep's W&B group.

Run directories are data: nothing in them is executed (docs/report.md, "Trust").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

os.environ.setdefault("WANDB_SILENT", "true")  # before anything imports wandb

from src.analysis.report import ReportOptions, build_report  # noqa: E402
from src.errors import UserError  # noqa: E402

log = logging.getLogger("src.report")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        """A bad command line is a user error like any other: one line, exit status 2."""
        print(f"error: {message}; see python -m src.report --help", file=sys.stderr)
        sys.exit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(
        prog="python -m src.report",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "dirs", nargs="+", help="run directories or multirun (sweep) directories, searched recursively"
    )
    p.add_argument("--out", help="output directory (default: <first dir>/report)")
    p.add_argument(
        "--group-by",
        nargs="+",
        metavar="KEY",
        help="grouping keys, e.g. scorer selection.pivot (default: every config key that differs; "
        "the seed is always the repetition)",
    )
    p.add_argument(
        "--facet", metavar="KEY", help="one panel per value of this config key (e.g. dataset.name)"
    )
    p.add_argument("--metrics", nargs="+", metavar="METRIC", help="only these metrics (default: all present)")
    p.add_argument("--paired", action="store_true", help="paired t-test where two groups ran the same seeds")
    p.add_argument(
        "--statistic",
        choices=("auto", "auc", "final"),
        default="auto",
        help="what the t-tests compare per run: its AUC over the labelled count or its final round's "
        "value (default auto: final when some run's labelled set shrinks, selection.mode=prune)",
    )
    p.add_argument(
        "--reference",
        metavar="GROUP",
        help="compare every other group with this group only (its label as the report names it, e.g. "
        "random), Holm-corrected over those comparisons, with CIs of the differences "
        "(default: every pair of groups)",
    )
    p.add_argument(
        "--alpha",
        type=float,
        default=0.05,
        help="significance level to highlight, applied to the Holm-corrected p (default 0.05)",
    )
    p.add_argument(
        "--include-incomplete",
        action="store_true",
        help="use unfinished runs' partial curves in the AUC table and tests too",
    )
    p.add_argument("--grid-k", type=int, default=4, help="images per side (hardest, easiest) in a grid row")
    p.add_argument("--grid-rounds", type=int, default=6, help="at most this many rounds per selection grid")
    p.add_argument(
        "--audit-n",
        type=int,
        default=100,
        help="items per group in the label-quality audit (default 100, as thesis table 4.1)",
    )
    p.add_argument(
        "--audit-round",
        type=int,
        metavar="R",
        help="round to audit (default: each run's first selection by its scorer)",
    )
    p.add_argument(
        "--no-grids",
        action="store_true",
        help="no selection grids and no label audit: the runs' datasets are not rebuilt",
    )
    p.add_argument(
        "--data-cache",
        metavar="DIR",
        help="decoded-image cache for rebuilding file datasets (default: <out>/cache; a run's own "
        "cache, its paths.cache_dir when recorded as a plain absolute path, is read where it "
        "holds the images, never written)",
    )
    p.add_argument("--format", choices=("png", "svg"), default="png", help="figure format (default png)")
    p.add_argument("--title", help="page title")
    p.add_argument(
        "--wandb",
        action="store_true",
        help="log figures and tables to one summary run of the sweep's W&B group",
    )
    return p.parse_args(argv)


def options(a: argparse.Namespace) -> ReportOptions:
    return ReportOptions(
        out=a.out,
        group_by=a.group_by,
        facet=a.facet,
        metrics=a.metrics,
        paired=a.paired,
        alpha=a.alpha,
        include_incomplete=a.include_incomplete,
        grid_k=a.grid_k,
        grid_rounds=a.grid_rounds,
        grids=not a.no_grids,
        audit_n=a.audit_n,
        audit_round=a.audit_round,
        data_cache=a.data_cache,
        fmt=a.format,
        title=a.title,
        wandb=a.wandb,
        statistic=a.statistic,
        reference=a.reference,
    )


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    a = parse_args(argv)
    try:
        res = build_report(a.dirs, options(a))
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for w in res.warnings:
        log.warning("warning: %s", w)
    for n in res.notes:
        log.info("note: %s", n)
    log.info(
        "%d groups, %d figures, %d selection grids, %d audit grids -> %s (report.html, report.md)",
        len(res.groups),
        len(res.figures),
        len(res.grids),
        len(res.audit_grids),
        res.out,
    )
    if res.wandb_dir:
        log.info("W&B summary run: %s", res.wandb_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
