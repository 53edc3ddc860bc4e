"""What a selection leaves on disk: the ranked CSV, and a kept subset with its manifest.

``write_ranked_csv`` lists a ranked selection (what to label next, hardest first)
with the model's guess; ``drop_reasons`` says why each item of a pruned set was left
out; ``link_subset`` writes the kept files as a tree mirroring the input (hard links by
default, copies on request) and ``write_manifest`` records every item's fate.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from src.config.overrides import can_create_in
from src.data.labelstudio import lexical_abspath
from src.data.paths import written_inside
from src.errors import UserError
from src.labelling.labelstudio import BoxGuess, ClassGuess, Proposal
from src.selection.ranking import pivot_window

RANKED_FIELDS = ["rank", "path", "score", "predicted", "confidence"]
MANIFEST_FIELDS = ["rank", "path", "score", "kept", "reason"]
HARDER, EASIER, BALANCE = "harder than the kept window", "easier than the kept window", "class balance"


def _shown(path: Path, root: Path | None) -> str:
    return lexical_abspath(path).relative_to(lexical_abspath(root)).as_posix() if root else str(path)


def box_rows(guess: BoxGuess) -> list[dict]:
    """A detector's guess as ``{"label", "score", "box": [x0, y0, x1, y1]}`` (file pixels), in the guess's order
    (the detector's: most confident first)."""
    return [
        {"label": str(name), "score": round(float(s), 4), "box": [round(float(v), 2) for v in box]}
        for box, name, s in zip(np.asarray(guess.boxes).reshape(-1, 4), guess.labels, guess.scores)
    ]


def _guess_columns(guess: ClassGuess | BoxGuess | None) -> tuple[str, str]:
    if guess is None:
        return "", ""
    if isinstance(guess, ClassGuess):
        return guess.label, f"{guess.confidence:.6g}"
    mean = f"{float(np.mean(guess.scores)):.6g}" if len(guess.scores) else ""
    return json.dumps(box_rows(guess)), mean


def write_ranked_csv(path: str | Path, proposals: Iterable[Proposal], root: str | Path | None = None) -> Path:
    """One row per proposal in rank order: rank (1 = label first), path (relative to ``root`` when
    given), acquisition score, and the guess: a class and its probability, or the boxes as JSON
    (pixel xyxy, label, score) and their mean score."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(RANKED_FIELDS)
        for p in sorted(proposals, key=lambda p: p.rank):
            writer.writerow(
                [
                    p.rank,
                    _shown(p.image, Path(root) if root else None),
                    f"{p.score:.6g}",
                    *_guess_columns(p.guess),
                ]
            )
    return path


def drop_reasons(n: int, kept_ranks: Sequence[int], pivot: float) -> list[str]:
    """Per rank 0..n-1 (0 = highest score): '' when kept, else why it was dropped.

    The kept set is the pivot window of ``len(kept_ranks)`` ranks, unless class balance
    swapped items: then a rank inside the window was dropped for balance and the
    nearest ranks outside it filled in. A dropped rank outside the window is harder
    (before it) or easier (after it) than what was kept.
    """
    kept = set(int(r) for r in kept_ranks)
    if not kept:
        raise ValueError("drop_reasons: nothing was kept")
    start, stop = pivot_window(n, len(kept), pivot)
    return ["" if r in kept else HARDER if r < start else EASIER if r >= stop else BALANCE for r in range(n)]


def write_manifest(
    path: str | Path,
    files: Sequence[Path],
    scores: Sequence[float],
    ranks: Sequence[int],
    reasons: Sequence[str],
    root: str | Path | None = None,
) -> Path:
    """Every item of the set, in rank order: rank (1 = highest score), path, score, kept, why dropped."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(zip(ranks, files, scores, reasons), key=lambda row: row[0])
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(MANIFEST_FIELDS)
        for rank, file, score, reason in rows:
            writer.writerow(
                [
                    int(rank) + 1,
                    _shown(file, Path(root) if root else None),
                    f"{float(score):.6g}",
                    "no" if reason else "yes",
                    reason,
                ]
            )
    return path


def _can_append(path: Path) -> bool:
    """Whether ``path`` (an existing file) opens for writing: tried, its content left as it is."""
    try:
        with path.open("a"):
            pass
    except OSError:
        return False
    return True


def check_writable_file(path: Path, key: str, why: str) -> None:
    """UserError unless ``path`` can be written (appended to, or created in its folder): tried, not
    read from the mode bits, which say yes to root on read-only mounts. ``why``: what goes there."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{key}: {path} is not a file; {why}")
    if path.exists() and not _can_append(path):
        raise UserError(f"{key}: {path} is not writable; {why}")
    if not path.exists() and not (path.parent.is_dir() and can_create_in(path.parent)):
        raise UserError(f"{key}: {path.parent} is not writable; {why}")


def check_output_folder(out: Path, files: Sequence[str] = (), key: str = "out") -> None:
    """UserError unless the folder ``out`` is there or can be made, and each of ``files`` can be written
    in it; checked before any work, so that a bad ``out`` is one line, not a traceback after it."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{key}={out}: a file, not a folder; name a new or existing folder")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"{key}={out}: {existing} is not a folder, so {out} cannot be created")
    if not can_create_in(existing):
        raise UserError(f"{key}={out}: {existing} is not writable; choose a folder you can write")
    for name in files:
        if (out / name).exists():
            check_writable_file(out / name, f"{key}={out}", f"{name} is written there")


def link_subset(files: Iterable[Path], root: str | Path, out: str | Path, copy: bool = False) -> list[Path]:
    """Mirror ``files`` (all under ``root``) into ``out``: same relative paths, hard links or copies.

    ``out`` must be new or empty and must not lie inside ``root`` (the subset would
    become part of the set it was drawn from). Hard links, not symlinks: the kept tree
    is read like any other tree, where a symlink leading out of the root is not read
    (``src/data/paths.py``). A file that cannot be hard-linked (``out`` on another file
    system, or a file of another user) stops it with one line, ``out`` left as it was.
    """
    root, out = lexical_abspath(root), lexical_abspath(out)
    if written_inside(out, root) or written_inside(out.resolve(), root.resolve()):
        raise UserError(f"out={out}: inside the input {root}; write the kept subset elsewhere")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"out={out}: exists and is not an empty folder; choose a new one")
    existed = out.exists()
    written = []
    try:
        for file in files:
            source = lexical_abspath(file)
            if root not in source.parents:
                raise UserError(f"{file}: not under the input folder {root}")
            target = out / source.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copy2(source, target)
            else:
                try:
                    os.link(source, target)  # a symlink inside the input: its target is linked
                except OSError as err:
                    raise UserError(
                        f"out={out}: cannot hard-link {source} into it ({err.strerror}: out on "
                        "another file system, or a file you may not link); set copy=true to copy "
                        "the kept files, or choose an out on the input's file system"
                    ) from err
            written.append(target)
    except UserError:
        if existed:  # it was empty: leave it empty
            for child in list(out.iterdir()):
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise
    return written
