"""Ranked CSV, drop reasons, kept-subset links and manifest: values worked out by hand."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

from src.errors import UserError
from src.labelling.labelstudio import BoxGuess, ClassGuess, Proposal
from src.labelling.outputs import (
    BALANCE,
    EASIER,
    HARDER,
    drop_reasons,
    link_subset,
    write_manifest,
    write_ranked_csv,
)
from src.selection.ranking import select


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_ranked_csv_rows_in_rank_order_with_the_guess(tmp_path):
    proposals = [
        Proposal(
            tmp_path / "pool" / "b.png",
            0.25,
            2,
            BoxGuess(np.array([[1, 2, 3.456, 4]]), ["car"], [0.5], 10, 10),
        ),
        Proposal(tmp_path / "pool" / "a.png", 0.75, 1, ClassGuess("cat", 0.4)),
        Proposal(tmp_path / "pool" / "c d.png", 0.125, 3),
    ]
    rows = _rows(write_ranked_csv(tmp_path / "out" / "ranked.csv", proposals, root=tmp_path / "pool"))
    assert rows == [
        ["rank", "path", "score", "predicted", "confidence"],
        ["1", "a.png", "0.75", "cat", "0.4"],
        ["2", "b.png", "0.25", '[{"label": "car", "score": 0.5, "box": [1.0, 2.0, 3.46, 4.0]}]', "0.5"],
        ["3", "c d.png", "0.125", "", ""],
    ]


def test_drop_reasons_of_the_plain_pivot_window():
    # 10 ranks, 4 kept, pivot 0.5: centre 4.5, window [3, 7)
    assert drop_reasons(10, [3, 4, 5, 6], 0.5) == [HARDER] * 3 + [""] * 4 + [EASIER] * 3


def test_drop_reasons_when_class_balance_swapped_an_item():
    # scores 10..1 rank ids 0..9 in order; the window [3, 7) holds classes a a a b, the cap is
    # ceil(4 / 2) = 2 per class: rank 5 (the third a) is dropped and rank 2 (b, nearest outside,
    # harder side first) fills in
    classes = np.array(list("bbbaaabbbb"))
    chosen = select(np.arange(10), np.arange(10, 0, -1), budget=4, pivot=0.5, classes=classes)
    assert chosen.ranks.tolist() == [2, 3, 4, 6]
    assert drop_reasons(10, chosen.ranks, 0.5) == [
        HARDER,
        HARDER,
        "",
        "",
        "",
        BALANCE,
        "",
        EASIER,
        EASIER,
        EASIER,
    ]


def test_manifest_lists_every_item_with_its_fate(tmp_path):
    files = [tmp_path / n for n in ("x.png", "y.png", "z.png")]
    path = write_manifest(
        tmp_path / "manifest.csv", files, [0.5, 0.9, 0.1], [1, 0, 2], ["", HARDER, EASIER], root=tmp_path
    )
    assert _rows(path)[1:] == [
        ["1", "y.png", "0.9", "no", HARDER],
        ["2", "x.png", "0.5", "yes", ""],
        ["3", "z.png", "0.1", "no", EASIER],
    ]


def test_link_subset_mirrors_the_tree_with_links_or_copies(tmp_path):
    root = tmp_path / "set"
    for rel in ("cat/1.png", "cat/2.png", "dog/3.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(rel.encode())
    kept = [root / "cat" / "2.png", root / "dog" / "3.png"]
    links = link_subset(kept, root, tmp_path / "kept")
    assert sorted(p.relative_to(tmp_path / "kept").as_posix() for p in links) == ["cat/2.png", "dog/3.png"]
    # hard links: the kept tree holds no symlink leading out of it, which readers would not read
    assert all(not p.is_symlink() and p.samefile(k) for p, k in zip(links, kept))
    copies = link_subset(kept, root, tmp_path / "copied", copy=True)
    assert [p.is_symlink() for p in copies] == [False, False] and copies[1].read_bytes() == b"dog/3.png"
    assert not os.path.exists(tmp_path / "kept" / "cat" / "1.png")


def test_link_subset_refuses_unsafe_outputs(tmp_path):
    root = tmp_path / "set"
    (root / "a").mkdir(parents=True)
    (root / "a" / "1.png").write_bytes(b"1")
    with pytest.raises(UserError, match="inside the input"):
        link_subset([root / "a" / "1.png"], root, root / "kept")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(UserError, match="not an empty folder"):
        link_subset([root / "a" / "1.png"], root, tmp_path / "full")
    with pytest.raises(UserError, match="not under the input folder"):
        link_subset([tmp_path / "full" / "f"], root, tmp_path / "new")
