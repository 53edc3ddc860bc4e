"""A run's final model kept on disk (``save_model=true``) and rebuilt from it for selection.

A run keeps ``model.pt`` (the final state dict, tensors only) and ``model.json``
(task, class names, input channels and the run's command-line overrides) beside
``rounds.jsonl``. A saved model is named either by its run directory
(``run_dir=<run>``) or by its weights file (``checkpoint=<file>.pt``, with the
``<file>.json`` written with it beside it: ``model.pt`` and ``model.json``, or both
renamed alike when copied elsewhere); ``SavedModel`` is what either names.

Rebuilding never instantiates anything the input says: a saved model may come from
someone else. The model is built from this project's own ``conf/`` composed with the
run's recorded overrides (those of ``model.json``; a model saved before they were
recorded there takes ``.hydra/overrides.yaml`` of the folder holding it, read with
``yaml.safe_load``), checked as ``src.config.trust`` says before anything is composed:
they may only choose options of the project's config groups (files under ``conf/``) and
set plain values, so no ``hydra.*`` (a search path would compose YAML from anywhere), no
key or value naming code (``_target_``, ``_partial_``, ...), no resolver but the
project's pure ones (``${oc.env:...}`` would read this machine). The composed config is
then compared with the project's own for the same group choices: a code key that conf/
does not put there is refused before anything is instantiated. The weights are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from src.config.overrides import CONF_DIR
from src.config.trust import check_code_keys, check_received_overrides
from src.errors import UserError
from src.models.weights import load_into

MODEL_FILE, META_FILE = "model.pt", "model.json"


def save_trained_model(
    run_dir: str | Path,
    model: torch.nn.Module,
    task: str,
    classes,
    channels: int,
    overrides: list[str] | None = None,
    leave_out: tuple[str, ...] = (),
) -> Path:
    """Write ``model.pt`` and ``model.json`` into the run directory, each atomically; ``overrides``
    (the run's command-line overrides) make the pair rebuildable without the run directory.
    ``leave_out``: top-level modules not saved (a scorer's attachments, ``Scorer.attached``)."""
    run_dir = Path(run_dir)
    tmp = run_dir / f".{MODEL_FILE}.tmp"
    torch.save(
        {k: v.detach().cpu() for k, v in model.state_dict().items() if k.split(".", 1)[0] not in leave_out},
        tmp,
    )
    os.replace(tmp, run_dir / MODEL_FILE)
    meta = {"task": task, "classes": [str(c) for c in classes], "channels": int(channels)}
    if overrides is not None:
        meta["overrides"] = [str(o) for o in overrides]
    tmp = run_dir / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=1) + "\n")
    os.replace(tmp, run_dir / META_FILE)
    return run_dir / MODEL_FILE


@dataclass(frozen=True)
class SavedModel:
    """A saved model as the command line named it, checked: nothing built yet."""

    weights: Path  # the state dict file
    meta: dict  # its model.json, checked
    overrides: list[str]  # the run's command-line overrides, checked
    folder: Path  # the folder holding the weights: the run directory, where the audit goes
    key: str  # how the user named it (``run_dir=...`` / ``checkpoint=...``), for messages
    weights_key: str  # the same for the weights file: what a message about the weights names
    overrides_file: Path  # the file the overrides were read from, for messages
    choices: list[str]  # those of the overrides that choose config group options


def _read_meta_file(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err})") from err
    ok = (
        isinstance(meta, dict)
        and meta.get("task") in ("classification", "detection")
        and isinstance(meta.get("classes"), list)
        and meta["classes"]
        and all(isinstance(c, str) for c in meta["classes"])
        and meta.get("channels") in (1, 3)
        and (
            meta.get("overrides") is None
            or (isinstance(meta["overrides"], list) and all(isinstance(o, str) for o in meta["overrides"]))
        )
    )
    if not ok:
        raise UserError(
            f"{path}: expected task (classification|detection), a list of class "
            f"names, channels (1|3) and optionally a list of overrides"
        )
    return meta


def read_meta(run_dir: Path) -> dict:
    """``model.json`` of a run directory, checked; one line when the run kept no weights."""
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / META_FILE).is_file():
        raise UserError(
            f"run_dir={run_dir}: no saved model ({MODEL_FILE} + {META_FILE}); train it with save_model=true"
        )
    return _read_meta_file(run_dir / META_FILE)


