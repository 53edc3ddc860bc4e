"""OmegaConf resolvers the configs use; registered on import (the CLIs, the report and
the compose-API tests import this module, never a CLI, to get them)."""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path

from omegaconf import Container, OmegaConf

from src.records import RunStore

# name -> function of every resolver this module registers whose value depends on its
# arguments alone: the only resolvers (besides ``oc.select``) that the report evaluates in a
# run directory received from elsewhere (``run_dir`` lists this machine's directories: not here).
PURE_RESOLVERS: dict = {}


def format_value(value) -> str:
    """The one spelling of a config value in run names and report labels.

    Hydra parses ``selection.pivot=0`` as an int and the yaml default ``0.0`` as a float,
    Python prints ``None``/``True``; here both pivots read ``0``, booleans and null read as
    typed on the command line (``true``, ``none``), lists as ``[50,100]``.
    """
    if isinstance(value, Container):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        # integral floats as ints (0.0 -> 0); others in their shortest round-trip form (0.25, 1e-05)
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def slug(value) -> str:
    """A value fit for a directory or run name: '[50, 100]' -> '50_100'."""
    text = re.sub(r"[\[\]'\"]", "", str(value))  # lists read as their items: b50_100
    text = re.sub(r"[^A-Za-z0-9.=+-]+", "_", text)
    return re.sub(r"_*-_*", "-", text).strip("_")


def latest_unfinished_run(parent: Path) -> Path | None:
    """The newest run directory under ``parent`` that was accepted but is not finished
    (also one killed during set-up, before its first round: it has its config but no state)."""
    if not parent.is_dir():
        return None
    for candidate in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        if RunStore(candidate).started() and not (candidate / "summary.json").exists():
            return candidate
    return None


def run_dir(parent: str, resume) -> str:
    """The single-run directory: the latest unfinished one under ``parent`` on resume, else a new timestamp."""
    if str(resume).lower() in ("true", "1", "yes"):
        found = latest_unfinished_run(Path(parent))
        if found is not None:
            return str(found)
    return str(Path(parent) / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


def register(name: str, function, pure: bool = True, **options) -> None:
    """Register a resolver; ``pure``: its value depends on its arguments alone (no files, no environment)."""
    OmegaConf.register_new_resolver(name, function, replace=True, **options)
    if pure:
        PURE_RESOLVERS[name] = function


def selection_size(budget, fraction) -> str:
    """The run-name part that says how much a selection takes: ``b<budget>``, or ``f<fraction>`` where
    ``selection.fraction`` decides it (prune mode), e.g. ``b100``, ``b[50,100]``, ``f0.5``."""
    return f"f{format_value(fraction)}" if fraction is not None else f"b{format_value(budget)}"


register("slug", slug)
register("fmt", format_value)
register("sel_size", selection_size)
register("run_dir", run_dir, pure=False, use_cache=True)


def folder_sources(roots, image_size, resize_size, classes, cache_dir, workers) -> list[dict]:
    """``source=folders``: one ImageFolder source config per root, named after its folder."""
    roots = list(roots or [])
    # a ListConfig, not a list: Hydra instantiates the members only when they are config nodes
    return OmegaConf.create(
        [
            {
                "_target_": "src.data.folder.ImageFolderSource",
                "root": str(root),
                "name": Path(str(root)).name,
                "classes": None if classes is None else list(classes),
                "image_size": image_size,
                "resize_size": resize_size,
                "cache_dir": cache_dir,
                "workers": workers,
            }
            for root in roots
        ]
    )


register("folder_sources", folder_sources)
