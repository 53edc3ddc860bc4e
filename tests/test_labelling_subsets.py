"""A pruned detection set written in its input's format: the paths a new root would not find are rewritten."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from src.data.detection.annotations import read_coco, read_voc
from src.data.detection.yolo import read_yolo
from src.errors import UserError
from src.labelling.inputs import read_input
from src.labelling.subsets import write_kept

CLASSES = ["person", "car"]


def _image(path, size=(40, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(path)


def test_coco_file_names_written_absolute_become_relative(tmp_path):
    root = tmp_path / "images"
    for name in ("a.png", "sub/b.png", "c.png"):
        _image(root / name)
    coco = {
        "info": {"note": "kept as is"},
        "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "car"}],
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": "two", "file_name": str(root / "sub" / "b.png"), "width": 40, "height": 30},
            {"id": 3, "file_name": "c.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10]},
            {"id": 2, "image_id": "two", "category_id": 2, "bbox": [5, 5, 20, 10]},
            {"id": 3, "image_id": 3, "category_id": 2, "bbox": [0, 0, 5, 5]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    data = read_input("coco", root, tmp_path / "ann.json", "detection", "keep", CLASSES)
    write_kept(data, [0, 1], tmp_path / "out")
    written = json.loads((tmp_path / "out" / "ann.json").read_text())
    assert written["info"] == coco["info"] and written["categories"] == coco["categories"]
    assert [i["file_name"] for i in written["images"]] == ["a.png", "sub/b.png"]
    assert [a["id"] for a in written["annotations"]] == [1, 2]
    records, _, _ = read_coco(tmp_path / "out" / "ann.json", tmp_path / "out" / "images", CLASSES)
    assert [r.file for r in records] == [
        tmp_path / "out" / "images" / "a.png",
        tmp_path / "out" / "images" / "sub" / "b.png",
    ]
    assert np.array_equal(records[1].boxes, [[5, 5, 25, 15]])


def test_a_voc_image_found_by_an_absolute_path_gets_a_relative_one(tmp_path):
    root, xml = tmp_path / "images", tmp_path / "xml"
    _image(root / "deep" / "x.png")
    _image(root / "y.png")
    xml.mkdir()
    box = "<object><name>car</name><bndbox><xmin>2</xmin><ymin>3</ymin><xmax>20</xmax><ymax>13</ymax></bndbox></object>"
    size = "<size><width>40</width><height>30</height></size>"
    (xml / "x.xml").write_text(
        f"<annotation><filename>x.png</filename><path>{root / 'deep' / 'x.png'}</path>"
        f"{size}{box}</annotation>"
    )
    (xml / "y.xml").write_text(f"<annotation><filename>y.png</filename>{size}{box}</annotation>")
    data = read_input("voc", root, xml, "detection", "keep", CLASSES)
    write_kept(data, [0, 1], tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "annotations" / "y.xml").is_symlink()  # found as it is
    assert not (out / "annotations" / "x.xml").is_symlink()  # rewritten
    assert "<path>deep/x.png</path>" in (out / "annotations" / "x.xml").read_text()
    records, _, _ = read_voc(out / "annotations", out / "images", CLASSES)
    assert [r.file.relative_to(out / "images").as_posix() for r in records] == ["deep/x.png", "y.png"]
    assert all(np.array_equal(r.boxes, [[1, 2, 20, 13]]) for r in records)


def test_a_yolo_data_yaml_with_an_absolute_path_is_rewritten(tmp_path):
    root = tmp_path / "tree"
    for split, names in (("train", ["a", "b", "c"]), ("val", ["d"])):
        for name in names:
            _image(root / "set" / "images" / split / f"{name}.png")
            (root / "set" / "labels" / split).mkdir(parents=True, exist_ok=True)
            (root / "set" / "labels" / split / f"{name}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (root / "set" / "labels" / "train" / "b.txt").unlink()  # an image without objects
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {"path": str(root / "set"), "train": "images/train", "val": "images/val", "names": CLASSES}
        )
    )
    data = read_input("yolo", root, None, "detection", "keep", CLASSES)
    assert [r.file.name for r in data.records] == ["a.png", "b.png", "c.png"] and len(data.kept_whole) == 1
    write_kept(data, [1, 2], tmp_path / "out", copy=True)
    out = tmp_path / "out"
    assert yaml.safe_load((out / "data.yaml").read_text())["path"] == "set"
    records, _, _ = read_yolo(out, CLASSES)
    assert [(r.file.relative_to(out).as_posix(), r.split, len(r.labels)) for r in records] == [
        ("set/images/train/b.png", "pool", 0),
        ("set/images/train/c.png", "pool", 1),
        ("set/images/val/d.png", "val", 1),
    ]
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_a_yolo_tree_whose_val_reuses_train_images_cannot_be_pruned(tmp_path):
    root = tmp_path / "tree"
    for name in ("a", "b"):
        _image(root / "images" / "train" / f"{name}.png")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/train", "names": CLASSES})
    )
    with pytest.raises(UserError, match="a.png is in the train split and in val or test"):
        read_input("yolo", root, None, "detection", "keep", CLASSES)
    assert len(read_input("yolo", root, None, "detection", "label", CLASSES).files) == 2
