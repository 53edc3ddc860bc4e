"""Lightning callbacks of one active-learning round."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from src.errors import UserError


class RestoreBestWeights(Callback):
    """Keep the best validation epoch's weights in memory and load them when fit ends.

    EarlyStopping only stops; the thesis restores the best weights before testing.
    The copy lives in memory (no checkpoint file per epoch per round).
    """

    def __init__(self, monitor: str = "val/loss", mode: str = "min"):
        if mode not in ("min", "max"):
            raise UserError(f"callbacks.restore_best.mode={mode!r}; allowed: min, max")
        self.monitor, self.mode = monitor, mode
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self._best_state: dict[str, torch.Tensor] | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            raise UserError(
                f"callbacks: monitored metric {self.monitor!r} was not logged; "
                f"logged: {', '.join(sorted(metrics))}"
            )
        value = float(metrics[self.monitor])
        better = self.best_value is None or (
            value < self.best_value if self.mode == "min" else value > self.best_value
        )
        if better:
            self.best_value, self.best_epoch = value, trainer.current_epoch
            self.best_metrics = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
            self._best_state = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._best_state is not None:
            pl_module.load_state_dict(self._best_state)
            self._best_state = None


class EpochHistory(Callback):
    """The per-epoch ``train/*`` and ``val/*`` metrics of one fit, as columns: ``{"epoch": [0, 1, ..],
    "train/loss": [..], ..}`` (None where an epoch has no value, e.g. no validation run).

    Read at the end of each training epoch, after that epoch's validation: the values the
    Trainer's loggers get, kept for the round record (``RoundRecord.history``) and the trackers.
    """

    def __init__(self):
        self.rows: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        self.rows.append(
            {
                k: float(v)
                for k, v in metrics.items()
                if k.startswith(("train/", "val/")) and torch.is_tensor(v) and v.numel() == 1
            }
        )
        self.rows[-1]["epoch"] = trainer.current_epoch

    def columns(self) -> dict[str, list]:
        keys = sorted({k for row in self.rows for k in row if k != "epoch"})
        return {
            "epoch": [row["epoch"] for row in self.rows],
            **{k: [row.get(k) for row in self.rows] for k in keys},
        }
