"""Figures of the report (matplotlib, no display): learning curves, selection grids,
the label-quality audit and the loss-vs-accuracy best-epoch view.

Curves follow the thesis' figure 3.3: one line per group at the mean over its runs,
a shaded band of +-1 standard deviation, ``name (runs)`` in the legend, x = the
number of labelled items. Each group is drawn on its own x values, so different
budgets share one axis. Groups differ in colour, dash pattern, line width and (hollow)
marker shape, so groups with identical values (the epochs of two runs that always
stop at once) stay visible on top of each other.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, selectable, smaller
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from src.analysis import mismatch  # noqa: E402
from src.analysis.aggregate import EPOCH_METRICS, Group, group_curve  # noqa: E402
from src.tasks import all_tasks  # noqa: E402

# the titles of metrics every task logs; each task titles its own (``Task.metric_titles``)
SHARED_TITLES = {
    "test/loss": "Test loss",
    "val/loss": "Validation loss",
    "epochs": "Epochs trained per round",
    "best_epoch": "Best epoch per round",
}


@functools.cache
def _titles() -> dict[str, str]:
    titles = dict(SHARED_TITLES)
    for task in all_tasks():
        titles.update(task.metric_titles)
    return titles


def metric_title(metric: str) -> str:
    titles = _titles()
    if metric in titles:
        return titles[metric]
    if metric.startswith("test/ap/"):
        return f"Test AP, class {metric[len('test/ap/') :]}"
    return metric


def file_stem(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_")


def integer_ticks() -> MaxNLocator:
    """Ticks at whole numbers, in steps of 1, 2 or 5 times a power of ten (20, 25, 30; not 21, 24)."""
    return MaxNLocator(integer=True, steps=[1, 2, 5, 10])


def labelled_axis(ax) -> None:
    """The x axis of a labelled count: whole images, so integer ticks only (no 22.5), also where
    every curve has one point (the view then spans a few images around it)."""
    ax.set_xlabel("labelled images")
    ax.xaxis.set_major_locator(integer_ticks())
    low, high = ax.get_xlim()
    if ax.has_data() and high - low < 2:  # fewer than two whole numbers in view: no integer ticks
        middle = round((low + high) / 2)
        ax.set_xlim(middle - 1.2, middle + 1.2)


def epoch_axis(ax) -> None:
    """A y axis of epochs: integer ticks, 0 (the first epoch) in view."""
    ax.yaxis.set_major_locator(integer_ticks())
    if ax.has_data():
        low, high = ax.get_ylim()
        high = max(high, 1.05)  # at least the ticks 0 and 1
        ax.set_ylim(min(low, -0.05 * high), high)


def _style(ax, metric: str, title_suffix: str = "") -> None:
    labelled_axis(ax)
    ax.set_ylabel(metric)
    ax.set_title(metric_title(metric) + title_suffix)
    ax.grid(True, alpha=0.3)
    if metric in EPOCH_METRICS:
        epoch_axis(ax)


# Dash patterns, widths and marker shapes cycle at different lengths, so no two of the first
# dozens of groups share all of them: a later line's gaps and a wider earlier line's edges
# keep both visible where they coincide.
DASHES = ["-", (0, (6, 3)), (0, (2, 2)), (0, (8, 3, 2, 3)), (0, (1, 3))]
WIDTHS = [3.0, 2.2, 1.5]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]


def group_style(i: int) -> dict:
    """Line style of the i-th group: colour, dashes, width and a hollow marker."""
    return {
        "color": f"C{i % 10}",
        "linestyle": DASHES[i % len(DASHES)],
        "linewidth": WIDTHS[i % len(WIDTHS)],
        "marker": MARKERS[i % len(MARKERS)],
        "markersize": 8 - 1.5 * (i % 3),
        "markerfacecolor": "none",
        "markeredgewidth": 1.3,
    }


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _chw_to_imshow(image) -> np.ndarray:
    img = np.asarray(image)
    return img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))


def draw_metric(ax, groups: list[Group], metric: str, styles: dict[str, dict]) -> None:
    """The groups' mean curves and ±1 std bands of ``metric`` on ``ax``."""
    for g in groups:
        c = group_curve(g, metric)
        if not c.x.size:
            continue
        style = styles[g.label]
        ax.plot(c.x, c.mean, label=g.legend, **style)
        # an epoch count is never negative: its band stops at 0
        low = np.maximum(c.mean - c.std, 0) if metric in EPOCH_METRICS else c.mean - c.std
        ax.fill_between(c.x, low, c.mean + c.std, color=style["color"], alpha=0.15, linewidth=0)


