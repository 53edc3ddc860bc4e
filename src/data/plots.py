"""Class distribution of each split (thesis figures 4.19-4.20), saved with the run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLIT_ORDER = ("pool", "val", "test")
# class names written under a panel's bars: every one up to this many classes, else this many
# evenly spaced (ImageNet's 1000 cannot all be read), each cut to NAME_CHARS characters
NAMED_TICKS = 40
NAME_CHARS = 14


def class_counts(data) -> dict[str, list[int]]:
    """Items per class index in each split of a BuiltDataset (repeated pool copies count)."""
    labels = data.labels.numpy()
    ids = {"pool": data.pool_ids, "val": data.val_ids, "test": data.test_ids}
    return {
        split: np.bincount(labels[ids[split]], minlength=data.num_classes).tolist() for split in SPLIT_ORDER
    }


def short_name(name: str, chars: int = NAME_CHARS) -> str:
    return name if len(name) <= chars else name[: chars - 1] + "…"


def name_ticks(names: list[str], most: int = NAMED_TICKS) -> tuple[list[int], list[str]]:
    """Positions and (shortened) labels of the bars to name: all of them, or ``most`` evenly spaced."""
    if len(names) <= most:
        picks = list(range(len(names)))
    else:
        picks = sorted({round(i * (len(names) - 1) / (most - 1)) for i in range(most)})
    return picks, [short_name(str(names[i])) for i in picks]


def draw_split(ax, counts, class_names: list[str], split: str) -> None:
    """One panel: the split's classes present, sorted by count (most first), named under their bars."""
    from matplotlib.ticker import MaxNLocator

    c = np.asarray(counts)
    order = [int(i) for i in np.argsort(-c, kind="stable") if c[i] > 0]
    ax.bar(np.arange(len(order)), c[order], width=1.0 if len(order) > NAMED_TICKS else 0.8, color="tab:blue")
    ax.set_title(f"{split}: {int(c.sum())} images, {len(order)} of {len(c)} classes")
    picks, labels = name_ticks([class_names[i] if i < len(class_names) else str(i) for i in order])
    long_names = max(map(len, labels), default=0) > 3
    if len(picks) > 10:  # many: upright columns of small text
        ax.set_xticks(picks, labels, rotation=90, fontsize=6 if len(picks) > 20 else 7)
    else:  # few: level, or slanted when the names are long
        ax.set_xticks(
            picks,
            labels,
            rotation=30 if long_names else 0,
            ha="right" if long_names else "center",
            rotation_mode="anchor",
            fontsize=8,
        )
    ax.set_xlabel(
        "class (sorted by count)"
        + ("" if len(picks) == len(order) else f"; {len(picks)} of {len(order)} named")
    )
    ax.set_ylabel("images")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def class_distribution_figure(counts: dict[str, list[int]], class_names: list[str], title: str = ""):
    """The figure of ``class_counts``: one panel per split, its classes sorted by count and named."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), constrained_layout=True)
    for ax, split in zip(axes, SPLIT_ORDER):
        draw_split(ax, counts[split], list(class_names), split)
    if title:
        fig.suptitle(f"class distribution: {title}")
    return fig


def save_class_distribution(data, out_dir: str | Path, title: str = "") -> Path:
    """Write ``class_distribution.png`` (one panel per split, classes sorted by count, as
    in the thesis' figures) and ``class_distribution.json`` (the counts) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = class_counts(data)
    (out_dir / "class_distribution.json").write_text(
        json.dumps({"class_names": list(data.class_names), "counts": counts})
    )
    fig = class_distribution_figure(counts, list(data.class_names), title)
    import matplotlib.pyplot as plt  # after the figure chose the Agg backend

    path = out_dir / "class_distribution.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
