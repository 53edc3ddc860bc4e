"""End to end through the real CLI on tiny trees in the publishers' layouts."""

from __future__ import annotations

import json

import pytest

from tests.conftest import read_jsonl, run_cli
from tests.test_imagenet import a_tree, make_tree, r_tree, v2_tree

pytestmark = pytest.mark.slow
QUICK = ["logger=none", "progress=false", "trainer.max_epochs=2", "selection.rounds=2"]


def test_mixed_from_imagenet_trees_under_the_data_dir(tmp_path):
    data = tmp_path / "data"
    v2_tree(data), r_tree(data), a_tree(data)  # the names the source expects under paths.data_dir
    run_dir = tmp_path / "run"
    run_cli(
        "scorer=entropy",
        "dataset=mixed",
        "source=imagenet",
        f"paths.data_dir={data}",
        "source.image_size=32",
        "source.resize_size=36",
        "dataset.sizes.pool=24",
        "dataset.sizes.val=6",
        "dataset.sizes.test=6",
        "selection.budget=8",
        *QUICK,
        f"hydra.run.dir={run_dir}",
    )
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [8, 16]
    assert all(0.0 <= r["test/acc_top1"] <= 1.0 and "test/acc_top20" in r for r in records)  # 1000 classes
    counts = json.loads((run_dir / "class_distribution.json").read_text())["counts"]
    assert [sum(counts[s]) for s in ("pool", "val", "test")] == [24, 6, 6]
    assert (run_dir / "class_distribution.png").stat().st_size > 1000
    assert (
        len([p for p in (data / "cache").iterdir() if p.name.startswith("imagenet")]) == 3
    )  # one cache per source


def test_a_users_folder_runs_with_the_folder_dataset(tmp_path):
    tree = make_tree(tmp_path / "photos", {"cat": 0, "dog": 1, "emu": 2}, 12)
    run_dir = tmp_path / "run"
    run_cli(
        "dataset=folder",
        f"dataset.root={tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "dataset.image_size=24",
        "selection.budget=6",
        *QUICK,
        f"hydra.run.dir={run_dir}",
    )
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [6, 12]
    counts = json.loads((run_dir / "class_distribution.json").read_text())
    assert counts["class_names"] == ["cat", "dog", "emu"]
    assert [sum(counts["counts"][s]) for s in ("pool", "val", "test")] == [28, 4, 4]


def test_a_missing_dataset_stops_before_training_with_one_line(tmp_path):
    proc = run_cli(
        "dataset=v2",
        "source=imagenet",
        f"paths.data_dir={tmp_path}",
        *QUICK,
        f"hydra.run.dir={tmp_path / 'run'}",
        check=False,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(
        "error: ImageNet-V2 (matched frequency) not found at "
        f"{tmp_path / 'imagenetv2-matched-frequency-format-val'}: expected "
    )
    assert "github.com/modestyachts/ImageNetV2" in line and "source.roots.imagenet_v2" in line
    assert not (tmp_path / "run" / "rounds.jsonl").exists()
