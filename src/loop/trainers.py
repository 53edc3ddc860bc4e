"""A fresh Lightning Trainer per round, built from the ``trainer`` and ``callbacks`` configs.

A second ``fit`` on one Trainer trains nothing and EarlyStopping keeps its state
between fits, so every round gets its own Trainer and its own callbacks.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import CSVLogger

from src.config.instantiate import build
from src.loop.callbacks import EpochHistory
from src.records import EARLY_STOPPING, EPOCH_CAP, FAULT_ENV, FIXED_LENGTH, STEP_CAP, fault_point


def quiet_libraries() -> None:
    """Keep the console to our round lines: Lightning's per-Trainer banners repeat every round."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")


class TrainerFactory:
    """``factory(round_index)`` -> a new Trainer with new callbacks, logging the round's epochs."""

    def __init__(
        self,
        trainer_cfg: DictConfig,
        callbacks_cfg: DictConfig,
        run_dir: str | Path,
        epoch_logs: bool = True,
        progress: bool = False,
        epochs: int | None = None,
    ):
        """``epochs`` (``fit.epochs``): every fit trains exactly that many epochs (early stopping
        cannot end it sooner); None leaves ``trainer.max_epochs`` / ``min_epochs`` as configured."""
        self.trainer_cfg, self.callbacks_cfg = trainer_cfg, callbacks_cfg
        self.epochs = epochs
        self.run_dir = Path(run_dir)
        self.epoch_logs, self.progress = epoch_logs, progress

    def callbacks(self) -> list[pl.Callback]:
        built = [
            build(node)
            for node in self.callbacks_cfg.values()
            if OmegaConf.is_dict(node) and "_target_" in node
        ]
        built.append(EpochHistory())  # the round record's per-epoch history
        if os.environ.get(FAULT_ENV, "").startswith("fit"):
            built.append(_FaultInFit())  # testing hook only (src.records.FAULT_ENV)
        return built

    def __call__(self, round_index: int) -> pl.Trainer:
        logger = False
        if self.epoch_logs:
            logger = CSVLogger(save_dir=str(self.run_dir), name="rounds", version=f"round_{round_index:03d}")
        length = (
            {} if self.epochs is None else {"max_epochs": int(self.epochs), "min_epochs": int(self.epochs)}
        )
        return build(
            self.trainer_cfg,
            callbacks=self.callbacks(),
            logger=logger,
            default_root_dir=str(self.run_dir),
            enable_checkpointing=False,
            enable_progress_bar=self.progress,
            enable_model_summary=False,
            **length,
        )


def how_fit_ended(trainer: pl.Trainer) -> str:
    """One of ``FIT_ENDINGS`` for a Trainer whose ``fit`` has returned."""
    max_steps = trainer.max_steps
    if max_steps is not None and max_steps >= 0 and trainer.global_step >= max_steps:
        return STEP_CAP
    max_epochs = trainer.max_epochs
    if max_epochs is None or max_epochs < 0 or trainer.current_epoch < max_epochs:
        return EARLY_STOPPING  # nothing else stops a fit that returns normally before its cap
    stopper = any(isinstance(c, EarlyStopping) for c in trainer.callbacks)
    return EPOCH_CAP if stopper and (trainer.min_epochs or 0) < max_epochs else FIXED_LENGTH


class _FaultInFit(pl.Callback):
    """The ``fit`` point of the fault-injection testing hook: after a training batch."""

    def on_train_batch_end(self, *args, **kwargs) -> None:
        fault_point("fit")
