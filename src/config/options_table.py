"""The option table of docs/configuration.md, generated from ``conf/`` so that it cannot drift.

``python -m src.config.options_table`` prints it; ``tests/test_docs_options.py`` checks that
the text between the ``<!-- options-table:start -->`` and ``<!-- options-table:end -->``
markers of docs/configuration.md equals it.

What counts as a config group here: every *direct* sub-directory of ``conf/`` that holds
``.yaml`` files (``conf/<group>/<option>.yaml``, chosen on the command line as
``group=option``). Nested directories are left out on purpose:

* ``conf/hydra/launcher/`` configures Hydra's own ``hydra/launcher`` group: its default
  (``basic``) and some of its options (``submitit_local``) come from Hydra and its plugins,
  not from ``conf/``, so a table built from the files would misstate it (docs/cluster.md
  describes the launchers);
* ``conf/dataset/base/`` holds building blocks that dataset options include
  (``base/detection_files@_here_``), not options to choose.

A row gives the group, its options (the yaml file stems, sorted) and the default that
``conf/config.yaml``'s ``defaults`` list chooses (``none`` for ``group: null``, ``-`` for a
group the list does not name). Rows follow the order of the defaults list; groups it does
not name come after, sorted. Only the standard library and PyYAML are used: this module
reads files and imports nothing else of the project.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

CONF = Path(__file__).resolve().parent.parent.parent / "conf"
START = "<!-- options-table:start -->"
END = "<!-- options-table:end -->"
# what the default column says for `group: null` in the defaults list, and for a group it does not name
NO_OPTION = "none"
NOT_LISTED = "-"


def groups(conf: Path = CONF) -> dict[str, list[str]]:
    """group name -> its option names (yaml file stems, sorted), for every direct sub-directory of
    ``conf`` that holds yaml files."""
    found = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir()):
        options = sorted(p.stem for p in folder.glob("*.yaml") if p.is_file())
        if options:
            found[folder.name] = options
    return found


def _group_of(key: str) -> str:
    """``optional group@package`` / ``override group`` -> ``group``."""
    words = key.split()
    if len(words) == 2 and words[0] in ("optional", "override"):
        key = words[1]
    return key.split("@", 1)[0].strip()


def defaults(conf: Path = CONF, config_name: str = "config") -> dict[str, str | None]:
    """group -> the option ``conf/<config_name>.yaml``'s defaults list chooses (None for ``null``), in
    the list's order; ``_self_`` and entries that are not ``group: option`` pairs are skipped."""
    data = yaml.safe_load((conf / f"{config_name}.yaml").read_text()) or {}
    chosen: dict[str, str | None] = {}
    for entry in data.get("defaults") or []:
        if isinstance(entry, dict) and len(entry) == 1:
            (key, value), *_ = entry.items()
            chosen[_group_of(str(key))] = None if value is None else str(value)
    return chosen


def _default_cell(group: str, chosen: dict[str, str | None]) -> str:
    if group not in chosen:
        return NOT_LISTED
    return NO_OPTION if chosen[group] is None else f"`{chosen[group]}`"


def options_table(conf: Path = CONF) -> str:
    """The markdown table: one row per config group with its options and its default."""
    found = groups(conf)
    chosen = defaults(conf)
    order = [g for g in chosen if g in found] + sorted(g for g in found if g not in chosen)
    lines = ["| group | options | default |", "| --- | --- | --- |"]
    for group in order:
        options = ", ".join(f"`{option}`" for option in found[group])
        lines.append(f"| `{group}` | {options} | {_default_cell(group, chosen)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(options_table())
