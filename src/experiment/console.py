"""What a run prints: its round lines, the per-round table and the title of its data figures."""

from __future__ import annotations

import json

from omegaconf import DictConfig, OmegaConf

from src.loop.active_loop import round_label
from src.records import RoundRecord
from src.tasks import Task


def format_table(records: list[RoundRecord], task: Task) -> str:
    """The per-round console table: the task's columns that any record has."""
    cols = [c for c in task.columns if any(r.value(c[1]) is not None for r in records)]
    rows = [[c[0] for c in cols]] + [
        [c[2].format(r.value(c[1])) if r.value(c[1]) is not None else "-" for c in cols] for r in records
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def round_line(task: Task, record: RoundRecord, n_rounds: int) -> str:
    """The one console line of a completed round."""
    parts = [round_label(record.round, n_rounds), f"labelled {record.n_labelled}", f"epochs {record.epochs}"]
    shown = ["test/loss"] + [key for _, key, _ in task.console_columns]
    parts += [f"{k} {record.metrics[k]:.4f}" for k in shown if k in record.metrics]
    parts.append(f"select {record.select_seconds:.1f}s fit {record.fit_seconds:.1f}s")
    return " | ".join(parts)


def data_title(cfg: DictConfig, datamodule) -> str:
    """``<dataset> (<source>)``, as the class-distribution figure is titled: the source group where
    the dataset draws on it (v2, mixed, noisy, hard: ``v2 (imagenet)``), else the sources the
    datamodule was built with, by their root where they have one (``folder (/data/my_images)``)."""
    raw = json.dumps(OmegaConf.to_container(cfg.dataset, resolve=False), default=str)
    if "${source." in raw:
        return f"{cfg.dataset.name} ({cfg.source.name})"
    sources = [
        str(getattr(s, "root", None) or getattr(s, "name", type(s).__name__))
        for s in getattr(datamodule, "sources", [])
    ]
    return f"{cfg.dataset.name} ({', '.join(sources)})" if sources else str(cfg.dataset.name)
