"""Command-line overrides checked before Hydra sees them.

Hydra's own messages for a mistyped group option span several lines with a
stack-trace hint; these checks turn the common mistakes into one line, exit 2. They
also carry renamed keys for one release: the old spelling still works and says once
what the new one is.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"

# old key prefix -> new key prefix (kept working, with a deprecation line, for one release)
RENAMED_KEYS = {"model.baseline.": "model.init.", "trainer.steps_per_epoch": "fit.steps_per_epoch",
                "model.module.optimizer.": "optim."}

_GROUP_OVERRIDE = re.compile(r"^(?:\+{1,2})?([a-z_]+)=(.*)$")


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir()}


def check_group_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One-line message for a ``group=option`` override naming no file of that group, else None.

    Sweeps (``scorer=a,b``) are checked option by option.
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


def renamed(key: str) -> str | None:
    """The current spelling of a renamed key path, or None when ``key`` is current."""
    for old, new in RENAMED_KEYS.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def rewrite_renamed_keys(argv: Sequence[str]) -> list[str]:
    """``argv`` with renamed keys in their current spelling; one deprecation line per rename."""
    out = []
    for arg in argv:
        prefix = re.match(r"^(\+{0,2}|~)", arg).group(1)
        key, sep, value = arg[len(prefix):].partition("=")
        new = renamed(key)
        if new is not None:
            print(f"warning: {key} is deprecated and will be removed in the next release; use {new}",
                  file=sys.stderr)
            arg = f"{prefix}{new}{sep}{value}"
        out.append(arg)
    return out


def prepare_argv(argv: list[str]) -> None:
    """What the entry points run before Hydra: renamed keys rewritten in place, and a
    typo in ``group=option`` exits 2 with one line."""
    argv[:] = rewrite_renamed_keys(argv)
    message = check_group_overrides(argv)
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
