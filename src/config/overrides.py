"""Command-line overrides checked before Hydra sees them.

Hydra's own messages for a mistyped group option span several lines with a
stack-trace hint; these checks turn the common mistakes into one line, exit 2. They
also carry renamed keys for one release: the old spelling still works and says once
what the new one is.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"

# old key prefix -> new key prefix (kept working, with a deprecation line, for one release)
RENAMED_KEYS = {
    "model.baseline.": "model.init.",
    "trainer.steps_per_epoch": "fit.steps_per_epoch",
    "model.module.optimizer.": "optim.",
    "fixed_epochs": "fit.epochs",
    "fixed_steps_per_epoch": "fit.steps_per_epoch",
}
# renamed keys that every config has: an old ``+old=value`` (adding a key) sets them instead
ALWAYS_PRESENT = {"fit.epochs", "fit.steps_per_epoch"}
# config groups that were added with ``+group=option`` and now have a (null) default: ``group=option``
DEFAULTED_GROUPS = ("training",)
# key -> old value -> new value (a sweep's values each)
RENAMED_VALUES = {"selection.shuffle": {"true": "epoch", "false": "none"}}

_GROUP_OVERRIDE = re.compile(r"^(?:\+{1,2})?([a-z_]+)=(.*)$")


def config_groups(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    return {
        d.name: sorted(p.stem for p in d.glob("*.yaml")) for d in sorted(conf_dir.iterdir()) if d.is_dir()
    }


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
            continue  # sweep functions, interpolations, removal: leave them to Hydra
        for option in value.split(","):
            if option not in groups[group]:
                return (
                    f"{group}={option!r} is not a known option of the {group!r} config group; "
                    f"allowed: {', '.join(groups[group])}"
                )
    return None


def renamed(key: str) -> str | None:
    """The current spelling of a renamed key path, or None when ``key`` is current."""
    for old, new in RENAMED_KEYS.items():
        if key.startswith(old):
            return new + key[len(old) :]
    return None


def rewrite_renamed_keys(argv: Sequence[str]) -> list[str]:
    """``argv`` with renamed keys in their current spelling; one deprecation line per rename."""
    out = []
    for arg in argv:
        prefix = re.match(r"^(\+{0,2}|~)", arg).group(1)
        key, sep, value = arg[len(prefix) :].partition("=")
        new = renamed(key)
        if new is not None:
            print(
                f"warning: {key} is deprecated and will be removed in the next release; use {new}",
                file=sys.stderr,
            )
            arg = f"{'' if prefix == '+' and new in ALWAYS_PRESENT else prefix}{new}{sep}{value}"
        elif key in RENAMED_VALUES and any(v.lower() in RENAMED_VALUES[key] for v in value.split(",")):
            values = [RENAMED_VALUES[key].get(v.lower(), v) for v in value.split(",")]
            print(
                f"warning: {key}={value} is deprecated and will be removed in the next release; use "
                f"{key}={','.join(values)}",
                file=sys.stderr,
            )
            arg = f"{prefix}{key}{sep}{','.join(values)}"
        elif prefix == "+" and key in DEFAULTED_GROUPS:
            print(
                f"warning: +{key}=... is deprecated and will be removed in the next release; use {key}=...",
                file=sys.stderr,
            )
            arg = f"{key}{sep}{value}"
        out.append(arg)
    return out


def _flat_keys(node, prefix: str = "") -> list[str]:
    keys = []
    if isinstance(node, dict):
        for k, v in node.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            keys += [key, *_flat_keys(v, key)]
    return keys


def check_keys(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """One-line message for a ``key.path=value`` override naming no key of the composed config, with the
    nearest valid key; None when all exist. ``+key`` (add), ``~key`` (remove) and ``hydra.*`` are Hydra's."""
    groups = config_groups(conf_dir)
    selections, keys = [], []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or arg.startswith(("-", "~", "hydra.")) or "/" in key:
            continue
        if key.lstrip("+") in groups:
            if not any(c in value for c in "()[]{}$"):  # one option stands for a sweep: the keys match
                selections.append(f"{key}={value.split(',')[0]}")
        elif not key.startswith("+") and "." in key:
            keys.append(key)
    if not keys:
        return None
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    import src.config.resolvers  # noqa: F401  (the config names resolvers; composition leaves them unresolved)

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=selections)
    except HydraException:
        return None  # Hydra reports its own composition errors
    finally:
        GlobalHydra.instance().clear()
    known = _flat_keys(OmegaConf.to_container(cfg, resolve=False))
    for key in keys:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else "; add a new key with +key=value"
            return f"{key}: no such config key{hint}"
    return None


