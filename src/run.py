"""Entry point: ``python -m src.run [overrides]`` runs one active-learning experiment.

Hydra composes ``conf/config.yaml`` with the overrides; the config is validated
before anything is built; the datamodule, model and baseline are instantiated; the
outer loop runs its rounds and writes everything under the run directory
(``hydra.run.dir`` / ``hydra.sweep.dir``): rounds.jsonl, state.json, summary.json,
per-round epoch logs and the W&B files.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sys
from pathlib import Path

# Quieter start-up: these are set before the heavy imports read them.
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("PYTORCH_LIGHTNING_DISABLE_TIPS", "1")

import hydra  # noqa: E402
import hydra.errors  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from hydra.types import RunMode  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

import src.config.resolvers  # noqa: E402,F401  (registers the config resolvers)
from src.config_check import ConfigError, validate  # noqa: E402
from src.errors import UserError  # noqa: E402
from src.launch import prepare_job  # noqa: E402
from src.loop.records import RunStore  # noqa: E402

log = logging.getLogger("src.run")


# -- building ----------------------------------------------------------------------------
def build_model(cfg: DictConfig, datamodule):
    import torch

    from src.models.baseline import Baseline, load_into

    # A seeded construction makes the random init (the baseline of a scratch model) reproducible.
    torch.manual_seed(int(cfg.model.baseline.init_seed))
    model = hydra.utils.instantiate(cfg.model.module, num_classes=datamodule.num_classes,
                                    in_channels=datamodule.channels)
    from src.pretrain import named_baseline_checkpoint

    checkpoint = cfg.model.baseline.get("checkpoint") or named_baseline_checkpoint(cfg)
    if checkpoint:
        load_into(model, checkpoint)
    return model, Baseline(model)


def lightning_trainer_cfg(cfg: DictConfig) -> DictConfig:
    """``cfg.trainer`` without the keys that are not pytorch_lightning.Trainer arguments."""
    return OmegaConf.masked_copy(cfg.trainer, [k for k in cfg.trainer if k != "steps_per_epoch"])


def make_tracker(cfg: DictConfig):
    """The tracker of ``cfg.logger``; a W&B group left null becomes the task (and sweep) name."""
    if "group" in cfg.logger and cfg.logger.group is None:
        group = cfg.task_name
        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            group = f"{cfg.task_name}/{Path(hc.sweep.dir).name}"
        return hydra.utils.instantiate(cfg.logger, group=group)
    return hydra.utils.instantiate(cfg.logger)


def result_fingerprint(cfg: DictConfig) -> dict:
    """The settings a resumed run must share with the original: all that changes results."""
    # resolved in the whole config: data roots interpolate paths.*, which is not kept here
    resolved = OmegaConf.to_container(cfg, resolve=True)
    keep = {k: resolved[k] for k in ("seed", "source", "dataset", "model", "scorer", "selection", "trainer",
                                     "callbacks", "baseline") if k in resolved}
    flat = {}

    def walk(prefix, node):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node

    walk("", keep)
    return flat


def format_table(records: list[dict]) -> str:
    cols = [("round", "round", "{}"), ("labelled", "n_labelled", "{}"), ("epochs", "epochs", "{}"),
            ("test loss", "test/loss", "{:.4f}"), ("top-1", "test/acc_top1", "{:.4f}"),
            ("top-5", "test/acc_top5", "{:.4f}"), ("top-20", "test/acc_top20", "{:.4f}"),
            ("mAP", "test/map", "{:.4f}"), ("mAP@.5", "test/map_50", "{:.4f}"),
            ("select s", "select_seconds", "{:.1f}"), ("fit s", "fit_seconds", "{:.1f}")]
    cols = [c for c in cols if any(c[1] in r for r in records)]
    rows = [[c[0] for c in cols]] + [[c[2].format(r[c[1]]) if c[1] in r else "-" for c in cols] for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# -- the experiment --------------------------------------------------------------------------
def quiet_libraries() -> None:
    """Keep the console to our round lines: Lightning's per-Trainer banners repeat every round."""
    import warnings

    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning_fabric.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*treespec, LeafSpec.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=r".*Experiment logs directory .* exists and is not empty.*")


