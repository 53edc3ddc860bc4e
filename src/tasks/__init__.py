"""What makes classification and detection different, in one place per task.

A ``Task`` pairs the LightningModule and datamodule a task is built from with its
pool-scoring adapter (model outputs -> one score per item, for any scorer), its
headline metric, its console columns and the per-item view the trackers show. The
loop, the entry point and the trackers ask the task instead of probing objects.
Adding a task is one module here with a ``TASK`` and one entry in ``TASK_MODULES``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from src.errors import UserError

# Imported on demand, so a classification run never imports the detection stack.
TASK_MODULES = {"classification": "src.tasks.classification", "detection": "src.tasks.detection"}

# (header, record key, format) of the per-round console table, before and after the task's own
LEADING_COLUMNS = (
    ("round", "round", "{}"),
    ("labelled", "n_labelled", "{}"),
    ("epochs", "epochs", "{}"),
    ("test loss", "test/loss", "{:.4f}"),
)
TRAILING_COLUMNS = (("select s", "select_seconds", "{:.1f}"), ("fit s", "fit_seconds", "{:.1f}"))


@dataclass(frozen=True)
class Task:
    name: str
    module_class: str  # dotted path of the LightningModule class the task's models derive from
    datamodule_class: str  # likewise for its datamodules
    # score_batch(model, batch, scorer, want_classes, collector=None, **scorer options)
    #   -> (scores [B] or None, classes [B] or None); a joint scorer's collector is fed instead
    score_batch: Callable
    scorer_options: tuple[str, ...]  # the `scorer.*` keys score_batch takes besides the scorer itself
    headline_metric: str  # the metric a sweep optimises and the run returns
    console_columns: tuple[tuple[str, str, str], ...]
    # item_view(datamodule, ids, images=True[, model]) -> (labels, images, boxes): see src.tracking.ItemView
    item_view: Callable
    # save_data_summary(datamodule, run_dir, title) -> None: figures of the data written with the run
    save_data_summary: Callable | None = None
    # the per-item model outputs its outputs view provides (keys of src.selection.scorers.OUTPUTS)
    provides: frozenset = frozenset({"probabilities", "loss"})
    # the validation accuracy a fit's epochs are judged by beside the loss (the report's best-epoch check)
    accuracy_key: str = "val/acc_top1"
    # figure titles of the task's own metrics (the report; metrics shared by every task are titled there)
    metric_titles: dict = field(default_factory=dict)
    # grid_items(datamodule) -> the items the report's selection grids draw: len(), image(i), label(i),
    # label_name(c)
    grid_items: Callable | None = None

    @property
    def columns(self) -> tuple[tuple[str, str, str], ...]:
        return LEADING_COLUMNS + self.console_columns + TRAILING_COLUMNS


def score_with(make_outputs: Callable, model, batch, scorer, want_classes: bool, collector=None, **options):
    """A task's ``score_batch`` from its outputs view: ``make_outputs(model, batch, wants, **options)``
    is lazy, computing only what the scorer (and class diversity) reads, once per batch."""
    wants = set(scorer.uses) | ({"classes"} if want_classes else set())
    outputs = make_outputs(model, batch, frozenset(wants), **options)
    scores = None
    if collector is not None:
        collector.add(outputs)
    elif scorer.needs_model:
        scores = scorer.batch_scores(outputs)
    return scores, (outputs.predicted_classes() if want_classes else None)


def all_tasks() -> list[Task]:
    """Every task (imports each task's module: for the report, which reads runs of any task)."""
    return [get_task(name) for name in TASK_MODULES]


def get_task(name: str) -> Task:
    if name not in TASK_MODULES:
        raise UserError(f"task_type={name!r} is not a known task; allowed: {', '.join(TASK_MODULES)}")
    return importlib.import_module(TASK_MODULES[name]).TASK