def run_overrides(run_dir: Path) -> list:
    """The run's command-line overrides as ``.hydra/overrides.yaml`` lists them, unchecked."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        raise UserError(f"run_dir={run_dir}: no .hydra/overrides.yaml; name a directory written by src.run")
    try:
        return yaml.safe_load(path.read_text()) or []
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({err})") from err


def saved_model(run_dir: str | Path | None = None, checkpoint: str | Path | None = None) -> SavedModel:
    """The saved model of a run directory or of a weights file (see the module doc), checked."""
    if (run_dir is None) == (checkpoint is None):
        raise UserError(
            "name the model with run_dir=<run directory> or checkpoint=<model.pt>, one of the two"
        )
    if run_dir is not None:
        folder = Path(run_dir).expanduser()
        meta, key = read_meta(folder), f"run_dir={folder}"
        weights, meta_file, weights_key = folder / MODEL_FILE, folder / META_FILE, f"{key}: {MODEL_FILE}"
    else:
        weights = Path(checkpoint).expanduser()
        key = weights_key = f"checkpoint={weights}"
        if weights.is_dir():
            raise UserError(
                f"{key}: a folder; name its run directory with run_dir= or the weights file with checkpoint="
            )
        if not weights.is_file():
            raise UserError(f"{key}: no such file")
        meta_file = weights.with_suffix(".json")
        if not meta_file.is_file():
            raise UserError(
                f"{key}: no {meta_file.name} beside it (the {META_FILE} saved with the weights: task, "
                f"classes, channels, overrides); copy it along, renamed like the weights"
            )
        meta, folder = _read_meta_file(meta_file), weights.parent
    if meta.get("overrides") is not None:
        overrides, overrides_file = meta["overrides"], meta_file
    elif run_dir is None and not (folder / ".hydra" / "overrides.yaml").is_file():
        raise UserError(
            f"{key}: {meta_file.name} records no overrides and {folder} is not a run directory "
            f"(no .hydra/overrides.yaml): the model cannot be rebuilt; pass run_dir=<its run>"
        )
    else:
        overrides, overrides_file = run_overrides(folder), folder / ".hydra" / "overrides.yaml"
    choices = check_received_overrides(overrides, overrides_file)  # the only check; see the module doc
    return SavedModel(weights, meta, overrides, folder, key, weights_key, overrides_file, choices)


def compose_run_config(overrides: list[str], path=None):
    """The project's config composed with ``overrides``, inside or outside a running Hydra app; with
    ``path`` (the file they came from) a composition error is one line naming it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    import src.config.resolvers  # noqa: F401  (the resolvers the config uses)

    try:
        if GlobalHydra.instance().is_initialized():
            return compose(config_name="config", overrides=overrides)
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as err:
        if path is None:
            raise
        raise UserError(
            f"{path}: the run's overrides do not compose with this project's conf/ "
            f"({str(err).strip().splitlines()[0]})"
        ) from None


def _without_pretrained(node) -> None:
    from omegaconf import DictConfig

    for key in list(node.keys()):
        if key in ("weights", "weights_backbone"):
            node[key] = None
        elif isinstance(node.get(key), DictConfig):
            _without_pretrained(node[key])


def _resolved(node, path):
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.to_container(node, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(
            f"{path}: the run's model config does not resolve ({str(err).strip().splitlines()[0]})"
        ) from None


def checked_run_config(saved: SavedModel):
    """The run's composed config with no pretrained weights to download, once it holds no code key that the
    project's own conf (composed with the same group choices) does not put there, nothing instantiated."""
    from omegaconf import DictConfig, OmegaConf

    path = saved.overrides_file
    cfg = compose_run_config(saved.overrides, path)
    own = compose_run_config(saved.choices, path)
    for c in (cfg, own):
        if not isinstance(OmegaConf.select(c, "model.module"), DictConfig):
            raise UserError(f"{path}: the run's config has no model.module to rebuild the model from")
        _without_pretrained(c.model.module)  # the saved weights replace them: nothing to download
    check_code_keys(
        OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(own, resolve=False), path
    )
    # what is instantiated, resolved: an interpolation may copy a node that holds code into it
    check_code_keys(
        _resolved(cfg.model.module, path), _resolved(own.model.module, path), path, where="model.module"
    )
    return cfg


def load_saved_model(saved: SavedModel):
    """(model in eval mode, the run's composed config, its ``model.json``) of a ``SavedModel``."""
    import hydra

    cfg = checked_run_config(saved)
    model = hydra.utils.instantiate(
        cfg.model.module, num_classes=len(saved.meta["classes"]), in_channels=saved.meta["channels"]
    )
    load_into(model, saved.weights, key=saved.weights_key)
    return model.eval(), cfg, saved.meta


def load_trained_model(run_dir: str | Path):
    """(model in eval mode, the run's composed config, its ``model.json``) of a run that saved its model."""
    return load_saved_model(saved_model(run_dir=run_dir))
