"""The report's pages: one Markdown file and one self-contained HTML file.

Both show the same content, built once as a ``ReportContent``. The HTML embeds its
figures as data URIs and inline CSS (one file that can be mailed or attached to a
paper draft); its only links are to files the report wrote next to it (CSVs, PNGs).
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

from src.analysis.stats import Comparison, family_size


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    significant: set = field(default_factory=set)  # (row, col) cells to highlight


@dataclass
class ReportContent:
    title: str
    intro: list[str]  # paragraphs (plain text)
    runs: Table
    figures: list[tuple[str, str]]  # (caption, path relative to the page)
    auc: Table | None
    pvalues: list[Table]
    grids: list[tuple[str, str]]
    downloads: list[tuple[str, str]]  # (caption, relative path)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # in the header, above everything but the title
    audit_grids: list[tuple[str, str]] = field(default_factory=list)  # label-quality audit (thesis table 4.1)
    audit_note: str = ""
    mismatch_figures: list[tuple[str, str]] = field(default_factory=list)  # loss vs accuracy (thesis 4.2.3)
    mismatch: Table | None = None
    final: Table | None = None  # each group's final round
    fit_health: Table | None = None  # how each group's fits ended


def fmt(value: float, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}f}"


def _interval(low: float, high: float, digits: int) -> str:
    return f"[{fmt(low, digits)}, {fmt(high, digits)}]"


def _test_words(paired: bool, statistic: str) -> tuple[str, tuple[str, str]]:
    kind = "paired t-test where the seeds match, else Welch's" if paired else "Welch's t-test"
    what = ("AUC of", "per-seed AUCs") if statistic == "auc" else ("final", "per-seed final-round values")
    return kind, what


def _holm_words(n: int) -> str:
    return f"Holm-corrected over {n} comparison{'' if n == 1 else 's'}"


def pvalue_table(
    metric: str,
    labels: list[str],
    matrix: dict[str, dict[str, Comparison]],
    alpha: float,
    paired: bool,
    statistic: str = "auc",
) -> Table:
    """Holm-corrected p-values; a cell and its mirror are the same test; each cell also gives Cohen's d
    (row - column)."""
    rows, hot = [], set()
    for i, a in enumerate(labels):
        cells = [a]
        for j, b in enumerate(labels):
            c = matrix[a][b]
            if a == b:
                cells.append("1.00")
                continue
            mark = "" if c.test in ("welch", "same") else " (paired)" if c.test == "paired" else ""
            cells.append(f"{fmt(c.p_holm, 3)} (d={fmt(c.effect, 2)}){mark}")
            if not math.isnan(c.p_holm) and c.p_holm < alpha:
                hot.add((i, j + 1))
        rows.append(cells)
    kind, what = _test_words(paired, statistic)
    return Table(
        title=f"p-values, {what[0]} {metric}",
        header=[""] + labels,
        rows=rows,
        significant=hot,
        note=f"{kind} over {what[1]}; p {_holm_words(family_size(matrix))} (the unique pairs of this "
        f"matrix; raw p, and 95% CIs of the difference and of d, in pvalues.csv); d = Cohen's d of "
        f"row minus column; highlighted: corrected p < {alpha}. '–': fewer than two runs in a group.",
    )


def reference_table(
    metric: str,
    reference: str,
    versus: dict[str, Comparison],
    alpha: float,
    paired: bool,
    statistic: str = "auc",
) -> Table:
    """Each group against the reference: difference and d with their 95% CIs, raw and Holm p, runs."""
    rows, hot = [], set()
    for i, (label, c) in enumerate(versus.items()):
        mark = " (paired)" if c.test == "paired" else ""
        rows.append(
            [
                label,
                f"{c.n_a} / {c.n_b}",
                f"{fmt(c.diff)} {_interval(c.diff_low, c.diff_high, 4)}",
                f"{fmt(c.effect, 2)} {_interval(c.effect_low, c.effect_high, 2)}",
                fmt(c.p, 3),
                fmt(c.p_holm, 3) + mark,
            ]
        )
        if not math.isnan(c.p_holm) and c.p_holm < alpha:
            hot.add((i, 5))
    kind, what = _test_words(paired, statistic)
    n = sum(not math.isnan(c.p) for c in versus.values())
    return Table(
        title=f"Against {reference}, {what[0]} {metric}",
        header=[
            "group",
            "runs (group / reference)",
            "mean difference [95% CI]",
            "Cohen's d [95% CI]",
            "p",
            "p (Holm)",
        ],
        rows=rows,
        significant=hot,
        note=f"{kind} over {what[1]} of each group minus {reference}; p (Holm) is {_holm_words(n)} "
        f"(each group against {reference} only); the difference's CI is the test's t interval, d's "
        f"a normal approximation (Hedges & Olkin's standard error); highlighted: corrected p < "
        f"{alpha}. '–': fewer than two runs in a group.",
    )


# -- Markdown -----------------------------------------------------------------------------------
def _md_table(t: Table) -> list[str]:
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    out = [
        f"**{t.title}**",
        "",
        "| " + " | ".join(esc(h) for h in t.header) + " |",
        "|" + "|".join("---" for _ in t.header) + "|",
    ]
    for i, row in enumerate(t.rows):
        out.append(
            "| "
            + " | ".join(f"**{esc(c)}**" if (i, j) in t.significant else esc(c) for j, c in enumerate(row))
            + " |"
        )
    if t.note:
        out += ["", f"_{t.note}_"]
    return out + [""]


def render_markdown(c: ReportContent) -> str:
    lines = [f"# {c.title}", ""]
    for w in c.warnings:
        lines += [f"> **Warning:** {w}", ""]
    for p in c.intro:
        lines += [p, ""]
    for n in c.notes:
        lines += [f"> **Note:** {n}", ""]
    lines += ["## Runs", ""] + _md_table(c.runs)
    lines += [
        "## Learning curves",
        "",
        "Mean over seeds (line) and ±1 standard deviation (band); the legend gives the number of runs.",
        "",
    ]
    for caption, path in c.figures:
        lines += [f"![{caption}]({path})", ""]
    if c.auc:
        lines += ["## Area under the curve", ""] + _md_table(c.auc)
    if c.final:
        lines += ["## Final round", ""] + _md_table(c.final)
    if c.fit_health:
        lines += ["## Fit health", ""] + _md_table(c.fit_health)
    if c.pvalues:
        lines += ["## Significance", ""]
        for t in c.pvalues:
            lines += _md_table(t)
    if c.grids:
        lines += ["## Selected images", ""]
        for caption, path in c.grids:
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    if c.audit_grids:
        lines += ["## Label-quality audit of the top selections", "", c.audit_note, ""]
        for caption, path in c.audit_grids:
            lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
    if c.mismatch:
        lines += ["## Best epoch: val loss vs val accuracy", ""]
        lines += [f"![{caption}]({path})\n" for caption, path in c.mismatch_figures] + _md_table(c.mismatch)
    if c.downloads:
        lines += ["## Files", ""] + [f"- [{cap}]({path})" for cap, path in c.downloads] + [""]
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1200px;margin:2em auto;
padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.88em}
th,td{border:1px solid #ccc;padding:.25em .55em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}td.sig{background:#fde2b3;font-weight:600}
figure{display:inline-block;margin:.4em;vertical-align:top}figure img{max-width:560px;border:1px solid #eee}
.grid img{max-width:100%}.note{background:#fff6d6;border-left:4px solid #e0b000;padding:.4em .8em}
.caption{font-size:.85em;color:#555}.warning{background:#fde8e8;border-left:4px solid #c62828;padding:.4em .8em}
"""


