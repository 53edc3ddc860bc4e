"""Building one experiment from a composed config: its model with the starting weights, its
tracker and the loop (tests and benchmarks call ``build_loop`` on a config from Hydra's compose API)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src.config.instantiate import build
from src.experiment.console import round_line
from src.experiment.run_dir import result_fingerprint
from src.loop.active_loop import ActiveLearningLoop, SelectionSettings
from src.loop.trainers import TrainerFactory
from src.models.named_baselines import named_baseline_checkpoint
from src.models.weights import WeightSnapshot, load_into
from src.pretraining import make_if_missing
from src.records import RunStore
from src.selection.schedule import steps_per_epoch
from src.selection.scorers import Scorer, build_scorer
from src.tasks import get_task
from src.tracking import Tracker
from src.validate import check_pool

log = logging.getLogger("src.run")


def build_model(
    cfg: DictConfig, datamodule, scorer: Scorer | None = None
) -> tuple[torch.nn.Module, WeightSnapshot]:
    """The model with its starting weights, adapted by ``scorer`` (dropout, a loss-prediction
    module), and the snapshot every round restores."""
    # A seeded construction makes the random init (the start of a scratch model) reproducible.
    torch.manual_seed(int(cfg.model.init.init_seed))
    model = build(cfg.model.module, num_classes=datamodule.num_classes, in_channels=datamodule.channels)
    if cfg.model.init.get("checkpoint"):
        source, key = cfg.model.init.checkpoint, "model.init.checkpoint"
    else:
        source, key = named_baseline_checkpoint(cfg), f"baseline={cfg.baseline.name}"
    if source is not None:
        # another class count: the file's backbone under this run's seeded head (thesis 4.3.3)
        head = load_into(model, source, key=key, new_head=True)
        if head:
            log.info(
                "%s: the file's class head does not fit %d classes; loaded everything else and kept "
                "the seeded init for %s",
                key,
                datamodule.num_classes,
                ", ".join(head),
            )
    if scorer is not None:
        scorer.prepare_model(model, datamodule)
    if cfg.get("fit", {}).get("channels_last"):  # before the snapshot: a reset copies into these tensors
        model = model.to(memory_format=torch.channels_last)
    return model, WeightSnapshot(model)


def make_tracker(cfg: DictConfig) -> Tracker:
    """The tracker of ``cfg.logger``; a W&B group left null becomes the task (and sweep) name."""
    if "group" in cfg.logger and cfg.logger.group is None:
        group = cfg.task_name
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{cfg.task_name}/{Path(hc.sweep.dir).name}"
        return hydra.utils.instantiate(cfg.logger, group=group)
    return hydra.utils.instantiate(cfg.logger)


def build_loop(
    cfg: DictConfig, run_dir: Path, progress: bool = False, tracker: Tracker | None = None
) -> ActiveLearningLoop:
    """Datamodule, model, starting weights and loop from a config that ``validate`` passed (the run
    validates once, before this; here only the selection plan meets the pool the data gave)."""
    task = get_task(cfg.task_type)
    datamodule = build(cfg.dataset)
    datamodule.setup()
    check_pool(cfg, len(datamodule.pool_ids))
    scorer_cfg = OmegaConf.to_container(cfg.scorer, resolve=True)
    scorer = build_scorer(scorer_cfg, ignore=task.scorer_options)
    make_if_missing(cfg)  # a missing named baseline with baseline.make_if_missing: trained first
    model, snapshot = build_model(cfg, datamodule, scorer)
    options = {k: scorer_cfg[k] for k in task.scorer_options if k in scorer_cfg}
    new_trainer = TrainerFactory(
        cfg.trainer,
        cfg.callbacks,
        run_dir,
        progress=progress,
        epoch_logs=not cfg.logger._target_.endswith(".NoTracker"),
        epochs=cfg.fit.epochs,
    )
    fixed_steps = steps_per_epoch(cfg.fit.steps_per_epoch, len(datamodule.pool_ids), datamodule.batch_size)
    loop = ActiveLearningLoop(
        datamodule=datamodule,
        model=model,
        snapshot=snapshot,
        scorer=scorer,
        score_batch=functools.partial(task.score_batch, **options),
        selection=SelectionSettings(**OmegaConf.to_container(cfg.selection, resolve=True)),
        new_trainer=new_trainer,
        seed=cfg.seed,
        store=RunStore(run_dir),
        tracker=tracker,
        steps_per_epoch=fixed_steps,
        progress=progress,
        fingerprint=result_fingerprint(cfg),
        round_line=functools.partial(round_line, task),
    )
    return loop
