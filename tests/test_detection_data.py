"""Detection data: the embedded scene generator, the COCO/VOC readers and the datamodule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.detection.annotations import read_coco, read_voc
from src.data.detection.datamodule import DetectionDataModule, FileSource, SceneSource
from src.data.detection.scenes import CLASSES, HORIZON, render_scene
from src.errors import UserError


# -- generator --------------------------------------------------------------------------------
def test_scenes_are_deterministic_and_differ_by_seed_and_style():
    a, b = render_scene(11), render_scene(11)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, render_scene(12).image)
    # same layout, visibly different look: the domain shift between the styles
    s = render_scene(11, "synthetic")
    assert np.array_equal(s.boxes, a.boxes)
    assert np.abs(s.image.astype(int) - a.image.astype(int)).mean() > 10


@pytest.mark.parametrize("style", ["street", "synthetic"])
def test_boxes_match_what_was_drawn(style):
    """Every pixel the objects changed lies in some box, and every box edge touches a changed pixel."""
    for seed in range(12):
        scene = render_scene(seed, style, 160, 90, noise=False)
        empty = render_scene(seed, style, 160, 90, noise=False, draw_objects=False)
        changed = np.any(scene.image != empty.image, axis=2)
        assert len(scene.boxes) >= 1
        covered = np.zeros_like(changed)
        for (x0, y0, x1, y1), label in zip(scene.boxes.astype(int), scene.labels):
            assert 0 <= x0 < x1 <= 160 and 0 <= y0 < y1 <= 90 and 0 <= label < len(CLASSES)
            covered[y0:y1, x0:x1] = True
            inside = changed[y0:y1, x0:x1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert y1 > HORIZON * 90  # standing on the ground, below the horizon
        assert not (changed & ~covered).any()


def test_perspective_nearer_objects_are_larger():
    heights, bottoms = [], []
    for seed in range(60):
        scene = render_scene(seed, "synthetic", 256, 144)
        for (_x0, y0, _x1, y1), label in zip(scene.boxes, scene.labels):
            if CLASSES[label] == "person":
                heights.append(y1 - y0), bottoms.append(y1)
    assert len(heights) > 20
    assert np.corrcoef(heights, bottoms)[0, 1] > 0.8


# -- readers ----------------------------------------------------------------------------------
def _image(path, w=40, h=30):
    Image.new("RGB", (w, h), (90, 90, 90)).save(path)


def _coco(tmp_path, annotations, n_images=3):
    for i in range(n_images):
        _image(tmp_path / f"im{i}.png")
    data = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 40, "height": 30} for i in range(n_images)],
        "categories": [
            {"id": 1, "name": "person"},
            {"id": 2, "name": "car"},
            {"id": 3, "name": "dog"},
            {"id": 4, "name": "pedestrian"},
        ],
        "annotations": annotations,
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


COCO_ANNS = [
    {"id": 10, "image_id": 0, "category_id": 1, "bbox": [2, 3, 10, 12]},
    {"id": 11, "image_id": 0, "category_id": 4, "bbox": [20, 5, 5, 5]},  # pedestrian -> person
    {"id": 12, "image_id": 1, "category_id": 2, "bbox": [0, 0, 40, 30]},
    {"id": 13, "image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},  # dog: dropped class
    {"id": 14, "image_id": 1, "category_id": 2, "bbox": [5, 5, 0, 4]},  # zero width
    {"id": 15, "image_id": 1, "category_id": 2, "bbox": [30, 20, 20, 5]},  # outside the image
    {"id": 16, "image_id": 1, "category_id": 99, "bbox": [1, 1, 5, 5]},  # undeclared category
    {"id": 17, "image_id": 2, "category_id": 3, "bbox": [1, 1, 5, 5]},  # image 2: only a dog
]


def test_coco_reader_maps_drops_and_skips(tmp_path):
    path = _coco(tmp_path, COCO_ANNS)
    records, report, _ = read_coco(path, tmp_path, ["person", "car"], {"pedestrian": "person"})
    assert [r.file.name for r in records] == ["im0.png", "im1.png", "im2.png"]
    np.testing.assert_allclose(records[0].boxes, [[2, 3, 12, 15], [20, 5, 25, 10]])
    assert records[0].labels.tolist() == [0, 0]
    assert records[1].labels.tolist() == [1] and records[2].labels.tolist() == []
    assert report.dropped_class == 2
    assert dict(report.bad) == {"zero or negative size": 1, "outside the image": 1, "unknown class": 1}
    records, report, _ = read_coco(
        path, tmp_path, ["person", "car"], {"pedestrian": "person"}, keep_empty=False
    )
    assert len(records) == 2 and report.dropped_empty_images == 1


def test_coco_reader_errors_name_file_and_position(tmp_path):
    path = _coco(tmp_path, COCO_ANNS)
    with pytest.raises(UserError, match=r"annotation 14: bad box \(zero or negative size\)"):
        read_coco(path, tmp_path, ["person", "car"], strict=True)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [\n  {"id": 1,, }\n]}')
    with pytest.raises(UserError, match=r"broken\.json:2:12: not valid JSON"):
        read_coco(broken, tmp_path, ["person"])
    with pytest.raises(UserError, match=r"class_map maps to \['bike'\]"):
        read_coco(path, tmp_path, ["person"], {"cycle": "bike"})
    (tmp_path / "im1.png").unlink()
    with pytest.raises(
        UserError,
        match=r"ann\.json: image 1 names image 'im1\.png', which does not exist under "
        r"the image root",
    ):
        read_coco(path, tmp_path, ["person", "car"])


def _voc(folder, name, objects, w=40, h=30):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, (a, b, c, d) in objects
    )
    (folder / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )
    _image(folder / f"{name}.png", w, h)


def test_voc_reader(tmp_path):
    _voc(tmp_path, "a", [("person", (1, 1, 10, 20)), ("van", (11, 2, 30, 12)), ("tree", (1, 1, 5, 5))])
    _voc(tmp_path, "b", [("car", (10, 10, 5, 20)), ("car", (1, 1, 45, 10))])  # inverted, outside
    records, report, _ = read_voc(tmp_path, tmp_path, ["person", "car"], {"van": "car"})
    # 1-based inclusive corners: xmin=1..xmax=10 covers pixels 0..9 -> [0, 10)
    np.testing.assert_allclose(records[0].boxes, [[0, 0, 10, 20], [10, 1, 30, 12]])
    assert records[0].labels.tolist() == [0, 1] and records[1].labels.tolist() == []
    assert report.dropped_class == 1 and sum(report.bad.values()) == 2
    with pytest.raises(UserError, match=r"b\.xml: object 0: bad box"):
        read_voc(tmp_path, tmp_path, ["person", "car"], strict=True)
    (tmp_path / "c.xml").write_text("<annotation>\n<filename>c.png</filename>\n<size></annotation>")
    with pytest.raises(UserError, match=r"c\.xml:3:\d+: not valid XML"):
        read_voc(tmp_path, tmp_path, ["person", "car"])


def test_file_source_resizes_images_and_boxes(tmp_path):
    path = _coco(tmp_path, COCO_ANNS[:2])
    source = FileSource("coco", str(path), str(tmp_path), ["person", "car"], {"pedestrian": "person"})
    source.prepare(80, 15)
    assert len(source) == 3  # images without boxes are kept by default
    image, target = source.load(0)
    assert image.shape == (3, 15, 80) and image.dtype == torch.uint8
    torch.testing.assert_close(target["boxes"], torch.tensor([[4, 1.5, 24, 7.5], [40, 2.5, 50, 5.0]]))


# -- datamodule -------------------------------------------------------------------------------
def test_scene_datamodule_splits_batches_and_majority_labels():
    dm = DetectionDataModule(
        "scenes",
        SceneSource(n=30, seed=3),
        {"pool": 16, "val": 6, "test": 6},
        image_size=(64, 36),
        batch_size=4,
        eval_batch_size=5,
    )
    dm.setup()
    pool, val, test = dm.pool_ids, dm.splits["val"], dm.splits["test"]
    assert len(pool) == 16 and not set(pool) & set(val) and not set(val) & set(test)
    assert dm.num_classes == len(CLASSES) and dm.class_names == list(CLASSES)
    images, targets, ids = next(iter(dm.pool_dataloader(pool[:5])))
    assert images.shape == (5, 3, 36, 64) and ids.tolist() == pool[:5].tolist()
    for t, i in zip(targets, ids):
        counts = torch.bincount(t["labels"], minlength=len(CLASSES))
        assert dm.labels_of([int(i)])[0] == (int(counts.argmax()) if len(t["labels"]) else -1)
    with pytest.raises(UserError, match="exceeds the 30 images"):
        DetectionDataModule("x", SceneSource(n=30), {"pool": 20, "val": 6, "test": 6}).setup()


# -- image paths stay inside the image root (issue 9) ------------------------------------------
@pytest.mark.parametrize("file_name", ["../../other/a.png", "/etc/passwd", "sub/../../a.png"])
def test_a_coco_image_path_outside_the_root_is_a_one_line_error(tmp_path, file_name):
    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    _image(other / "a.png")
    _image(tmp_path / "a.png")
    ann = tmp_path / "data" / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 7, "file_name": file_name, "width": 40, "height": 30}],
                "annotations": [],
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    with pytest.raises(UserError) as err:
        read_coco(ann, root, ["person"])
    message = str(err.value)
    assert "\n" not in message and str(ann) in message and repr(file_name) in message and str(root) in message


def test_a_symlink_inside_the_root_is_followed(tmp_path):
    """A link whose target stays inside the root; one leading out of it is refused
    (tests/test_untrusted_paths.py)."""
    root = tmp_path / "images"
    elsewhere = root / "store" / "disk2"
    elsewhere.mkdir(parents=True)
    _image(elsewhere / "a.png")
    (root / "linked").symlink_to(elsewhere)
    ann = tmp_path / "ann.json"
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "linked/a.png", "width": 40, "height": 30}],
                "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    records, _, _ = read_coco(ann, root, ["person"])
    assert records[0].file == root / "linked" / "a.png" and records[0].file.is_file()


def _voc_xml(path, filename, objects, folder=None, recorded=None, w=40, h=30):
    objs = "".join(
        f"<object><name>{n}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax>"
        f"<ymax>{d}</ymax></bndbox></object>"
        for n, (a, b, c, d) in objects
    )
    extra = (f"<folder>{folder}</folder>" if folder else "") + (
        f"<path>{recorded}</path>" if recorded else ""
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation>{extra}<filename>{filename}</filename><size><width>{w}</width>"
        f"<height>{h}</height><depth>3</depth></size>{objs}</annotation>"
    )


def test_voc_tool_exports_resolve_folder_path_then_flat_name(tmp_path):
    """LabelImg / CVAT: images in sub-folders named by <folder>, the labeller's own <path>."""
    images, ann = tmp_path / "images", tmp_path / "ann"
    (images / "batch1").mkdir(parents=True)
    (images / "extra" / "deep").mkdir(parents=True)
    _image(images / "batch1" / "a.png", 40, 30)  # <folder>/<filename>
    _image(images / "extra" / "deep" / "b.png", 40, 30)  # relative <path>
    _image(images / "c.png", 40, 30)  # flat; its <path> is the labeller's machine
    _image(images / "d.png", 40, 30)  # absolute <path> inside the root
    box = [("car", (1, 1, 10, 10))]
    _voc_xml(ann / "a.xml", "a.png", box, folder="batch1", recorded="/home/someone/batch1/a.png")
    _voc_xml(ann / "b.xml", "b.png", box, folder="nowhere", recorded="extra/deep/b.png")
    _voc_xml(ann / "c.xml", "c.png", box, folder="VOC2007", recorded="C:/Users/x/c.png")
    _voc_xml(ann / "d.xml", "d.png", box, recorded=str(images / "d.png"))
    records, _, names = read_voc(ann, images, None)
    assert [r.file for r in records] == [
        images / "batch1" / "a.png",
        images / "extra" / "deep" / "b.png",
        images / "c.png",
        images / "d.png",
    ]
    assert names == ["car"]
    # a relative name that leaves the root is an error naming the file, the entry and the root
    _voc_xml(ann / "e.xml", "e.png", box, recorded="../../etc/e.png")
    with pytest.raises(
        UserError,
        match=r"e\.xml: <path> names image '\.\./\.\./etc/e\.png', which is outside "
        r"the image root",
    ):
        read_voc(ann, images, None)
    _voc_xml(ann / "e.xml", "../e.png", box)
    with pytest.raises(UserError, match=r"e\.xml: <filename> names image '\.\./e\.png', which is outside"):
        read_voc(ann, images, None)
    _voc_xml(ann / "e.xml", "e.png", box, folder="sub")
    with pytest.raises(
        UserError,
        match=r"e\.xml: image 'e\.png' does not exist under the image root .* "
        r"\(looked for sub/e\.png, e\.png\)",
    ):
        read_voc(ann, images, None)


