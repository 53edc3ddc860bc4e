"""What the runs selected, as images: the selection grids and the label-quality audit.

Ids in ``rounds.jsonl`` are rows of the run's dataset, which is rebuilt here from the
run's saved config (deterministic), through ``trust``'s checks: only the project's own
data classes are instantiated, and decoded images are written only where the user said
(``--data-cache``, else ``<out>/cache``); a run's own cache (its recorded
``paths.cache_dir``, when that is a plain absolute path) is read where it holds the images,
never written.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.errors import InstantiationException

from src.analysis.aggregate import Group, RunData, load_config, raw_config
from src.analysis.files import first_line
from src.analysis.trust import check_dataset_config, inside, with_local_cache
from src.config.instantiate import build
from src.data.cache import CacheMiss, UnreadableImage, reuse_only
from src.errors import UserError
from src.records import RoundRecord
from src.tasks import Task, all_tasks

# what a task's grid_items gives (Task.grid_items): len(), image(i), label(i), label_name(c)
Items = Any

# What stops a dataset from being rebuilt on this machine (files absent or unreadable, values
# in the received config the data classes refuse): the grid is skipped with a note instead of
# stopping the whole report.
REBUILD_ERRORS = (OSError, UnreadableImage, UserError, TypeError, ValueError, KeyError, IndexError)


class NotRebuildable(Exception):
    """A run whose dataset cannot give images here; the message says why (for the report's notes)."""


def dataset_config(run: RunData) -> tuple[dict, Path]:
    """The run's resolved ``dataset`` config and the file it came from, checked by ``trust``."""
    path = inside(run.path, ".hydra/config.yaml")
    if path is None:
        raise NotRebuildable(f"{run.path} has no .hydra/config.yaml")
    dataset = load_config(run.path).get("dataset")
    if not isinstance(dataset, dict):
        raise UserError(f"{path}: has no dataset section; use --no-grids to report this run")
    check_dataset_config(dataset, path)
    return dataset, path


def recorded_cache_dir(run: RunData) -> Path | None:
    """The run's own decoded-image cache: its recorded ``paths.cache_dir`` when that is a plain
    absolute path (no interpolation, nothing relative to a directory the run ran in) of an
    existing folder; else None."""
    paths = raw_config(run.path).get("paths")
    value = paths.get("cache_dir") if isinstance(paths, dict) else None
    if not isinstance(value, str) or "$" in value or not Path(value).is_absolute():
        return None
    return Path(value) if Path(value).is_dir() else None


class DatasetCache:
    """Rebuilt datasets by their config, as items a grid can show: runs of one sweep share one build.

    Decoded images are written only into ``cache_dir``; with ``reuse_runs``, a run's own cache
    (``recorded_cache_dir``) is read first where it already holds them, and never written.
    """

    def __init__(self, cache_dir: Path, reuse_runs: bool = False):
        self.cache_dir = Path(cache_dir)
        self.reuse_runs = reuse_runs
        self._built: dict = {}

    def get(self, run: RunData):
        dataset, _ = dataset_config(run)
        key = json.dumps(with_local_cache(dataset, Path("<cache>")), sort_keys=True, default=str)
        if key not in self._built:
            dm = None
            own = recorded_cache_dir(run) if self.reuse_runs else None
            if own is not None:
                try:
                    with reuse_only():
                        dm = _setup(with_local_cache(dataset, own))
                except (CacheMiss, NotRebuildable):  # not there (or not usable): decode where the user said
                    dm = None
            if dm is None:
                dm = _setup(with_local_cache(dataset, self.cache_dir))
            task = _task_of(dm)
            if task is None or task.grid_items is None:
                raise NotRebuildable(f"{type(dm).__name__} gives no images to draw")
            self._built[key] = task.grid_items(dm)
        return self._built[key]


def _task_of(datamodule) -> Task | None:
    """The task whose datamodule class this one is (the dataset config names only the datamodule)."""
    for task in all_tasks():
        module, _, name = task.datamodule_class.rpartition(".")
        base = getattr(importlib.import_module(module), name)
        if isinstance(datamodule, base):
            return task
    return None


def _setup(dataset: dict):
    """The datamodule of a checked dataset config, set up; NotRebuildable (one line) when it cannot be
    (a constructor's error arrives wrapped in Hydra's InstantiationException: its cause is the line)."""
    try:
        dm = build(dataset)
        dm.setup()
    except InstantiationException as err:
        if isinstance(err.__cause__, CacheMiss):
            raise err.__cause__ from None
        raise NotRebuildable(
            f"the dataset could not be rebuilt here ({first_line(err.__cause__ or err)})"
        ) from err
    except REBUILD_ERRORS as err:
        raise NotRebuildable(f"the dataset could not be rebuilt here ({first_line(err)})") from err
    return dm


def foreign_rows(run: RunData, data: Items) -> str | None:
    """Why the run's selections are not rows of the dataset rebuilt here (a changed folder, a
    malformed ``rounds.jsonl``), or None when every selected id is one."""
    for rec in run.records:
        outside = [i for i in rec.selected_ids if not 0 <= i < len(data)]
        if outside:
            return (
                f"{run.path / 'rounds.jsonl'}: round {rec.round} selects row {outside[0]}, but the dataset "
                f"rebuilt here has {len(data)} rows"
            )
    return None


def evenly(items: list, k: int) -> list:
    """At most ``k`` items, evenly spaced, first and last included."""
    if len(items) <= k:
        return items
    picks = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)}) if k > 1 else [0]
    return [items[i] for i in picks]


