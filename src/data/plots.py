"""Class distribution of each split (thesis figures 4.19-4.20), saved with the run."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLIT_ORDER = ("pool", "val", "test")


def class_counts(data) -> dict[str, list[int]]:
    """Items per class index in each split of a BuiltDataset (repeated pool copies count)."""
    labels = data.labels.numpy()
    ids = {"pool": data.pool_ids, "val": data.val_ids, "test": data.test_ids}
    return {split: np.bincount(labels[ids[split]], minlength=data.num_classes).tolist() for split in SPLIT_ORDER}


def save_class_distribution(data, out_dir: str | Path, title: str = "") -> Path:
    """Write ``class_distribution.png`` (one panel per split, classes sorted by count, as
    in the thesis' figures) and ``class_distribution.json`` (the counts) into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")   # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = class_counts(data)
    (out_dir / "class_distribution.json").write_text(json.dumps(
        {"class_names": list(data.class_names), "counts": counts}))
    fig, axes = plt.subplots(1, 3, figsize=(15, 3.6), constrained_layout=True)
    for ax, split in zip(axes, SPLIT_ORDER):
        c = np.asarray(counts[split])
        present = np.sort(c[c > 0])[::-1]
        ax.bar(np.arange(len(present)), present, width=1.0, color="tab:blue")
        ax.set_title(f"{split}: {int(c.sum())} images, {len(present)} of {len(c)} classes")
        ax.set_xlabel("class (sorted by count)")
        ax.set_ylabel("images")
    if title:
        fig.suptitle(f"class distribution: {title}")
    path = out_dir / "class_distribution.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
