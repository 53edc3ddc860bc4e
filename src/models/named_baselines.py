"""Named baselines (thesis 4.3.3): starting weights pretrained on a dataset of their own.

A named baseline (``baseline=real``, ``baseline=synthetic``) is made by training the
configured model on ``baseline.dataset`` for ``baseline.epochs`` epochs and saved as
``<baseline.dir>/<name>.pt`` with a ``<name>.json`` describing what made it.
Making it again with the same settings reuses the file; changed settings retrain and
replace it. An active-learning run with ``baseline=<name>`` loads the file
(``baseline=untrained`` is the seeded random init and needs none); a missing file is
an error that prints the command which makes it, unless ``baseline.make_if_missing``
is set, which pretrains first (so one multirun can make and compare all baselines).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf

from src.config.instantiate import build
from src.errors import UserError
from src.models.pretrained import backbone_weights_file
from src.models.weights import WeightSnapshot

log = logging.getLogger("src.pretrain")

NO_FILE = (None, "untrained")


def baseline_path(cfg: DictConfig) -> Path:
    return Path(str(cfg.baseline.get("dir") or "baselines")) / f"{cfg.baseline.name}.pt"


def make_command(cfg: DictConfig) -> str:
    extra = " task=detection" if OmegaConf.select(cfg, "task_type") == "detection" else ""
    return f"python -m src.pretrain{extra} baseline={cfg.baseline.name}"


def missing_message(cfg: DictConfig) -> str:
    return (f"baseline={cfg.baseline.name}: {baseline_path(cfg)} does not exist; make it with: {make_command(cfg)} "
            "(same overrides), or pass baseline.make_if_missing=true")


def baseline_fingerprint(cfg: DictConfig) -> dict:
    """What the saved weights depend on: the baseline group and the network's construction."""
    baseline = OmegaConf.to_container(cfg.baseline, resolve=True)
    keep = {"baseline": {k: v for k, v in baseline.items() if k not in ("dir", "make_if_missing")},
            "model": OmegaConf.to_container(cfg.model.module, resolve=True)}
    return json.loads(json.dumps(keep, sort_keys=True))


def baseline_output_problem(cfg: DictConfig) -> str | None:
    """One line when the baseline's files (``<baseline.dir>/<name>.pt`` and ``.json``) could not be
    written, found by trying before any training; None when they can."""
    from src.config.overrides import output_file_problem

    path = baseline_path(cfg)
    where = cfg.baseline.get("dir") or "baselines"
    return output_file_problem("baseline.dir", where, path) or \
        output_file_problem("baseline.dir", where, path.with_suffix(".json"))


def will_pretrain(cfg: DictConfig) -> bool:
    """Whether a run with this config trains its named baseline first (``make_if_missing`` and no
    file made with these settings)."""
    node = cfg.get("baseline")
    return bool(node is not None and node.get("name") not in NO_FILE and node.get("make_if_missing")
                and not _is_current(cfg, baseline_path(cfg)))


def _is_current(cfg: DictConfig, path: Path) -> bool:
    """Whether ``path`` exists and was made with this config's baseline and model settings."""
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return False
    return json.loads(meta.read_text()).get("fingerprint") == baseline_fingerprint(cfg)


def named_baseline_checkpoint(cfg: DictConfig) -> Path | None:
    """The file of the named baseline for an active-learning run, made first when asked; None when unnamed."""
    node = cfg.get("baseline")
    if node is None or node.get("name") in NO_FILE:
        return None
    path = baseline_path(cfg)
    if node.get("make_if_missing") and not _is_current(cfg, path):
        path = pretrain(cfg)
    if not path.is_file():
        raise UserError(missing_message(cfg))
    if not _is_current(cfg, path):
        raise UserError(f"baseline={node.name}: {path} was made with other settings (baseline or model config); "
                        f"make it again with: {make_command(cfg)} (same overrides)")
    log.info("loading baseline %s from %s", node.name, path)
    return path


def _check_pretrainable(node: DictConfig) -> None:
    if node.get("name") in NO_FILE:
        raise UserError(f"baseline={node.get('name')}: nothing to pretrain (it is the model's own init); "
                        "choose a baseline with a dataset, e.g. baseline=real or baseline=synthetic")
    if node.get("dataset") is None:
        raise UserError(f"baseline={node.name}: baseline.dataset is not set (the data the baseline learns from)")


def _fit(cfg: DictConfig, datamodule, model) -> dict[str, float]:
    """Train ``model`` on the whole pool of ``datamodule`` for ``baseline.epochs``; the final metrics."""
    node = cfg.baseline
    datamodule.set_labelled(datamodule.pool_ids, shuffle=True, seed=int(node.get("seed", 0)))
    pl.seed_everything(int(node.get("seed", 0)), workers=True, verbose=False)
    has_val = int(node.dataset.sizes.get("val") or 0) > 0
    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=[], max_epochs=int(node.epochs), min_epochs=1,
                                      logger=False, enable_checkpointing=False, enable_progress_bar=False,
                                      enable_model_summary=False, **({} if has_val else {"limit_val_batches": 0}))
    log.info("baseline %s: training %s on %d images of %s for %d epochs", node.name, type(model).__name__,
             len(datamodule.pool_ids), datamodule.name, node.epochs)
    trainer.fit(model, datamodule=datamodule)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def pretrain(cfg: DictConfig, accepted: Callable[[], None] | None = None) -> Path:
    """Train (or reuse) the named baseline and return its file. ``accepted()`` is called once no
    mistake can refuse the command any more (a file is reused, or the training starts)."""
    accepted = accepted or (lambda: None)
    node = cfg.baseline
    _check_pretrainable(node)
    path = baseline_path(cfg)
    if _is_current(cfg, path):
        accepted()
        log.info("baseline %s: reusing %s (same settings)", node.name, path)
        return path
    problem = baseline_output_problem(cfg)   # before hours of training, not after them
    if problem:
        raise UserError(problem)
    if path.is_file():
        log.info("baseline %s: settings changed since %s was made; training it again", node.name, path)
    # a missing ImageNet file stops here, before thousands of images are read or rendered
    backbone_weights_file(str(cfg.model.module.get("arch")), cfg.model.module.get("weights_backbone"))
    datamodule = build(node.dataset)
    datamodule.setup()
    if len(datamodule.pool_ids) == 0:
        raise UserError(f"baseline={node.name}: baseline.dataset.sizes.pool is 0; nothing to train on")
    torch.manual_seed(int(node.get("seed", 0)))
    module_cfg = cfg.model.module
    if node.get("optimizer") is not None:   # the pretraining's own optimiser settings, e.g. a higher lr
        # resolved first: model.module.optimizer interpolates the optim group
        module_cfg = OmegaConf.merge(OmegaConf.to_container(module_cfg, resolve=True), {"optimizer": node.optimizer})
    model = build(module_cfg, num_classes=datamodule.num_classes, in_channels=datamodule.channels)
    accepted()
    started = time.perf_counter()
    metrics = _fit(cfg, datamodule, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save({"state_dict": WeightSnapshot(model).state}, tmp)
    tmp.replace(path)
    path.with_suffix(".json").write_text(json.dumps(
        {"name": node.name, "fingerprint": baseline_fingerprint(cfg), "metrics": metrics,
         "classes": list(getattr(datamodule, "class_names", [])), "seconds": time.perf_counter() - started},
        indent=1))
    log.info("baseline %s: saved %s (%s)", node.name, path,
             ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items()) if k.startswith("val/")))
    return path
