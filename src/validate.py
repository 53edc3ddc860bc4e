"""Fail-fast validation: every bad value stops the run before any data or training,
with one line that names the key and what is allowed (a ``UserError``)."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.data.datamodule import SHUFFLE_MODES
from src.data.recipes import PARTS
from src.errors import UserError
from src.models.named_baselines import (
    NO_FILE,
    baseline_output_problem,
    baseline_path,
    current_file,
    missing_message,
    will_pretrain,
)
from src.selection import policy
from src.selection.detection_scorers import AGGREGATES
from src.selection.schedule import HALF_POOL, PRUNE, plan_selections
from src.selection.scorers import build_scorer, scorer_names
from src.tasks import get_task

log = logging.getLogger("src.validate")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int_or_null(key: str, value, what_null: str) -> None:
    if value is not None and (not _is_int(value) or value < 1):
        raise UserError(f"{key}={value!r} must be a positive integer or null ({what_null})")


def static_pool_size(cfg: DictConfig) -> int | None:
    """Pool size as the dataset config declares it, when it does (embedded recipes)."""
    sizes = cfg.dataset.get("sizes")
    if sizes is None or sizes.get("pool") is None:
        return None
    return int(sizes.pool) * int(cfg.dataset.get("pool_repeats", 1) or 1)


def validate(cfg: DictConfig) -> None:
    """Raise UserError for the first invalid value, before anything is built (once per run: the
    entry point calls it; ``check_pool`` repeats only the pool's part once the pool is known)."""
    if not _is_int(cfg.get("seed")):
        raise UserError(f"seed={cfg.get('seed')!r} must be an integer")
    if cfg.get("progress") not in ("auto", True, False):
        raise UserError(f"progress={cfg.get('progress')!r}; allowed: auto, true, false")
    if cfg.scorer.name not in scorer_names():
        raise UserError(
            f"scorer.name={cfg.scorer.name!r} is not a known scorer (conf/scorer/<name>.yaml); "
            f"allowed: {', '.join(scorer_names())}"
        )
    _check_selection(cfg.selection)
    source = cfg.get("source")
    if source is not None and source.get("name") == "folders" and not source.get("roots"):
        raise UserError(
            "source.roots is empty: source=folders needs the folder roots, e.g. "
            "'source.roots=[/data/studio,/data/phone]' (the first is the V2 role, all of them Mixed)"
        )
    _check_dataset(cfg.dataset)
    pool = static_pool_size(cfg)
    if pool is not None:
        _check_plan(cfg, pool)
    _check_training(cfg)
    lg = cfg.logger
    if "mode" in lg and lg.mode not in ("auto", "online", "offline", "disabled"):
        raise UserError(f"logger.mode={lg.mode!r}; allowed: auto, online, offline, disabled")
    _check_task(cfg)
    _check_starting_weights(cfg)


def check_pool(cfg: DictConfig, pool_size: int) -> None:
    """The selection plan against the pool the datamodule built (a folder's pool is known only
    then); says once when the rounds cannot all be filled."""
    _check_plan(cfg, pool_size)
    if cfg.selection.mode != PRUNE:
        capped = budget_capped_notice(
            pool_size, cfg.selection.base_size, _budget(cfg.selection), cfg.selection.rounds
        )
        if capped:
            log.warning(capped)


def _budget(sel: DictConfig):
    """``selection.budget`` as plain Python (int or list)."""
    return OmegaConf.to_object(sel.budget) if isinstance(sel.budget, ListConfig) else sel.budget


def _check_plan(cfg: DictConfig, pool: int) -> None:
    try:
        plan_selections(
            cfg.selection.mode,
            pool,
            cfg.selection.base_size,
            _budget(cfg.selection),
            cfg.selection.rounds,
            cfg.selection.get("fraction"),
        )
    except ValueError as err:
        raise UserError(str(err)) from None


def _check_selection(sel: DictConfig):
    """The ``selection`` group; returns the budget as plain Python (int or list)."""
    if not _is_number(sel.pivot) or not 0.0 <= float(sel.pivot) <= 1.0:
        raise UserError(f"selection.pivot={sel.pivot!r} is outside [0, 1] (0 = hardest items, 1 = easiest)")
    budget = _budget(sel)
    budgets = budget if isinstance(budget, list) else [budget]
    if not budgets or not all(_is_int(b) and b > 0 for b in budgets):
        raise UserError(
            f"selection.budget={budget!r} must be a positive integer or a list of positive integers"
        )
    if not _is_int(sel.base_size) or sel.base_size < 0:
        raise UserError(f"selection.base_size={sel.base_size!r} must be an integer >= 0")
    _positive_int_or_null("selection.rounds", sel.rounds, "until the pool is exhausted")
    if sel.mode not in policy.MODES:
        raise UserError(f"selection.mode={sel.mode!r}; allowed: {', '.join(policy.MODES)}")
    fraction = sel.get("fraction")
    if fraction is not None:
        if not _is_number(fraction) or not 0.0 < float(fraction) <= 1.0:
            raise UserError(
                f"selection.fraction={fraction!r} must be a number in (0, 1] (the share of the "
                "labelled set a prune round keeps) or null (selection.budget items)"
            )
        if sel.mode != PRUNE:
            raise UserError(
                f"selection.fraction={fraction!r} applies to selection.mode=prune only; "
                f"selection.mode={sel.mode} adds selection.budget items: set selection.fraction=null"
            )
    # a boolean from a yaml of the earlier releases reads as epoch / none (the command line is rewritten
    # with a deprecation line: src.config.overrides.RENAMED_VALUES)
    if not isinstance(sel.shuffle, bool) and sel.shuffle not in SHUFFLE_MODES:
        raise UserError(
            f"selection.shuffle={sel.shuffle!r}; allowed: round (once after each selection step, "
            "the thesis), epoch (every epoch), none (selection order)"
        )
    div = sel.diversity
    if div.labels not in ("predicted", "ground_truth"):
        raise UserError(f"selection.diversity.labels={div.labels!r}; allowed: predicted, ground_truth")
    _positive_int_or_null("selection.diversity.k", div.k, "even share")
    return budget


def _check_dataset(ds: DictConfig) -> None:
    sizes = ds.get("sizes")
    if sizes is not None:
        for split in ("pool", "val", "test"):
            v, least = sizes.get(split), (0 if split == "pool" else 1)
            if v is not None and (not _is_int(v) or v < least):  # null: what the data has
                raise UserError(f"dataset.sizes.{split}={v!r} must be an integer >= {least} or null")
        v = sizes.get("baseline")
        if v is not None and (not _is_int(v) or v < 0):
            raise UserError(
                f"dataset.sizes.baseline={v!r} must be an integer >= 0 (items kept back for "
                "baseline=held_back; 0 = none)"
            )
    if ds.get("part") is not None and ds.part not in PARTS:
        raise UserError(f"dataset.part={ds.part!r}; allowed: {', '.join(PARTS)}")
    if ds.get("pool_repeats") is not None and (not _is_int(ds.pool_repeats) or ds.pool_repeats < 1):
        raise UserError(f"dataset.pool_repeats={ds.pool_repeats!r} must be an integer >= 1")
    for key in ("batch_size", "eval_batch_size"):
        v = ds.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            raise UserError(f"dataset.{key}={v!r} must be a positive integer")
    # the networks take grey or RGB input only; checked before any image is decoded
    if "channels" in ds and (not _is_int(ds.channels) or ds.channels not in (1, 3)):
        raise UserError(
            f'dataset.channels={ds.channels!r}; allowed: 1 (grey, decoded as PIL\'s "L") or 3 (RGB)'
        )


def _check_training(cfg: DictConfig) -> None:
    """The ``callbacks``, ``trainer`` and ``fit`` groups."""
    cb = cfg.callbacks
    if cb.mode not in ("min", "max"):
        raise UserError(f"callbacks.mode={cb.mode!r}; allowed: min (for a loss), max (for an accuracy)")
    if not re.fullmatch(r"val/[\w/]+", str(cb.monitor)):
        raise UserError(
            f"callbacks.monitor={cb.monitor!r} must be a validation metric, e.g. val/loss or val/acc_top1"
        )
    check_counts(cfg)
    if not isinstance(cfg.fit.get("channels_last", False), bool):
        raise UserError(f"fit.channels_last={cfg.fit.channels_last!r}; allowed: true or false")


# Lightning Trainer arguments that count epochs, steps or batches: key -> (least value, what else is
# allowed, spelled for the message). Lightning reads some negative values as "no limit"
# (max_epochs=-1 trains forever), so a count is checked before any Trainer is built.
TRAINER_COUNTS = {
    "max_epochs": (1, ()),
    "min_epochs": (0, (None,)),
    "max_steps": (1, (-1,)),  # -1: Lightning's "no step limit" (its default)
    "min_steps": (0, (None,)),
    "check_val_every_n_epoch": (1, (None,)),
    "log_every_n_steps": (1, (None,)),
    "num_sanity_val_steps": (0, (None, -1)),  # -1: all validation batches
    "accumulate_grad_batches": (1, ()),
    "reload_dataloaders_every_n_epochs": (0, ()),
}
# keys of a callback config that count epochs or steps (EarlyStopping's patience, ModelCheckpoint's
# every_n_epochs, ...): integers >= 0, and what else each allows
CALLBACK_COUNTS = {
    "patience": (),
    "min_epochs": (None,),
    "max_epochs": (None,),
    "min_steps": (None,),
    "max_steps": (None,),
    "every_n_epochs": (None,),
    "every_n_train_steps": (None,),
}
# limit_*_batches: an integer count or a fraction of the loader; training needs some batches
BATCH_LIMITS = {
    "limit_train_batches": 1,
    "limit_val_batches": 0,
    "limit_test_batches": 0,
    "limit_predict_batches": 0,
}


def _count(key: str, value, least: int, also=()) -> None:
    """UserError unless ``value`` is an integer >= ``least`` or one of ``also``."""
    if any(value is a or (_is_int(value) and value == a) for a in also):
        return
    if not _is_int(value) or value < least:
        extra = "".join(f" or {'null' if a is None else a}" for a in also)
        raise UserError(f"{key}={value!r} must be an integer >= {least}{extra}")


def check_counts(cfg: DictConfig) -> None:
    """Every epoch, step and batch count of the ``trainer``, ``fit``, ``callbacks`` and ``baseline``
    groups, before anything is built: the one check of them for ``src.run`` and ``src.pretrain``."""
    tr = cfg.trainer
    for key, (least, also) in TRAINER_COUNTS.items():
        if key in tr or key == "max_epochs":
            _count(f"trainer.{key}", tr.get(key), least, also)
    for key, least in BATCH_LIMITS.items():
        value = tr.get(key)
        if value is None or (_is_int(value) and value >= least):
            continue
        if not (isinstance(value, float) and (0.0 < value <= 1.0 or (least == 0 and value == 0.0))):
            raise UserError(
                f"trainer.{key}={value!r} must be a number of batches >= {least} or a fraction "
                f"in {'(0' if least else '[0'}, 1] of them"
            )
    fit = cfg.get("fit") or {}
    _positive_int_or_null("fit.epochs", fit.get("epochs"), "until early stopping, at most trainer.max_epochs")
    if fit.get("epochs") is None and tr.get("min_epochs") is not None and tr.min_epochs > tr.max_epochs:
        raise UserError(f"trainer.min_epochs={tr.min_epochs} is above trainer.max_epochs={tr.max_epochs}")
    steps = fit.get("steps_per_epoch")
    if steps != HALF_POOL and steps is not None and (not _is_int(steps) or steps < 1):
        raise UserError(
            f"fit.steps_per_epoch={steps!r}; allowed: a positive integer, {HALF_POOL} (half the "
            "selection pool in batches) or null (one pass over the labelled set)"
        )
    for name, node in (cfg.get("callbacks") or {}).items():
        if not OmegaConf.is_dict(node):
            continue
        for key, also in CALLBACK_COUNTS.items():
            if key in node:
                _count(f"callbacks.{name}.{key}", node.get(key), 0, also)
        if "min_delta" in node and (not _is_number(node.min_delta) or node.min_delta < 0):
            raise UserError(f"callbacks.{name}.min_delta={node.min_delta!r} must be a number >= 0")
    _check_baseline_counts(cfg.get("baseline"))
    _check_baseline_part(cfg)
    _check_baseline_source_apart(cfg)


def _check_baseline_part(cfg: DictConfig) -> None:
    """A baseline that learns from a part of the run's recipe (``baseline.part``, held_back) needs a
    classification recipe that keeps items back (``dataset.sizes.baseline``)."""
    node = cfg.get("baseline")
    part = node.get("part") if node is not None else None
    if part is None or node.get("name") in NO_FILE:
        return
    if part not in PARTS or part == "main":
        raise UserError(
            f"baseline.part={part!r}; allowed: baseline (the items the recipe keeps back) or null"
        )
    if cfg.get("task_type") != "classification":
        raise UserError(
            f"baseline={node.name} learns from the items a classification recipe keeps back; "
            "for task=detection use baseline=real, synthetic or untrained"
        )
    kept = (node.get("dataset") or {}).get("sizes", {}).get("baseline")
    if not _is_int(kept) or kept < 1:
        raise UserError(
            f"baseline={node.name}: dataset.sizes.baseline={kept!r} keeps no items back to learn from; "
            "set dataset.sizes.baseline (e.g. 1000; they are taken out of the sources before "
            "pool, val and test are drawn), or choose baseline=none"
        )


def _check_baseline_source_apart(cfg: DictConfig) -> None:
    """A baseline that learns from a folder (``baseline.dataset.root``) needs one, and other images
    than the run's: neither root may lie inside the other (symlinks resolved)."""
    node = cfg.get("baseline")
    dataset = node.get("dataset") if node is not None and node.get("name") not in NO_FILE else None
    if dataset is None or "root" not in dataset:
        return
    if not dataset.get("root"):
        raise UserError(
            f"baseline={node.name}: baseline.dataset.root is not set; name the folder the baseline "
            "learns from, e.g. baseline.dataset.root=/data/source"
        )
    run_root = cfg.dataset.get("root") if "root" in cfg.dataset else None
    if run_root:
        a, b = Path(str(dataset.root)).resolve(), Path(str(run_root)).resolve()
        if a == b or a in b.parents or b in a.parents:
            raise UserError(
                f"baseline.dataset.root={dataset.root} overlaps dataset.root={run_root}: the baseline "
                "must learn from other images than the run's pool, val and test; to learn from a "
                "part of the run's own folder use baseline=held_back dataset.sizes.baseline=<n>"
            )


def _check_baseline_counts(node) -> None:
    """The ``baseline`` group: a named baseline trains ``baseline.epochs`` >= 1 epochs on its dataset."""
    if node is None:
        return
    named = node.get("name") not in NO_FILE
    _count("baseline.epochs", node.get("epochs"), 1 if named else 0)
    if not _is_int(node.get("seed", 0)):
        raise UserError(f"baseline.seed={node.get('seed')!r} must be an integer")
    dataset = node.get("dataset")
    if named and dataset is not None:
        sizes = dataset.get("sizes") or {}
        for split, least in (("pool", 1), ("val", 0), ("test", 0)):
            v = sizes.get(split)
            if v is not None and (not _is_int(v) or v < least):
                raise UserError(f"baseline.dataset.sizes.{split}={v!r} must be an integer >= {least} or null")
        for key in ("batch_size", "eval_batch_size"):
            v = dataset.get(key)
            if v is not None and (not _is_int(v) or v < 1):
                raise UserError(f"baseline.dataset.{key}={v!r} must be a positive integer")


def check_pretraining(cfg: DictConfig) -> None:
    """What ``src.pretrain`` checks before anything is built: the counts, with the same check as
    ``src.run`` (``check_counts``). Whether the baseline's files can be written is checked by
    ``src.pretraining.pretrain`` once it knows that it trains (a current file is reused)."""
    check_counts(cfg)


def _check_task(cfg: DictConfig) -> None:
    """The model and the dataset belong to ``task_type``; the scorer's task options are valid."""
    task = get_task(cfg.task_type)
    for key, node, base in (
        ("model.module", cfg.model.module, task.module_class),
        ("dataset", cfg.dataset, task.datamodule_class),
    ):
        target = node.get("_target_")
        try:
            cls = hydra.utils.get_object(str(target))
        except Exception as err:  # an unimportable target: name it, whatever the import raised
            raise UserError(f"{key}._target_={target!r} cannot be imported ({type(err).__name__})") from None
        if isinstance(cls, type) and not issubclass(cls, hydra.utils.get_class(base)):
            raise UserError(
                f"{key}._target_={target} is not a {task.name} {key.split('.')[0]} "
                f"(task_type={task.name}); for detection pass task=detection"
            )
    sc = cfg.scorer
    scorer = build_scorer(OmegaConf.to_container(sc, resolve=True), ignore=task.scorer_options)
    scorer.check(task.name, task.provides, cfg.selection)
    check_detection_scorer_options({k: sc[k] for k in task.scorer_options if k in sc})


def check_detection_scorer_options(options: dict) -> None:
    """One line for a bad value among the detection scorers' options present in ``options``."""
    if "aggregate" in options and options["aggregate"] not in AGGREGATES:
        raise UserError(f"scorer.aggregate={options['aggregate']!r}; allowed: {', '.join(AGGREGATES)}")
    if "top_k" in options and (not _is_int(options["top_k"]) or options["top_k"] < 1):
        raise UserError(f"scorer.top_k={options['top_k']!r} must be a positive integer")
    for key in ("score_threshold", "nms_iou"):
        if key in options and (not _is_number(options[key]) or not 0.0 <= float(options[key]) <= 1.0):
            raise UserError(f"scorer.{key}={options[key]!r} must be a number in [0, 1]")


def budget_capped_notice(pool: int, base_size: int, budget, rounds) -> str | None:
    """One line when an int budget exceeds what the pool has left (rounds=null), which
    shrinks the schedule to a single selection of the whole rest; else None."""
    available = pool - base_size
    if not _is_int(budget) or rounds is not None or not 0 < available < budget:
        return None
    return (
        f"selection.budget={budget} is larger than the {available} pool items left after a base set of "
        f"{base_size}: the run has {1 + int(base_size > 0)} round(s) and selects all {available} at once "
        f"(no learning curve); lower selection.budget or enlarge the pool (dataset.sizes.pool)"
    )


def _check_starting_weights(cfg: DictConfig) -> None:
    """``model.init.checkpoint`` exists; a named baseline exists or will be made; torchvision
    backbone weights are already in the hub cache (nothing downloads)."""
    module = cfg.model.module
    if "weights_backbone" in module:
        from src.models.pretrained import backbone_weights_file

        backbone_weights_file(str(module.get("arch")), module.get("weights_backbone"))
    checkpoint = cfg.model.init.get("checkpoint")
    if checkpoint and not Path(str(checkpoint)).is_file():
        raise UserError(f"model.init.checkpoint={checkpoint}: no such file")
    node = cfg.get("baseline")
    if node is not None and node.get("name") not in NO_FILE and not checkpoint:
        if not node.get("make_if_missing") and current_file(cfg) is None and not baseline_path(cfg).is_file():
            raise UserError(missing_message(cfg))
        problem = will_pretrain(cfg) and baseline_output_problem(
            cfg
        )  # made first: its files must be writable
        if problem:
            raise UserError(problem)