def plot_metric(
    groups: list[Group],
    metric: str,
    path: Path,
    subtitle: str = "",
    facets: list[tuple[str, list[Group]]] | None = None,
) -> Path:
    """One figure of ``metric`` vs labelled count; with ``facets``, one panel per facet value."""
    panels = facets or [("", groups)]
    ncols = min(len(panels), 2)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    styles = {g.label: group_style(i) for i, g in enumerate(groups)}
    for ax, (facet, members) in zip(axes.flat, panels):
        draw_metric(ax, members, metric, styles)
        _style(ax, metric, f" ({facet})" if facet else "")
        if ax.has_data():
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels) :]:
        ax.set_visible(False)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    return _save(fig, path)


def plot_selection_grid(rows: list[dict], path: Path, title: str, legend: str) -> Path:
    """Rows of images: each row is one round, its hardest (highest-scored) then easiest picks.

    ``rows``: ``{"round": r, "n_labelled": n, "hardest": [(image, label, score)],
    "easiest": [...]}`` with images as uint8 arrays [C, H, W].
    """
    k = max((len(r["hardest"]) + len(r["easiest"]) for r in rows), default=1)
    fig, axes = plt.subplots(len(rows), k, figsize=(1.25 * k, 1.45 * len(rows) + 0.5), squeeze=False)
    for i, row in enumerate(rows):
        cells = [("hard", *c) for c in row["hardest"]] + [("easy", *c) for c in row["easiest"]]
        for j in range(k):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(cells):
                ax.axis("off")
                continue
            kind, image, label, score = cells[j]
            img = _chw_to_imshow(image)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{label}\n{score:.3f}", fontsize=6.5)
            for spine in ax.spines.values():
                spine.set_edgecolor("#c0392b" if kind == "hard" else "#2471a3")
                spine.set_linewidth(2)
            if j == 0:
                ax.set_ylabel(f"round {row['round']}\n{row['n_labelled']} lab.", fontsize=7)
    fig.suptitle(f"{title}\n{legend}", fontsize=8)
    return _save(fig, path)


def plot_audit_grid(items: list, path: Path, title: str, columns: int = 10) -> Path:
    """The audited items (``selections.AuditItem``), rank order, row by row: rank, label and,
    when known, the prediction (a red frame where it differs from the label)."""
    rows = max(1, int(np.ceil(len(items) / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(1.05 * columns, 1.25 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.axis("off")
    for ax, it in zip(axes.flat, items):
        ax.axis("on")
        img = _chw_to_imshow(it.image)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        text = f"#{it.rank} label {it.label}" + (f"\npred {it.prediction}" if it.prediction else "")
        ax.set_title(text, fontsize=6)
        wrong = bool(it.prediction) and it.prediction != it.label
        for spine in ax.spines.values():
            spine.set_edgecolor("#c0392b" if wrong else "#999999")
            spine.set_linewidth(2 if wrong else 0.8)
    fig.suptitle(title, fontsize=8)
    return _save(fig, path)


def plot_mismatch(per_group: list[tuple[Group, list[dict]]], path: Path, accuracy_key: str) -> Path:
    """Left: best epoch by val loss (solid) and by val accuracy (dashed) per round; right: the
    val accuracy given up by keeping the loss-best epoch. Mean over runs, ±1 std band."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12.8, 4.4))
    for i, (g, rows) in enumerate(per_group):
        if not rows:
            continue
        style = group_style(i)
        colour = style["color"]
        for field, dash, name in (
            ("best_epoch_by_loss", "-", "loss"),
            ("best_epoch_by_accuracy", "--", "accuracy"),
        ):
            x, mean, _ = mismatch.by_labelled(rows, field)
            # dashes say loss or accuracy here; the group's width and marker keep equal lines visible
            left.plot(x, mean, label=f"{g.label}: by val {name}", **{**style, "linestyle": dash})
        x, mean, std = mismatch.by_labelled(rows, "accuracy_given_up")
        right.plot(x, mean, label=g.legend, **group_style(i))
        right.fill_between(x, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)
    left.set_title("Best epoch per round: by val loss (solid) vs by val accuracy (dashed)")
    left.set_ylabel("best epoch (0 = first)")
    epoch_axis(left)
    right.set_title(f"{accuracy_key} given up by stopping on val loss")
    right.set_ylabel(f"best {accuracy_key} - {accuracy_key} at the loss-best epoch")
    for ax in (left, right):
        labelled_axis(ax)
        ax.grid(True, alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    return _save(fig, path)
