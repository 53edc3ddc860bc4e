"""A run's final model kept on disk (``save_model=true``) and rebuilt from it for selection.

A run keeps ``model.pt`` (the final state dict, tensors only) and ``model.json``
(task, class names, input channels) beside ``rounds.jsonl``. Rebuilding never
instantiates anything the run directory says: a run directory may come from someone
else. The model is built from this project's own ``conf/`` composed with the run's
recorded command-line overrides (``.hydra/overrides.yaml``, read with
``yaml.safe_load``), and an override that would name code to instantiate
(``_target_``, ``_partial_``, ``_args_``) is refused. The weights are read with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import yaml

from src.errors import UserError
from src.models.weights import load_into

MODEL_FILE, META_FILE = "model.pt", "model.json"
CODE_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def save_trained_model(run_dir: str | Path, model: torch.nn.Module, task: str, classes, channels: int) -> Path:
    """Write ``model.pt`` and ``model.json`` into the run directory, each atomically."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{MODEL_FILE}.tmp"
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    os.replace(tmp, run_dir / MODEL_FILE)
    meta = {"task": task, "classes": [str(c) for c in classes], "channels": int(channels)}
    tmp = run_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, run_dir / META_FILE)
    return run_dir / MODEL_FILE


def read_meta(run_dir: Path) -> dict:
    """``model.json`` of a run directory, checked; one line when the run kept no weights."""
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / META_FILE).is_file():
        raise UserError(f"run_dir={run_dir}: no saved model ({MODEL_FILE} + {META_FILE}); "
                        f"train it with save_model=true")
    try:
        meta = json.loads((run_dir / META_FILE).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{run_dir / META_FILE}: not valid JSON ({err})") from err
    ok = (isinstance(meta, dict) and meta.get("task") in ("classification", "detection")
          and isinstance(meta.get("classes"), list) and meta["classes"]
          and all(isinstance(c, str) for c in meta["classes"]) and meta.get("channels") in (1, 3))
    if not ok:
        raise UserError(f"{run_dir / META_FILE}: expected task (classification|detection), a list of class "
                        f"names and channels (1|3)")
    return meta


def run_overrides(run_dir: Path) -> list[str]:
    """The run's command-line overrides, without any that name code to instantiate."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise UserError(f"run_dir={run_dir}: no .hydra/overrides.yaml; name a directory written by src.run")
    try:
        overrides = yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise UserError(f"{path}: expected a list of override strings")
    unsafe = [o for o in overrides if any(key in o.split("=", 1)[0] for key in CODE_KEYS)]
    if unsafe:
        raise UserError(f"{path}: override {unsafe[0]!r} names code to instantiate; refused for a run "
                        f"directory read as input")
    return overrides


def compose_run_config(overrides: list[str]):
    """The project's config composed with ``overrides``, inside or outside a running Hydra app."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import src.config.resolvers  # noqa: F401  (the resolvers the config uses)

    if GlobalHydra.instance().is_initialized():
        return compose(config_name="config", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def _without_pretrained(node) -> None:
    from omegaconf import DictConfig

    for key in list(node.keys()):
        if key in ("weights", "weights_backbone"):
            node[key] = None
        elif isinstance(node.get(key), DictConfig):
            _without_pretrained(node[key])


def load_trained_model(run_dir: str | Path):
    """(model in eval mode, the run's composed config, its ``model.json``) of a run that saved its model."""
    import hydra

    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    cfg = compose_run_config(run_overrides(run_dir))
    _without_pretrained(cfg.model.module)      # the saved weights replace them: nothing to download
    model = hydra.utils.instantiate(cfg.model.module, num_classes=len(meta["classes"]),
                                    in_channels=meta["channels"])
    load_into(model, run_dir / MODEL_FILE, key=f"run_dir={run_dir}: {MODEL_FILE}")
    return model.eval(), cfg, meta
