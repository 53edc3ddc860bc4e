"""Making a named baseline: training the configured model on ``baseline.dataset`` and saving it
where ``src.models.named_baselines`` (what a named baseline is, its file and key) looks for it.

``python -m src.pretrain`` is its command; an active-learning run calls ``make_if_missing``
before it builds its model, so a missing baseline with ``baseline.make_if_missing`` is made
first (and logged). Building a model never trains one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from src.config.instantiate import build
from src.errors import UserError
from src.models.named_baselines import (
    NO_FILE,
    baseline_datamodule_config,
    baseline_fingerprint,
    baseline_output_problem,
    baseline_path,
    check_pretrainable,
    current_file,
    is_current,
)
from src.models.pretrained import backbone_weights_file
from src.models.weights import WeightSnapshot

log = logging.getLogger("src.pretrain")


def make_if_missing(cfg: DictConfig) -> None:
    """Pretrain the run's named baseline first when ``baseline.make_if_missing`` is set and its
    current file is not there yet (logged); else nothing. A run that starts from its own
    ``model.init.checkpoint`` needs no baseline."""
    node = cfg.get("baseline")
    if node is None or node.get("name") in NO_FILE or not node.get("make_if_missing"):
        return
    if cfg.get("model", {}).get("init", {}).get("checkpoint"):
        return
    path = current_file(cfg) or baseline_path(cfg)
    if is_current(cfg, path):
        return
    log.info(
        "baseline %s: %s is not made yet; making it first (baseline.make_if_missing), then reusing it",
        node.name,
        path,
    )
    pretrain(cfg)


def _fit(cfg: DictConfig, datamodule, model) -> dict[str, float]:
    """Train ``model`` on the whole pool of ``datamodule`` for ``baseline.epochs``; the final metrics."""
    node = cfg.baseline
    datamodule.set_labelled(datamodule.pool_ids, shuffle=True, seed=int(node.get("seed", 0)))
    pl.seed_everything(int(node.get("seed", 0)), workers=True, verbose=False)
    # a held-back part carves its own val from the kept-back items (recipes.split_rows)
    has_val = (
        int(node.dataset.sizes.get("baseline") or 0) > 1
        if node.get("part")
        else int(node.dataset.sizes.get("val") or 0) > 0
    )
    trainer = hydra.utils.instantiate(
        cfg.trainer,
        callbacks=[],
        max_epochs=int(node.epochs),
        min_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **({} if has_val else {"limit_val_batches": 0}),
    )
    log.info(
        "baseline %s: training %s on %d images of %s for %d epochs",
        node.name,
        type(model).__name__,
        len(datamodule.pool_ids),
        datamodule.name,
        node.epochs,
    )
    trainer.fit(model, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def pretrain(cfg: DictConfig, accepted: Callable[[], None] | None = None) -> Path:
    """Train (or reuse) the named baseline and return its file. ``accepted()`` is called once no
    mistake can refuse the command any more (a file is reused, or the training starts)."""
    accepted = accepted or (lambda: None)
    node = cfg.baseline
    check_pretrainable(node)
    path, made = baseline_path(cfg), current_file(cfg)
    if made is not None:
        accepted()
        log.info("baseline %s: reusing %s (same settings)", node.name, made)
        return made
    problem = baseline_output_problem(cfg)  # before hours of training, not after them
    if problem:
        raise UserError(problem)
    # a missing ImageNet file stops here, before thousands of images are read or rendered
    backbone_weights_file(str(cfg.model.module.get("arch")), cfg.model.module.get("weights_backbone"))
    datamodule = build(baseline_datamodule_config(cfg))
    datamodule.setup()
    if len(datamodule.pool_ids) == 0:
        raise UserError(f"baseline={node.name}: baseline.dataset.sizes.pool is 0; nothing to train on")
    torch.manual_seed(int(node.get("seed", 0)))
    module_cfg = cfg.model.module
    if node.get("optimizer") is not None:  # the pretraining's own optimiser settings, e.g. a higher lr
        # resolved first: model.module.optimizer interpolates the optim group
        module_cfg = OmegaConf.merge(
            OmegaConf.to_container(module_cfg, resolve=True), {"optimizer": node.optimizer}
        )
    model = build(module_cfg, num_classes=datamodule.num_classes, in_channels=datamodule.channels)
    accepted()
    started = time.perf_counter()
    metrics = _fit(cfg, datamodule, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    # one temporary file per process: jobs of one sweep may make the same baseline side by side
    tmp = path.with_suffix(f".pt.{os.getpid()}.tmp")
    torch.save({"state_dict": WeightSnapshot(model).state}, tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(
        json.dumps(
            {
                "name": node.name,
                "fingerprint": baseline_fingerprint(cfg),
                "metrics": metrics,
                "classes": list(getattr(datamodule, "class_names", [])),
                "seconds": time.perf_counter() - started,
            },
            indent=1,
        )
    )
    log.info(
        "baseline %s: saved %s (%s)",
        node.name,
        path,
        ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/")),
    )
    return path
