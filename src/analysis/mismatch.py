"""Best epoch by validation loss vs by validation accuracy, per round (thesis 4.2.3).

The thesis noticed that "accuracy usually kept improving beyond the optimal loss value
for a few epochs": early stopping on val loss then tests weights whose accuracy is not
the best the fit reached. This view measures that per round of every run from the
round record's per-epoch ``history`` (``rounds.jsonl``), or for older runs the per-epoch
logs ``rounds/round_NNN/metrics.csv`` (written with ``logger=csv`` or ``wandb``): the epoch of the lowest val loss, the epoch of the highest val accuracy,
their gap, and the val accuracy given up by keeping the loss-best epoch.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass

import numpy as np

from src.analysis import files
from src.analysis.aggregate import Group, RunData, sample_std
from src.analysis.trust import inside
from src.errors import UserError
from src.tasks import all_tasks

LOSS_KEY = "val/loss"


def accuracy_key_names() -> tuple[str, ...]:
    """The validation accuracy of every task (``Task.accuracy_key``): a run logs the one of its task."""
    return tuple(task.accuracy_key for task in all_tasks())


@dataclass
class EpochLog:
    epochs: np.ndarray  # epoch index, 0-based as in best_epoch
    loss: np.ndarray
    accuracy: np.ndarray
    accuracy_key: str


def _number(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return None


def parse_epoch_log(lines, accuracy_keys=None) -> EpochLog | None:
    """The validation rows of a Lightning ``metrics.csv``: one (loss, accuracy) per epoch.

    A fit resumed after a kill may have appended a second attempt to the file; its epochs
    start again at 0, and only the last attempt is kept. None when the file has no epoch
    with both a val loss and a val accuracy.
    """
    reader = csv.DictReader(lines)
    fields = reader.fieldnames or []
    acc_key = next((k for k in accuracy_keys or accuracy_key_names() if k in fields), None)
    if acc_key is None or LOSS_KEY not in fields or "epoch" not in fields:
        return None
    by_epoch: dict[int, tuple[float, float]] = {}
    last = -1
    for row in reader:
        epoch, loss, acc = _number(row.get("epoch")), _number(row.get(LOSS_KEY)), _number(row.get(acc_key))
        if epoch is None or not math.isfinite(epoch) or loss is None or acc is None:
            continue
        if int(epoch) <= last:
            by_epoch = {}  # a new attempt of the same round's fit
        by_epoch[int(epoch)] = (loss, acc)
        last = int(epoch)
    if not by_epoch:
        return None
    epochs = sorted(by_epoch)
    return EpochLog(
        np.asarray(epochs),
        np.asarray([by_epoch[e][0] for e in epochs]),
        np.asarray([by_epoch[e][1] for e in epochs]),
        acc_key,
    )


def read_epoch_log(path) -> EpochLog | None:
    """``parse_epoch_log`` of a run's file; one that is no readable CSV is one line naming it."""
    text = files.read_text(path)
    lines = io.StringIO(text, newline="")
    try:
        return parse_epoch_log(lines)
    except csv.Error as err:
        read = text[: lines.tell()]  # up to the end of the line the reader stopped at
        line = read.count("\n") + (0 if read.endswith("\n") else 1)
        raise UserError(f"{path}:{line}: not a CSV file ({files.first_line(err)})") from None


def history_epoch_log(history: dict | None, accuracy_keys=None) -> EpochLog | None:
    """The same from a round record's ``history`` columns (``rounds.jsonl``, any logger)."""
    if not history or LOSS_KEY not in history:
        return None
    acc_key = next((k for k in accuracy_keys or accuracy_key_names() if k in history), None)
    if acc_key is None:
        return None
    rows = [
        (e, loss, acc)
        for e, loss, acc in zip(history.get("epoch", []), history[LOSS_KEY], history[acc_key])
        if isinstance(e, int) and _is_value(loss) and _is_value(acc)
    ]
    if not rows:
        return None
    epochs, loss, acc = (np.asarray(col) for col in zip(*rows))
    return EpochLog(epochs, loss.astype(np.float64), acc.astype(np.float64), acc_key)