def _data_uri(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    mime = {"png": "image/png", "svg": "image/svg+xml", "jpg": "image/jpeg", "jpeg": "image/jpeg"}[suffix]
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _html_table(t: Table) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in t.header)
    body = []
    for i, row in enumerate(t.rows):
        cells = "".join(
            f'<td class="sig">{e(str(v))}</td>' if (i, j) in t.significant else f"<td>{e(str(v))}</td>"
            for j, v in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    note = f'<p class="caption">{e(t.note)}</p>' if t.note else ""
    return f"<h3>{e(t.title)}</h3><table><tr>{head}</tr>{''.join(body)}</table>{note}"


def _html_grids(grids: list[tuple[str, str]], base: Path) -> str:
    e = html.escape
    return "".join(
        f'<figure class="grid"><figcaption><b>{e(caption)}</b></figcaption>'
        f'<img src="{_data_uri(base / path)}" alt="{e(caption)}"></figure>'
        for caption, path in grids
    )


def render_html(c: ReportContent, base: Path) -> str:
    e = html.escape
    parts = [
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{e(c.title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{e(c.title)}</h1>"
    ]
    parts += [f'<p class="warning"><b>Warning:</b> {e(w)}</p>' for w in c.warnings]
    parts += [f"<p>{e(p)}</p>" for p in c.intro]
    parts += [f'<p class="note"><b>Note:</b> {e(n)}</p>' for n in c.notes]
    parts.append("<h2>Runs</h2>" + _html_table(c.runs))
    parts.append(
        '<h2>Learning curves</h2><p class="caption">Mean over seeds (line) and ±1 standard deviation '
        "(band); the legend gives the number of runs.</p>"
    )
    for caption, path in c.figures:
        parts.append(
            f'<figure><img src="{_data_uri(base / path)}" alt="{e(caption)}">'
            f'<figcaption class="caption">{e(caption)}</figcaption></figure>'
        )
    if c.auc:
        parts.append("<h2>Area under the curve</h2>" + _html_table(c.auc))
    if c.final:
        parts.append("<h2>Final round</h2>" + _html_table(c.final))
    if c.fit_health:
        parts.append("<h2>Fit health</h2>" + _html_table(c.fit_health))
    if c.pvalues:
        parts.append("<h2>Significance</h2>" + "".join(_html_table(t) for t in c.pvalues))
    if c.grids:
        parts.append("<h2>Selected images</h2>" + _html_grids(c.grids, base))
    if c.audit_grids:
        parts.append(
            f"<h2>Label-quality audit of the top selections</h2><p>{e(c.audit_note)}</p>"
            + _html_grids(c.audit_grids, base)
        )
    if c.mismatch:
        parts.append(
            "<h2>Best epoch: val loss vs val accuracy</h2>"
            + "".join(
                f'<figure><img src="{_data_uri(base / path)}" alt="{e(caption)}"><figcaption class="caption">'
                f"{e(caption)}</figcaption></figure>"
                for caption, path in c.mismatch_figures
            )
            + _html_table(c.mismatch)
        )
    if c.downloads:
        parts.append(
            "<h2>Files</h2><ul>"
            + "".join(f'<li><a href="{e(p)}">{e(cap)}</a></li>' for cap, p in c.downloads)
            + "</ul>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