def command_line_overrides(argv: Sequence[str]) -> list[str]:
    """The overrides among ``argv`` (no program name), as Hydra's argument parser finds them:
    flags and their values (``--cfg job``, ``-cn name``) left out."""
    from hydra._internal.utils import get_args_parser

    known, rest = get_args_parser().parse_known_args(list(argv))
    return list(known.overrides or []) + [a for a in rest if not a.startswith("-")]


def check_override_syntax(argv: Sequence[str]) -> str | None:
    """One-line message for the first override Hydra's grammar cannot parse (``'a=[1,2'``), naming it;
    None when all parse. Hydra's own report of it is three lines and exit status 1."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in command_line_overrides(argv):
        try:
            parser.parse_overrides([arg])
        except OverrideParseException as err:
            lines = [
                ln.strip()
                for ln in str(err).splitlines()
                if ln.strip() and not ln.startswith(("See https://", "Error parsing override"))
            ]
            why = "; ".join(lines) or "not an override"
            return (
                f"{arg!r} is not a valid override ({why}); the form is key=value, "
                "see https://hydra.cc/docs/advanced/override_grammar/basic/"
            )
    return None


def output_dir_problem(key: str, value) -> str | None:
    """One-line message when directory ``value`` (of config key ``key``) cannot be created or written:
    tried, not inferred. None when it can."""
    path = Path(str(value)).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists() or p.is_symlink())
    if not existing.is_dir():
        return f"{key}={value}: {existing} is not a directory, so the directory cannot be created"
    if not can_create_in(existing):
        return f"{key}={value}: {existing} is not writable; choose a directory you can write"
    return None


def output_file_problem(key: str, value, path: Path) -> str | None:
    """One-line message when file ``path`` (in directory ``value`` of config key ``key``) cannot be
    written: its directory as ``output_dir_problem`` checks it, the file itself not a directory and,
    when present, writable (opened for appending, which changes no byte). None when it can."""
    problem = output_dir_problem(key, value)
    if problem:
        return problem
    path = Path(path)
    if path.exists() and not path.is_file():
        return f"{key}={value}: {path} exists and is not a regular file, so it cannot be written"
    if path.is_file():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
        except OSError as err:
            return f"{key}={value}: {path} cannot be written ({err.strerror})"
    return None


def can_create_in(directory: Path) -> bool:
    """Whether a directory can be made inside ``directory``: tried, not inferred from the mode
    bits, which say yes to root on read-only mounts and pseudo file systems."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".write-probe-", dir=directory))
    except OSError:
        return False
    return True


def check_output_dirs(argv: Sequence[str]) -> str | None:
    """One-line message when ``hydra.run.dir`` / ``hydra.sweep.dir`` given on the command line cannot be
    created or written (Hydra's own mkdir would end in a traceback)."""
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key not in ("hydra.run.dir", "hydra.sweep.dir") or not sep or "$" in value:
            continue
        problem = output_dir_problem(key, value)
        if problem:
            return problem
    return None


def prepare_argv(argv: list[str]) -> None:
    """What the entry points run before Hydra: renamed keys rewritten in place, and a
    override Hydra cannot parse, a typo in ``group=option`` or in a key path exits 2 with one line."""
    message = check_override_syntax(argv[1:])
    if not message:
        argv[:] = rewrite_renamed_keys(argv)
        message = check_group_overrides(argv) or check_output_dirs(argv) or check_keys(argv[1:])
    if message:
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