def _is_value(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class RoundMismatch:
    round: int
    n_labelled: int
    epochs: int
    best_epoch_by_loss: int
    best_epoch_by_accuracy: int
    epoch_gap: int  # accuracy-best minus loss-best: > 0 when accuracy peaks later
    accuracy_at_loss_best: float
    best_accuracy: float
    accuracy_given_up: float  # best accuracy minus accuracy at the loss-best epoch
    accuracy_key: str


def round_mismatch(log: EpochLog, round_index: int, n_labelled: int) -> RoundMismatch:
    """Pure: the first epoch of minimum loss and the first epoch of maximum accuracy."""
    i_loss, i_acc = int(np.argmin(log.loss)), int(np.argmax(log.accuracy))
    e_loss, e_acc = int(log.epochs[i_loss]), int(log.epochs[i_acc])
    return RoundMismatch(
        round=round_index,
        n_labelled=n_labelled,
        epochs=len(log.epochs),
        best_epoch_by_loss=e_loss,
        best_epoch_by_accuracy=e_acc,
        epoch_gap=e_acc - e_loss,
        accuracy_at_loss_best=float(log.accuracy[i_loss]),
        best_accuracy=float(log.accuracy[i_acc]),
        accuracy_given_up=float(log.accuracy[i_acc] - log.accuracy[i_loss]),
        accuracy_key=log.accuracy_key,
    )


def run_mismatch(run: RunData) -> list[RoundMismatch]:
    """Every round of ``run`` with a per-epoch history: the record's own, else the round's epoch CSV."""
    out = []
    for rec in run.records:
        log = history_epoch_log(rec.history)
        path = None if log is not None else inside(run.path, f"rounds/round_{int(rec.round):03d}/metrics.csv")
        if path is not None:
            log = read_epoch_log(path)
        if log is not None:
            out.append(round_mismatch(log, int(rec.round), int(rec.n_labelled)))
    return out


MISMATCH_COLUMNS = ["group", "seed", "run"] + list(RoundMismatch.__dataclass_fields__)


def mismatch_rows(groups: list[Group]) -> list[dict]:
    """Long-format rows of every round of every run: the CSV behind the view."""
    return [
        {"group": g.label, "seed": r.seed, "run": r.path.name, **asdict(m)}
        for g in groups
        for r in g.runs
        for m in run_mismatch(r)
    ]


@dataclass
class GroupMismatch:
    rounds: int
    later_share: float  # share of rounds whose accuracy peaks after the loss
    mean_gap: float
    mean_given_up: float
    std_given_up: float


def summarise(rows: list[dict]) -> GroupMismatch:
    gaps = np.asarray([r["epoch_gap"] for r in rows], dtype=np.float64)
    given = np.asarray([r["accuracy_given_up"] for r in rows], dtype=np.float64)
    if not gaps.size:
        return GroupMismatch(0, math.nan, math.nan, math.nan, math.nan)
    return GroupMismatch(
        rounds=int(gaps.size),
        later_share=float(np.mean(gaps > 0)),
        mean_gap=float(gaps.mean()),
        mean_given_up=float(given.mean()),
        std_given_up=sample_std(given),
    )


def by_labelled(rows: list[dict], field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labelled count, mean, std over runs) of ``field`` for one group's rows."""
    xs: dict[int, list[float]] = {}
    for r in rows:
        xs.setdefault(int(r["n_labelled"]), []).append(float(r[field]))
    keys = sorted(xs)
    return (
        np.asarray(keys, dtype=np.float64),
        np.asarray([np.mean(xs[k]) for k in keys]),
        np.asarray([sample_std(xs[k]) for k in keys]),
    )


def exists_for(runs: list[RunData]) -> bool:
    return any((r.path / "rounds").is_dir() or any(rec.history for rec in r.records) for r in runs)
