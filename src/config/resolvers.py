"""OmegaConf resolvers the configs use; registered on import (the CLIs, the report and
the compose-API tests import this module, never a CLI, to get them)."""
from __future__ import annotations

import datetime as _dt
import re
from pathlib import Path

from omegaconf import OmegaConf


def slug(value) -> str:
    """A value fit for a directory or run name: '[50, 100]' -> '50_100'."""
    text = re.sub(r"[\[\]'\"]", "", str(value))      # lists read as their items: b50_100
    text = re.sub(r"[^A-Za-z0-9.=+-]+", "_", text)
    return re.sub(r"_*-_*", "-", text).strip("_")


def latest_unfinished_run(parent: Path) -> Path | None:
    """The newest run directory under ``parent`` that has a state but is not finished."""
    if not parent.is_dir():
        return None
    for candidate in sorted((p for p in parent.iterdir() if p.is_dir()), reverse=True):
        if (candidate / "state.json").exists() and not (candidate / "summary.json").exists():
            return candidate
    return None


def run_dir(parent: str, resume) -> str:
    """The single-run directory: the latest unfinished one under ``parent`` on resume, else a new timestamp."""
    if str(resume).lower() in ("true", "1", "yes"):
        found = latest_unfinished_run(Path(parent))
        if found is not None:
            return str(found)
    return str(Path(parent) / _dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S"))


OmegaConf.register_new_resolver("slug", slug, replace=True)
OmegaConf.register_new_resolver("run_dir", run_dir, replace=True, use_cache=True)
