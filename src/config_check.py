"""Fail-fast validation: every bad value stops the run before any data or training,
with one line that names the key and what is allowed."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from src.errors import UserError
from src.selection.schedule import plan_budgets
from src.selection.scorers import SCORER_NAMES

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


log = logging.getLogger("src.config_check")


class ConfigError(UserError, ValueError):
    """A user-facing configuration mistake: printed as one line, exit status 2."""


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def static_pool_size(cfg: DictConfig) -> int | None:
    """Pool size as the dataset config declares it, when it does (embedded recipes)."""
    sizes = cfg.dataset.get("sizes")
    if sizes is None or sizes.get("pool") is None:
        return None
    return int(sizes.pool) * int(cfg.dataset.get("pool_repeats", 1) or 1)


def validate(cfg: DictConfig, pool_size: int | None = None) -> None:
    """Raise ConfigError for the first invalid value. ``pool_size`` overrides the declared one."""
    def fail(msg: str):
        raise ConfigError(msg)

    if not _is_int(cfg.get("seed")):
        fail(f"seed={cfg.get('seed')!r} must be an integer")
    if cfg.scorer.name not in SCORER_NAMES:
        fail(f"scorer.name={cfg.scorer.name!r} is not a known scorer; allowed: {', '.join(SCORER_NAMES)}")

    if cfg.get("progress") not in ("auto", True, False):
        fail(f"progress={cfg.get('progress')!r}; allowed: auto, true, false")
    sel = cfg.selection
    if not _is_number(sel.pivot) or not 0.0 <= float(sel.pivot) <= 1.0:
        fail(f"selection.pivot={sel.pivot!r} is outside [0, 1] (0 = hardest items, 1 = easiest)")
    budget = OmegaConf.to_object(sel.budget) if isinstance(sel.budget, ListConfig) else sel.budget
    budgets = budget if isinstance(budget, list) else [budget]
    if not budgets or not all(_is_int(b) and b > 0 for b in budgets):
        fail(f"selection.budget={budget!r} must be a positive integer or a list of positive integers")
    if not _is_int(sel.base_size) or sel.base_size < 0:
        fail(f"selection.base_size={sel.base_size!r} must be an integer >= 0")
    if sel.rounds is not None and (not _is_int(sel.rounds) or sel.rounds < 1):
        fail(f"selection.rounds={sel.rounds!r} must be a positive integer or null (until the pool is exhausted)")
    if sel.mode not in ("accumulate", "reselect"):
        fail(f"selection.mode={sel.mode!r}; allowed: accumulate, reselect")
    if not isinstance(sel.shuffle, bool):
        fail(f"selection.shuffle={sel.shuffle!r} must be true or false")
    div = sel.diversity
    if div.labels not in ("predicted", "ground_truth"):
        fail(f"selection.diversity.labels={div.labels!r}; allowed: predicted, ground_truth")
    if div.k is not None and (not _is_int(div.k) or div.k < 1):
        fail(f"selection.diversity.k={div.k!r} must be an integer >= 1 or null (even share)")

    sizes = cfg.dataset.get("sizes")
    if sizes is not None:
        for split in ("pool", "val", "test"):
            v = sizes.get(split)
            if v is not None and (not _is_int(v) or v < (0 if split == "pool" else 1)):  # null: what the data has
                fail(f"dataset.sizes.{split}={v!r} must be an integer >= {0 if split == 'pool' else 1} or null")
    if cfg.dataset.get("pool_repeats") is not None and (not _is_int(cfg.dataset.pool_repeats)
                                                        or cfg.dataset.pool_repeats < 1):
        fail(f"dataset.pool_repeats={cfg.dataset.pool_repeats!r} must be an integer >= 1")
    for key in ("batch_size", "eval_batch_size"):
        v = cfg.dataset.get(key)
        if v is not None and (not _is_int(v) or v < 1):
            fail(f"dataset.{key}={v!r} must be a positive integer")

    pool = pool_size if pool_size is not None else static_pool_size(cfg)
    if pool is not None:
        try:
            plan_budgets(pool, sel.base_size, budget, sel.rounds)
        except ValueError as err:
            fail(str(err))
        capped = budget_capped_notice(pool, sel.base_size, budget, sel.rounds)
        if capped and pool_size is not None:     # the real pool: said once, at start-up
            log.warning(capped)

    cb = cfg.callbacks
    if cb.mode not in ("min", "max"):
        fail(f"callbacks.mode={cb.mode!r}; allowed: min (for a loss), max (for an accuracy)")
    if not re.fullmatch(r"val/[\w/]+", str(cb.monitor)):
        fail(f"callbacks.monitor={cb.monitor!r} must be a validation metric, e.g. val/loss or val/acc_top1")
    if cb.get("early_stopping") is not None:
        patience = cb.early_stopping.get("patience")
        if not _is_int(patience) or patience < 0:
            fail(f"callbacks.early_stopping.patience={patience!r} must be an integer >= 0")

    tr = cfg.trainer
    if not _is_int(tr.get("max_epochs")) or tr.max_epochs < 1:
        fail(f"trainer.max_epochs={tr.get('max_epochs')!r} must be an integer >= 1")
    spe = tr.get("steps_per_epoch")
    if spe is not None and (not _is_int(spe) or spe < 1):
        fail(f"trainer.steps_per_epoch={spe!r} must be a positive integer or null (one pass over the labelled set)")

    lg = cfg.logger
    if "mode" in lg and lg.mode not in ("auto", "online", "offline", "disabled"):
        fail(f"logger.mode={lg.mode!r}; allowed: auto, online, offline, disabled")
    if cfg.model.baseline.get("checkpoint"):
        path = Path(str(cfg.model.baseline.checkpoint))
        if not path.is_file():
            fail(f"model.baseline.checkpoint={path}: no such file")
    _check_detection(cfg, fail)


def budget_capped_notice(pool: int, base_size: int, budget, rounds) -> str | None:
    """One line when an int budget exceeds what the pool has left (rounds=null), which
    shrinks the schedule to a single selection of the whole rest; else None."""
    available = pool - base_size
    if not _is_int(budget) or rounds is not None or not 0 < available < budget:
        return None
    return (f"selection.budget={budget} is larger than the {available} pool items left after a base set of "
            f"{base_size}: the run has {1 + int(base_size > 0)} round(s) and selects all {available} at once "
            f"(no learning curve); lower selection.budget or enlarge the pool (dataset.sizes.pool)")


def _check_detection(cfg: DictConfig, fail) -> None:
    """Detection's own keys: the scorer's aggregation, the model/dataset pairing, a named baseline."""
    detector = "detector" in str(cfg.model.module.get("_target_"))
    detection_data = "detection" in str(cfg.dataset.get("_target_"))
    if detector != detection_data:
        fail(f"model={cfg.model.module._target_} does not fit dataset={cfg.dataset._target_}; for detection "
             "pass task=detection (or a detection model with a detection dataset)")
    sc = cfg.scorer
    if "aggregate" in sc and sc.aggregate not in ("mean", "max", "sum"):
        fail(f"scorer.aggregate={sc.aggregate!r}; allowed: mean, max, sum")
    if "top_k" in sc and (not _is_int(sc.top_k) or sc.top_k < 1):
        fail(f"scorer.top_k={sc.top_k!r} must be a positive integer")
    for key in ("score_threshold", "nms_iou"):
        if key in sc and (not _is_number(sc[key]) or not 0.0 <= float(sc[key]) <= 1.0):
            fail(f"scorer.{key}={sc[key]!r} must be a number in [0, 1]")
    if detector:     # backbone weights must already be in the hub cache: nothing downloads
        from src.models.pretrained import backbone_weights_file

        backbone_weights_file(str(cfg.model.module.arch), cfg.model.module.get("weights_backbone"))
    node = cfg.get("baseline")
    if node is not None and node.get("name") not in (None, "untrained") and not node.get("make_if_missing") \
            and not cfg.model.baseline.get("checkpoint"):
        from src.pretrain import baseline_path, make_command

        if not baseline_path(cfg).is_file():
            fail(f"baseline={node.name}: {baseline_path(cfg)} does not exist; make it with: {make_command(cfg)} "
                 "(same overrides), or pass baseline.make_if_missing=true")


_GROUP_OVERRIDE = re.compile(r"^(?:\+{1,2})?([a-z_]+)=(.*)$")


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir()}


def check_group_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One-line message for a ``group=option`` override naming no file of that group, else None.

    Hydra's own message for this spans several lines and a stack-trace hint; this
    check runs first so a typo such as ``scorer=entropie`` reads like every other
    config error. Sweeps (``scorer=a,b``) are checked option by option.
    """
    groups = config_groups(conf_dir)
    for arg in argv:
        m = _GROUP_OVERRIDE.match(arg)
        if not m or m.group(1) not in groups or m.group(1) == "hydra":
            continue
        group, value = m.group(1), m.group(2)
        if value in ("null", "") or any(c in value for c in "()[]{}$"):
            continue   # sweep functions, interpolations, removal: leave them to Hydra
        for option in value.split(","):
            if option not in groups[group]:
                return (f"{group}={option!r} is not a known option of the {group!r} config group; "
                        f"allowed: {', '.join(groups[group])}")
    return None


def exit_on_unknown_group_option(argv: Sequence[str]) -> None:
    """Entry points call this before Hydra: a typo in ``group=option`` exits 2 with one line."""
    import sys

    message = check_group_overrides(argv)
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
