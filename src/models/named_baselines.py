"""Named baselines (thesis 4.3.3): starting weights pretrained on a dataset of their own.

A named baseline (``baseline=real``, ``baseline=synthetic`` for detection,
``baseline=held_back`` for classification) is made by training the configured model on
``baseline.dataset`` (its ``baseline.part``, when set: ``held_back`` learns from the items
the run's own recipe keeps back from pool, val and test) for ``baseline.epochs`` epochs.
It is saved as ``<baseline.dir>/<name>-<key>.pt`` with a ``.json`` beside it saying what
made it; ``<key>`` is a hash of those settings (``baseline_fingerprint``), so baselines
made with other settings (another class list, another model, another dataset) live side
by side and a run never overwrites the one another run needs. Making it again with the
same settings reuses the file. An active-learning run with ``baseline=<name>`` loads the
file (``baseline=untrained`` is the seeded random init and needs none); a missing file
is an error that prints the command which makes it, unless ``baseline.make_if_missing``
is set, which pretrains first (so one multirun can make and compare all baselines). This
module only names, fingerprints and finds the files; training one is ``src/pretraining.py``.
When the baseline's class count differs from the run's, everything but the class head
is loaded (``weights.load_into``, thesis 4.3.3: a baseline as backbone).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from src.errors import UserError

log = logging.getLogger("src.pretrain")

NO_FILE = (None, "untrained")


def baseline_path(cfg: DictConfig) -> Path:
    """``<baseline.dir>/<name>-<key>.pt``, the key a hash of what the weights depend on."""
    digest = hashlib.sha256(json.dumps(baseline_fingerprint(cfg), sort_keys=True).encode()).hexdigest()[:10]
    return Path(str(cfg.baseline.get("dir") or "baselines")) / f"{cfg.baseline.name}-{digest}.pt"


def make_command(cfg: DictConfig) -> str:
    extra = " task=detection" if OmegaConf.select(cfg, "task_type") == "detection" else ""
    return f"python -m src.pretrain{extra} baseline={cfg.baseline.name}"


def missing_message(cfg: DictConfig) -> str:
    return (
        f"baseline={cfg.baseline.name}: {baseline_path(cfg)} does not exist; make it with: {make_command(cfg)} "
        "(same overrides), or pass baseline.make_if_missing=true"
    )


# dataset keys that do not change which items a held-back part holds or how they are read
_NOT_IN_HELD_BACK = ("eval_batch_size", "num_workers", "pin_memory", "part")
_RUN_SPLITS = ("pool", "val", "test")


def baseline_fingerprint(cfg: DictConfig) -> dict:
    """What the saved weights depend on: the baseline group and the network's construction.
    For a part of the run's recipe (``baseline.part``), the run's own split sizes are left
    out: the kept-back items do not depend on them, so every pool size shares one baseline."""
    baseline = OmegaConf.to_container(cfg.baseline, resolve=True)
    keep = {
        "baseline": {k: v for k, v in baseline.items() if k not in ("dir", "make_if_missing")},
        "model": OmegaConf.to_container(cfg.model.module, resolve=True),
    }
    dataset = keep["baseline"].get("dataset")
    if baseline.get("part") and isinstance(dataset, dict):
        dataset = {k: v for k, v in dataset.items() if k not in _NOT_IN_HELD_BACK}
        dataset["sizes"] = {k: v for k, v in (dataset.get("sizes") or {}).items() if k not in _RUN_SPLITS}
        keep["baseline"]["dataset"] = dataset
    return json.loads(json.dumps(keep, sort_keys=True))


def baseline_output_problem(cfg: DictConfig) -> str | None:
    """One line when the baseline's files (``<baseline.dir>/<name>.pt`` and ``.json``) could not be
    written, found by trying before any training; None when they can."""
    from src.config.overrides import output_file_problem

    path = baseline_path(cfg)
    where = cfg.baseline.get("dir") or "baselines"
    return output_file_problem("baseline.dir", where, path) or output_file_problem(
        "baseline.dir", where, path.with_suffix(".json")
    )


def will_pretrain(cfg: DictConfig) -> bool:
    """Whether a run with this config trains its named baseline first (``make_if_missing`` and no
    file made with these settings)."""
    node = cfg.get("baseline")
    return bool(
        node is not None
        and node.get("name") not in NO_FILE
        and node.get("make_if_missing")
        and current_file(cfg) is None
    )


def is_current(cfg: DictConfig, path: Path) -> bool:
    """Whether ``path`` exists and was made with this config's baseline and model settings."""
    meta = path.with_suffix(".json")
    if not (path.is_file() and meta.is_file()):
        return False
    try:
        made = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, ValueError):  # a damaged description: not these settings
        return False
    return isinstance(made, dict) and made.get("fingerprint") == baseline_fingerprint(cfg)


def current_file(cfg: DictConfig) -> Path | None:
    """The weights made with this config's settings: ``<name>-<key>.pt``, or a ``<name>.pt`` of the
    same settings made before the files were keyed (used where it lies); None when neither exists."""
    path = baseline_path(cfg)
    legacy = path.with_name(f"{cfg.baseline.name}.pt")
    return next((p for p in (path, legacy) if is_current(cfg, p)), None)


def named_baseline_checkpoint(cfg: DictConfig) -> Path | None:
    """The file of the named baseline for an active-learning run; None when unnamed. A missing file
    is a UserError naming the command that makes it (``src.pretraining.make_if_missing`` makes it
    first when ``baseline.make_if_missing`` is set)."""
    node = cfg.get("baseline")
    if node is None or node.get("name") in NO_FILE:
        return None
    path = current_file(cfg) or baseline_path(cfg)
    if not path.is_file():
        raise UserError(missing_message(cfg))
    if not is_current(cfg, path):  # the file of this key holds other settings: edited or damaged
        raise UserError(
            f"baseline={node.name}: {path} was made with other settings than its name says "
            f"(its .json differs); delete it and make it again with: {make_command(cfg)} (same overrides)"
        )
    log.info("loading baseline %s from %s", node.name, path)
    return path


def check_pretrainable(node: DictConfig) -> None:
    if node.get("name") in NO_FILE:
        raise UserError(
            f"baseline={node.get('name')}: nothing to pretrain (it is the model's own init); "
            "choose a baseline with a dataset: baseline=held_back or folder (classification), "
            "real or synthetic (detection)"
        )
    if node.get("dataset") is None:
        raise UserError(
            f"baseline={node.name}: baseline.dataset is not set (the data the baseline learns from)"
        )


def baseline_datamodule_config(cfg: DictConfig) -> DictConfig:
    """``baseline.dataset``, built for its ``baseline.part`` when one is named (held_back: the items
    the run's recipe keeps back)."""
    node = cfg.baseline
    if not node.get("part"):
        return node.dataset
    return OmegaConf.merge(OmegaConf.to_container(node.dataset, resolve=True), {"part": node.part})
