"""Paths from untrusted input checked against the root they must stay in: the one place it is done.

Annotation files, Label Studio exports and folder trees come from other people. A
path they name (an annotation's image name joined to the image root) or hold (a file
of a scanned tree) counts only when it lies inside its root twice over: as written,
with ``..`` folded (the spelling the project keeps, shows and mirrors relative to the
root), and with every symlink followed, root and path both resolved. So a symlink
whose target stays inside the root is fine, a root that is itself a symlink is fine
(it is resolved first), and a symlink that leads out of the root is not read.

What happens to a path that leaves its root depends on where it came from:

* named by a file (a COCO ``file_name``, a VOC ``<path>``, a YOLO ``data.yaml`` folder
  or label file, a Label Studio task's image): the reader refuses it with one line
  naming the annotation file, the path and the root;
* found by scanning a folder (``dataset=folder`` and its relatives, ``src.select
  images=<folder>``, a YOLO split folder): the file is skipped and counted in the log,
  so one stray link does not stop a tree of thousands of images, and is never read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def absolute(path: str | Path) -> Path:
    """Absolute and lexically normalised (``..`` folded), symlinks kept as written."""
    return Path(os.path.normpath(os.path.abspath(os.fspath(path))))


def _resolved(path: str | Path) -> Path | None:
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # a symlink loop: leads nowhere inside
        return None


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def written_inside(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` lies in ``root`` as written (``..`` folded, symlinks not followed)."""
    return _within(absolute(path), absolute(root))


def leads_to(path: str | Path) -> str:
    """Where ``path`` leads with every symlink followed, for messages."""
    target = _resolved(path)
    return str(target) if target is not None else "a symlink loop"


def inside_root(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` lies in ``root`` as written and with every symlink followed (both resolved)."""
    return _inside(path, absolute(root), _resolved(root))


def _inside(path: str | Path, root: Path, real_root: Path | None) -> bool:
    if not _within(absolute(path), root):
        return False
    target = _resolved(path)
    return target is not None and real_root is not None and _within(target, real_root)


def join_inside(root: str | Path, name: str) -> Path | None:
    """``root / name`` (``..`` folded, as written) when it stays inside ``root`` (``inside_root``), else None.

    An absolute ``name`` counts when it lies inside ``root``.
    """
    path = absolute(Path(root) / name)
    return path if inside_root(path, root) else None


def split_inside(files: Iterable[Path], root: str | Path) -> tuple[list[Path], list[Path]]:
    """The scanned ``files`` that stay inside ``root``, and those that leave it (symlinks out), in order."""
    kept, left = [], []
    root, real_root = absolute(root), _resolved(root)
    for f in files:
        (kept if _inside(f, root, real_root) else left).append(f)
    return kept, left


def skipped_note(left: list[Path], root: str | Path) -> str:
    """One log line for the files a scan skipped because they lead outside ``root``."""
    return (
        f"{root}: {len(left)} file{'s' if len(left) != 1 else ''} skipped: symlinks leading outside the "
        f"folder are not read (first: {left[0]} -> {leads_to(left[0])})"
    )