# -- classes ------------------------------------------------------------------------------------
def test_classes_that_keep_no_box_stop_with_the_names_found_and_how_to_map_them(tmp_path):
    trucks = [("fedex_truck", (1, 1, 10, 10)), ("ups_truck", (2, 2, 12, 12))]
    for k in range(3):
        _voc(tmp_path, f"t{k}", trucks[: 1 + (k > 0)] + [("jimmy_johns", (3, 3, 9, 9))] * (k == 2))
    with pytest.raises(UserError) as err:
        read_voc(tmp_path, tmp_path, ["person", "car"])
    message = str(err.value)
    assert "\n" not in message
    assert "dataset.source.classes=['person', 'car'] keep no box" in message
    assert "fedex_truck 3, ups_truck 2, jimmy_johns 1" in message
    assert "dataset.source.class_map={fedex_truck: person, ups_truck: person}" in message
    assert "dataset.source.classes=null" in message
    # the hint works: map them, or take the names found
    records, _, names = read_voc(
        tmp_path, tmp_path, ["truck"], {"fedex_truck": "truck", "ups_truck": "truck"}
    )
    assert names == ["truck"] and sum(len(r.labels) for r in records) == 5
    records, _, names = read_voc(tmp_path, tmp_path, None)
    assert names == ["fedex_truck", "jimmy_johns", "ups_truck"]
    assert records[2].labels.tolist() == [0, 2, 1]
    records, _, names = read_voc(tmp_path, tmp_path, None, {"ups_truck": "truck", "fedex_truck": "truck"})
    assert names == ["jimmy_johns", "truck"]


def test_a_split_without_boxes_stops_before_training(tmp_path):
    for k in range(6):
        _voc(tmp_path, f"i{k}", [("car", (1, 1, 10, 10))] if k == 0 else [("tree", (1, 1, 10, 10))])
    source = FileSource("voc", str(tmp_path), str(tmp_path), ["car"])
    dm = DetectionDataModule("voc", source, {"pool": None, "val": 2, "test": 2}, image_size=(32, 24))
    with pytest.raises(
        UserError,
        match=r"none of the 2 (val|test) images has a box of dataset\.source\.classes="
        r"\['car'\]; the files name these classes \(boxes\): tree 5, car 1",
    ):
        dm.setup()
