"""YOLO trees and the decode cache of detection images (the COCO/VOC readers: test_detection_data.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from src.data.detection.datamodule import DetectionDataModule, FileSource
from src.data.detection.yolo import read_yolo
from src.errors import UserError


def _picture(path, w, h, seed):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def yolo_tree(root, names=("person", "car"), splits=("train", "val"), per_split=3, data=None):
    """images/<split>/<k>.png (40x30) with labels/<split>/<k>.txt; image 0 of every split has no label file."""
    for s, split in enumerate(splits):
        for k in range(per_split):
            _picture(root / "images" / split / f"{k}.png", 40, 30, 10 * s + k)
            if k:
                label = root / "labels" / split / f"{k}.txt"
                label.parent.mkdir(parents=True, exist_ok=True)
                label.write_text(f"{k % 2} 0.5 0.5 0.25 0.5\n\n1 0.25 0.2 0.1 0.2\n")
    spec = {"path": ".", "names": list(names), **{s: f"images/{s}" for s in splits}}
    (root / "data.yaml").write_text(yaml.safe_dump(data if data is not None else spec))
    return root


def test_yolo_reads_boxes_splits_and_images_without_labels(tmp_path):
    root = yolo_tree(
        tmp_path / "set",
        data={"names": {0: "person", 1: "car"}, "train": "images/train", "val": ["images/val"]},
    )
    records, report, names = read_yolo(root)
    assert names == ["car", "person"]  # classes: null = the names found, sorted
    assert [r.split for r in records] == ["pool"] * 3 + ["val"] * 3
    assert [r.file.relative_to(root).as_posix() for r in records[:3]] == [
        "images/train/0.png",
        "images/train/1.png",
        "images/train/2.png",
    ]
    assert len(records[0].labels) == 0  # no label file: no boxes
    # image 1: class 1 (car) centred, 0.25 x 0.5 of 40 x 30; then car at (0.25, 0.2) size 0.1 x 0.2
    np.testing.assert_allclose(records[1].boxes, [[15, 7.5, 25, 22.5], [8, 3, 12, 9]])
    assert records[1].labels.tolist() == [0, 0] and records[2].labels.tolist() == [1, 0]
    assert report.found == {"car": 6, "person": 2}
    records, _, names = read_yolo(root, ["person"])
    assert names == ["person"] and sum(len(r.labels) for r in records) == 2
    assert len(read_yolo(root.parent / "elsewhere" / ".." / root.name)[0]) == 6  # a root written with '..'


def test_yolo_tree_through_the_datamodule_keeps_its_splits(tmp_path):
    root = yolo_tree(tmp_path / "set", splits=("train", "val", "test"), per_split=4)
    dm = DetectionDataModule(
        "yolo",
        FileSource("yolo", root=str(root), cache_dir=str(tmp_path / "cache")),
        {"pool": None, "val": None, "test": None},
        image_size=(32, 24),
    )
    dm.setup()
    assert [dm.splits[s].tolist() for s in ("pool", "val", "test")] == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
    ]
    assert dm.class_names == ["car", "person"]
    # a test split the file lacks is drawn from train; a number takes that many of a split
    root2 = yolo_tree(tmp_path / "two", per_split=6)
    dm = DetectionDataModule(
        "yolo", FileSource("yolo", root=str(root2)), {"pool": 4, "val": None, "test": 2}, image_size=(32, 24)
    )
    dm.setup()
    sizes = {s: len(v) for s, v in dm.splits.items()}
    assert sizes == {"pool": 4, "val": 6, "test": 2}
    assert set(dm.splits["test"]) | set(dm.splits["pool"]) <= set(range(6))
    assert set(dm.splits["val"]) == set(range(6, 12))
    assert not set(dm.splits["test"]) & set(dm.splits["pool"])


@pytest.mark.parametrize(
    "spec, message",
    [
        (
            {"names": ["a"], "train": "images/train", "val": "../../elsewhere/images/val"},
            r"data\.yaml: val names folder '.*elsewhere/images/val', which is outside the image root",
        ),
        (
            {"names": ["a"], "train": "/etc", "val": "images/val"},
            r"data\.yaml: train names folder '/etc', which is outside",
        ),
        (
            {"path": "/tmp", "names": ["a"], "train": "images/train", "val": "images/val"},
            r"data\.yaml: path='/tmp' leaves dataset\.source\.root=",
        ),
        ({"names": ["a"], "val": "images/val"}, r"data\.yaml: no 'train'"),
        ({"names": "a b", "train": "images/train", "val": "images/val"}, r"data\.yaml: names must be a list"),
        (
            {"names": ["a"], "train": "images/nope", "val": "images/val"},
            r"train: 'images/nope' is not a folder",
        ),
    ],
)
def test_bad_yolo_trees_are_one_line_errors(tmp_path, spec, message):
    root = yolo_tree(tmp_path / "set", data=spec)
    with pytest.raises(UserError, match=message) as err:
        read_yolo(root)
    assert "\n" not in str(err.value)


def test_bad_yolo_label_lines(tmp_path):
    root = yolo_tree(tmp_path / "set")
    (root / "labels" / "train" / "1.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.2\n")
    records, report, _ = read_yolo(root)
    assert dict(report.bad) == {"unknown class": 1, "not 5 values": 1}
    with pytest.raises(UserError, match=r"labels/train/1\.txt:3: bad box \(not 5 values 'class cx cy w h'\)"):
        read_yolo(root, strict=True)
    (root / "labels" / "train" / "1.txt").write_text("0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"labels/train/1\.txt:2: bad box \(unknown class\)"):
        read_yolo(root, strict=True)
    (root / "labels" / "train" / "1.txt").write_text("person 0.5 0.5 0.2 0.2\n")
    with pytest.raises(UserError, match=r"1\.txt:1: not a label line 'class cx cy w h'"):
        read_yolo(root)
    (root / "data.yaml").write_text("names: [a\ntrain: x\n")
    with pytest.raises(UserError, match=r"data\.yaml:\d+:\d+: not valid YAML"):
        read_yolo(root)
    with pytest.raises(UserError, match=r"dataset\.source\.root=.*nowhere: no such directory"):
        read_yolo(tmp_path / "nowhere")


# -- the decode cache ---------------------------------------------------------------------------
def test_cached_images_equal_an_independent_decode_and_boxes_scale_alongside(tmp_path):
    root = yolo_tree(tmp_path / "set", per_split=4)
    cache = tmp_path / "cache"
    cached = FileSource("yolo", root=str(root), cache_dir=str(cache))
    cached.prepare(32, 24)
    direct = FileSource("yolo", root=str(root), cache_dir=None)
    direct.prepare(32, 24)
    assert isinstance(cached.images, np.memmap) and direct.images is None
    for i, record in enumerate(cached.records):
        with Image.open(record.file) as im:  # the reference: PIL's bilinear resize of the file
            expected = torch.from_numpy(np.asarray(im.convert("RGB").resize((32, 24), Image.BILINEAR)))
        image, target = cached.load(i)
        assert torch.equal(image, expected.permute(2, 0, 1))
        assert torch.equal(direct.load(i)[0], image)
        scale = torch.tensor([32 / 40, 24 / 30] * 2)
        torch.testing.assert_close(target["boxes"], torch.from_numpy(record.boxes) * scale)
    # reused by a second source; another size is another cache and keeps the first
    first = {p.name for p in cache.iterdir()}
    again = FileSource("yolo", root=str(root), cache_dir=str(cache))
    again.prepare(32, 24)
    assert {p.name for p in cache.iterdir()} == first
    FileSource("yolo", root=str(root), cache_dir=str(cache)).prepare(48, 36)
    assert len(list(cache.iterdir())) == 2 and first <= {p.name for p in cache.iterdir()}


def test_an_image_whose_size_differs_from_its_annotation_is_named(tmp_path):
    import json

    _picture(tmp_path / "a.png", 40, 30, 0)
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "a.png", "width": 50, "height": 30}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "car"}],
            }
        )
    )
    source = FileSource("coco", str(ann), str(tmp_path), None, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(UserError, match=r"a\.png: image is 40x30 but its annotation says 50x30"):
        source.prepare(32, 24)
    assert not [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".tmp")]
