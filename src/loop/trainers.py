"""A fresh Lightning Trainer per round, built from the ``trainer`` and ``callbacks`` configs.

A second ``fit`` on one Trainer trains nothing and EarlyStopping keeps its state
between fits, so every round gets its own Trainer and its own callbacks.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import CSVLogger

from src.config.instantiate import build


def quiet_libraries() -> None:
    """Keep the console to our round lines: Lightning's per-Trainer banners repeat every round."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")


class TrainerFactory:
    """``factory(round_index)`` -> a new Trainer with new callbacks, logging the round's epochs."""

    def __init__(self, trainer_cfg: DictConfig, callbacks_cfg: DictConfig, run_dir: str | Path,
                 epoch_logs: bool = True, progress: bool = False):
        self.trainer_cfg, self.callbacks_cfg = trainer_cfg, callbacks_cfg
        self.run_dir = Path(run_dir)
        self.epoch_logs, self.progress = epoch_logs, progress

    def callbacks(self) -> list[pl.Callback]:
        return [build(node) for node in self.callbacks_cfg.values()
                if OmegaConf.is_dict(node) and "_target_" in node]

    def __call__(self, round_index: int) -> pl.Trainer:
        logger = False
        if self.epoch_logs:
            logger = CSVLogger(save_dir=str(self.run_dir), name="rounds", version=f"round_{round_index:03d}")
        return build(self.trainer_cfg, callbacks=self.callbacks(), logger=logger,
                                       default_root_dir=str(self.run_dir), enable_checkpointing=False,
                                       enable_progress_bar=self.progress, enable_model_summary=False)