def run_experiment(cfg: DictConfig) -> dict:
    prepare_job(cfg)   # a sweep job's thread share and GPU; a requeued cluster job resumes
    validate(cfg)
    quiet_libraries()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    store = RunStore(run_dir)
    if store.exists() and not cfg.resume:
        raise ConfigError(f"{run_dir} already holds a run; pass resume=true to continue it, "
                          "or choose another hydra.run.dir / hydra.sweep.dir")
    if store.exists() and (run_dir / "summary.json").exists():
        log.info("%s is already complete; nothing to do", run_dir)
        # a re-submitted sweep passes over its finished jobs: no data, model or W&B run again
        return json.loads((run_dir / "summary.json").read_text())

    from src.loop.active_loop import curve_summary
    from src.loop.records import write_json_atomic

    progress = sys.stderr.isatty() if cfg.progress == "auto" else bool(cfg.progress)
    loop = build_loop(cfg, run_dir, progress=progress)   # ConfigError before anything trains

    id_file = run_dir / "run_id"
    run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file.write_text(run_id)

    loop.tracker = make_tracker(cfg)
    loop.tracker.datamodule = loop.dm     # images and labels for the tracker's selection panels
    loop.tracker.start(OmegaConf.to_container(cfg, resolve=True), run_dir, run_id)
    log.info("run %s: %s, %d pool items, %d rounds, budgets %s -> %s", cfg.run_name, loop.dm.name,
             len(loop.pool_ids), loop.n_rounds, loop.budgets, run_dir)
    records, failed = [], True
    try:
        records = loop.run()
        failed = False
    finally:
        summary = curve_summary(records)
        loop.tracker.finish(summary, failed=failed)
    write_json_atomic(run_dir / "summary.json", summary)
    log.info("per-round results:\n%s", format_table(records))
    log.info("results: %s (rounds.jsonl, summary.json)%s", run_dir,
             f"; tracker: {loop.tracker.location}" if loop.tracker.location else "")
    return summary


def build_loop(cfg: DictConfig, run_dir: Path, progress: bool = False):
    """Datamodule, model, baseline and loop from a composed config; data errors become ConfigError."""
    from src.loop.active_loop import ActiveLearningLoop, SelectionSettings
    from src.tracking import NoTracker

    try:
        datamodule = hydra.utils.instantiate(cfg.dataset)
        datamodule.setup()
        validate(cfg, pool_size=len(datamodule.pool_ids))
        # an optional capability: classification datamodules plot their splits' class counts
        if hasattr(datamodule, "save_class_distribution"):
            datamodule.save_class_distribution(run_dir, title=f"{cfg.dataset.name} ({cfg.source.name})")
        model, baseline = build_model(cfg, datamodule)
        trainer_cfg = lightning_trainer_cfg(cfg)
        loop = ActiveLearningLoop(
            datamodule=datamodule, model=model, baseline=baseline, scorer_name=cfg.scorer.name,
            scorer_options={k: v for k, v in OmegaConf.to_container(cfg.scorer, resolve=True).items()
                            if k != "name"},
            selection=SelectionSettings(**OmegaConf.to_container(cfg.selection, resolve=True)),
            trainer_cfg=trainer_cfg, callbacks_cfg=cfg.callbacks, seed=cfg.seed, run_dir=run_dir,
            tracker=NoTracker(), steps_per_epoch=cfg.trainer.get("steps_per_epoch"), progress=progress,
            epoch_logs=not cfg.logger._target_.endswith(".NoTracker"), fingerprint=result_fingerprint(cfg))
        state = loop.store.read_state()
        if state is not None:
            loop.check_fingerprint(state)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise ConfigError(str(err)) from err
    except hydra.errors.InstantiationException as err:
        # a constructor's own ValueError (a bad dataset or model setting) reads as a config error
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        if isinstance(err.__cause__, (ValueError, FileNotFoundError, KeyError)):
            raise ConfigError(str(err.__cause__)) from err
        raise
    return loop


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        summary = run_experiment(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return summary.get("auc/test/acc_top1", summary.get("auc/test/map"))


def cli() -> None:
    from src.config_check import exit_on_unknown_group_option

    exit_on_unknown_group_option(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
