"""Figures of the report (matplotlib, no display): learning curves and selection grids.

Curves follow the thesis' figure 3.3: one line per group at the mean over its runs,
a shaded band of +-1 standard deviation, ``name (runs)`` in the legend, x = the
number of labelled items. Each group is drawn on its own x values, so different
budgets share one axis.
"""
from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from src.analysis.aggregate import Group, group_curve  # noqa: E402

METRIC_TITLES = {
    "test/loss": "Test loss", "test/acc_top1": "Test top-1 accuracy", "test/acc_top5": "Test top-5 accuracy",
    "test/acc_top20": "Test top-20 accuracy", "test/map": "Test mAP", "test/map_50": "Test mAP@50",
    "test/loss_cls": "Test class loss", "test/loss_box": "Test box loss", "val/loss": "Validation loss",
    "val/acc_top1": "Validation top-1 accuracy", "val/acc_top5": "Validation top-5 accuracy",
    "epochs": "Epochs trained per round", "best_epoch": "Best epoch per round",
}


def metric_title(metric: str) -> str:
    if metric in METRIC_TITLES:
        return METRIC_TITLES[metric]
    if metric.startswith("test/ap/"):
        return f"Test AP, class {metric[len('test/ap/'):]}"
    return metric


def file_stem(metric: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", metric).strip("_")


def _style(ax, metric: str, title_suffix: str = "") -> None:
    ax.set_xlabel("labelled images")
    ax.set_ylabel(metric)
    ax.set_title(metric_title(metric) + title_suffix)
    ax.grid(True, alpha=0.3)


def plot_metric(groups: list[Group], metric: str, path: Path, subtitle: str = "",
                facets: list[tuple[str, list[Group]]] | None = None) -> Path:
    """One figure of ``metric`` vs labelled count; with ``facets``, one panel per facet value."""
    panels = facets or [("", groups)]
    ncols = min(len(panels), 2)
    nrows = int(np.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(6.4 * ncols, 4.2 * nrows), squeeze=False)
    colours = {g.label: f"C{i % 10}" for i, g in enumerate(groups)}
    for ax, (facet, members) in zip(axes.flat, panels):
        for g in members:
            c = group_curve(g, metric)
            if not c.x.size:
                continue
            colour = colours.get(g.label, None)
            ax.plot(c.x, c.mean, marker="o", markersize=3, color=colour, label=g.legend)
            ax.fill_between(c.x, c.mean - c.std, c.mean + c.std, color=colour, alpha=0.2, linewidth=0)
        _style(ax, metric, f" ({facet})" if facet else "")
        if ax.has_data():
            ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if subtitle:
        fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_selection_grid(rows: list[dict], path: Path, title: str) -> Path:
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
            img = np.asarray(image)
            img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_title(f"{label}\n{score:.3f}", fontsize=6.5)
            for spine in ax.spines.values():
                spine.set_edgecolor("#c0392b" if kind == "hard" else "#2471a3")
                spine.set_linewidth(2)
            if j == 0:
                ax.set_ylabel(f"round {row['round']}\n{row['n_labelled']} lab.", fontsize=7)
    fig.suptitle(f"{title}\nred: hardest (highest score) selected, blue: easiest selected", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