def representative(group: Group) -> RunData:
    """The run whose selections a grid shows: finished first, then the lowest seed."""
    return sorted(group.runs, key=lambda r: (not r.finished, str(r.seed), str(r.path)))[0]


def scored_records(run: RunData) -> list[RoundRecord]:
    return [r for r in run.records if r.selected_scores and len(r.selected_scores) == len(r.selected_ids)]


def _cell(data: Items, item_id: int, score: float) -> tuple:
    return data.image(item_id), data.label(item_id), float(score)


def selection_rows(run: RunData, data: Items, k: int, max_rounds: int) -> list[dict]:
    """Per scored round: the ``k`` highest- and ``k`` lowest-scored ids among those selected."""
    rows = []
    for rec in evenly(scored_records(run), max_rounds):
        pairs = sorted(zip(rec.selected_ids, rec.selected_scores), key=lambda t: -t[1])
        hardest = pairs[:k]
        easiest = pairs[max(k, len(pairs) - k) :][::-1]
        rows.append(
            {
                "round": rec.round,
                "n_labelled": rec.n_labelled,
                "selection": rec.selection,
                "hardest": [_cell(data, *t) for t in hardest],
                "easiest": [_cell(data, *t) for t in easiest],
            }
        )
    return rows


def grid_legend(selection: str | None) -> str:
    """What the two colours of a selection grid mean for this scorer."""
    if selection == "random":
        return (
            "random selection: scores are random draws, not difficulty; "
            "red: highest draw, blue: lowest draw among the selected"
        )
    if selection == "loss":
        return "red: highest loss (hardest) selected, blue: lowest loss selected"
    return "red: hardest (highest score) selected, blue: easiest selected"


# -- label-quality audit (thesis table 4.1) ------------------------------------------------------
AUDIT_COLUMNS = [
    "group",
    "seed",
    "run",
    "round",
    "rank",
    "id",
    "score",
    "label",
    "prediction",
    "disagree",
    "comment",
]


@dataclass
class AuditItem:
    rank: int  # 1 = the highest-scored item of the selection
    item_id: int
    score: float
    label: str
    prediction: str  # "" when the record carries no predictions
    image: np.ndarray  # uint8 [C, H, W]


def audit_record(run: RunData, audit_round: int | None) -> RoundRecord | None:
    """The selection to audit: round ``audit_round``, or the first one a scorer made (not the base set)."""
    records = [r for r in run.records if r.selected_ids and r.selection != "base"]
    if audit_round is not None:
        records = [r for r in records if r.round == audit_round]
    return records[0] if records else None


def _prediction(data: Items, value) -> str:
    if value is None:
        return ""
    if isinstance(value, (int, float)):
        # a detection model's class of an image: -1 when it detected nothing
        return data.label_name(int(value)) if value >= 0 else "(nothing detected)"
    return str(value)


def audit_items(record: RoundRecord, data: Items, n: int) -> list[AuditItem]:
    """The ``n`` highest-scored items of a selection, hardest first, with label and prediction.

    ``selected_ids`` are in rank order; ``selected_predictions`` (the model's predicted class
    of each, parallel to the ids) fills the prediction when the record has it.
    """
    ids = list(record.selected_ids)
    scores = (
        list(record.selected_scores) if len(record.selected_scores) == len(ids) else [float("nan")] * len(ids)
    )
    predictions = record.selected_predictions
    if predictions is None:
        predictions = [None] * len(ids)
    elif not isinstance(predictions, list) or len(predictions) != len(ids):
        raise UserError(
            f"round {record.round}: selected_predictions must be a list parallel to selected_ids "
            f"({len(ids)} items)"
        )
    order = sorted(range(len(ids)), key=lambda j: (-scores[j] if scores[j] == scores[j] else 0.0, j))
    items = []
    for rank, j in enumerate(order[:n], start=1):
        i = int(ids[j])
        items.append(
            AuditItem(
                rank=rank,
                item_id=i,
                score=float(scores[j]),
                label=data.label(i),
                prediction=_prediction(data, predictions[j]),
                image=data.image(i),
            )
        )
    return items


def audit_rows(group: Group, run: RunData, record: RoundRecord, items: list[AuditItem]) -> list[dict]:
    """CSV rows of one group's audit; ``disagree`` and ``comment`` are for the person annotating."""
    return [
        {
            "group": group.label,
            "seed": run.seed,
            "run": run.path.name,
            "round": record.round,
            "rank": it.rank,
            "id": it.item_id,
            "score": it.score,
            "label": it.label,
            "prediction": it.prediction,
            "disagree": "",
            "comment": "",
        }
        for it in items
    ]
