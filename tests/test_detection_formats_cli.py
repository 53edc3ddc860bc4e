"""COCO JSON, VOC XML (flat and tool-export layouts) and YOLO trees through the real CLI.

Each test writes a dozen small JPEGs of embedded scenes with their true boxes in one
format, then runs ``python -m src.run task=detection dataset=<format> ...`` as a user
would: two rounds must be recorded; the bad trees must stop with exit status 2 and one
line naming the file and the entry, before any training.
"""

from __future__ import annotations

import json

import pytest
import yaml
from PIL import Image

from src.data.detection.scenes import CLASSES, render_scene
from tests.conftest import read_jsonl, run_cli

N_IMAGES, W, H = 12, 120, 72
SPLIT_OF = ["train"] * 8 + ["val"] * 2 + ["test"] * 2
RUN = [
    "task=detection",
    "baseline=none",
    "logger=none",
    "progress=false",
    "selection.budget=4",
    "selection.rounds=2",
    "trainer.max_epochs=1",
    "dataset.image_size=[96,54]",
    "dataset.num_workers=0",
    "dataset.eval_batch_size=8",
]


def scenes():
    for i in range(N_IMAGES):
        scene = render_scene(500 + i, "street", W, H)
        yield i, scene.image, scene.boxes.tolist(), [CLASSES[k] for k in scene.labels.tolist()]


def write_coco(root, names=None):
    (root / "images").mkdir(parents=True)
    images, anns = [], []
    for i, pixels, boxes, labels in scenes():
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg")
        images.append({"id": i, "file_name": f"{i}.jpg", "width": W, "height": H})
        for (x0, y0, x1, y1), label in zip(boxes, labels):
            anns.append(
                {
                    "id": len(anns),
                    "image_id": i,
                    "category_id": CLASSES.index(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    names = names or CLASSES
    (root / "ann.json").write_text(
        json.dumps(
            {
                "images": images,
                "annotations": anns,
                "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
            }
        )
    )
    return [
        "dataset=coco",
        f"dataset.source.annotations={root / 'ann.json'}",
        f"dataset.source.images={root / 'images'}",
    ]


def write_voc(root):
    """Pascal VOC's own flat layout for even images, a LabelImg/CVAT export for odd ones:
    images/<folder>/<file>, with the labeller's absolute <path>."""
    for i, pixels, boxes, labels in scenes():
        folder = f"batch{i % 3}" if i % 2 else ""
        image = root / "images" / folder / f"{i}.jpg"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(image)
        objects = "".join(
            f"<object><name>{n}</name><bndbox><xmin>{x0 + 1:.0f}</xmin><ymin>{y0 + 1:.0f}</ymin>"
            f"<xmax>{x1:.0f}</xmax><ymax>{y1:.0f}</ymax></bndbox></object>"
            for (x0, y0, x1, y1), n in zip(boxes, labels)
        )
        extra = (
            f"<folder>{folder}</folder><path>/home/labeller/{folder}/{i}.jpg</path>"
            if folder
            else "<folder>VOC2012</folder>"
        )
        (root / "xml").mkdir(exist_ok=True)
        (root / "xml" / f"{i}.xml").write_text(
            f"<annotation>{extra}<filename>{i}.jpg</filename><size><width>{W}</width><height>{H}</height>"
            f"<depth>3</depth></size>{objects}</annotation>"
        )
    return [
        "dataset=voc",
        f"dataset.source.annotations={root / 'xml'}",
        f"dataset.source.images={root / 'images'}",
    ]


def write_yolo(root):
    for i, pixels, boxes, labels in scenes():
        split = SPLIT_OF[i]
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(root / "images" / split / f"{i}.jpg")
        lines = [
            f"{CLASSES.index(n)} {(x0 + x1) / 2 / W} {(y0 + y1) / 2 / H} {(x1 - x0) / W} {(y1 - y0) / H}"
            for (x0, y0, x1, y1), n in zip(boxes, labels)
        ]
        (root / "labels" / split / f"{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": ".",
                "train": "images/train",
                "val": "images/val",
                "test": "images/test",
                "names": list(CLASSES),
            }
        )
    )
    return ["dataset=yolo", f"dataset.source.root={root}"]


SIZES = ["dataset.sizes.val=2", "dataset.sizes.test=2"]
LAYOUTS = {
    "coco": lambda root: (
        write_coco(root)
        + SIZES
        + ["dataset.source.classes=[person,car]", "dataset.source.class_map={bus: car, truck: car}"]
    ),
    "voc_flat_and_tool_export": lambda root: write_voc(root) + SIZES + ["dataset.source.classes=null"],
    "yolo": write_yolo,
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_annotation_layout_runs_two_rounds(tmp_path, layout):
    args = LAYOUTS[layout](tmp_path / "data")
    run_cli(*RUN, *args, f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}")
    records = read_jsonl(tmp_path / "run" / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [4, 8]
    assert len(set(records[0]["selected_ids"]) | set(records[1]["selected_ids"])) == 8
    assert list((tmp_path / "cache").iterdir())  # decoded once into the cache


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_bad_trees_stop_with_one_line_naming_the_file_and_entry(tmp_path):
    """(The same errors of VOC and YOLO trees: test_detection_data.py, test_detection_files.py.)"""
    # class names that match none of the configured classes: the names found and how to map them
    args = write_coco(tmp_path / "trucks", names=["fedex_truck", "ups_truck", "jimmy_johns", "a", "b", "c"])
    line = _one_error_line(run_cli(*RUN, *args, *SIZES, f"hydra.run.dir={tmp_path / 'r1'}", check=False))
    assert "ann.json" in line and "keep no box" in line and "fedex_truck" in line
    assert "dataset.source.class_map={" in line and "fedex_truck: person" in line
    # a missing image: the annotation file, the entry, the root
    (tmp_path / "trucks" / "images" / "3.jpg").unlink()
    line = _one_error_line(run_cli(*RUN, *args, *SIZES, f"hydra.run.dir={tmp_path / 'r2'}", check=False))
    assert "ann.json: image 3 names image '3.jpg', which does not exist under the image root" in line
    # an image path outside the image root (issue: read silently before)
    data = json.loads((tmp_path / "trucks" / "ann.json").read_text())
    data["images"][3]["file_name"] = "../../other/a.png"
    (tmp_path / "trucks" / "ann.json").write_text(json.dumps(data))
    line = _one_error_line(run_cli(*RUN, *args, *SIZES, f"hydra.run.dir={tmp_path / 'r3'}", check=False))
    assert "ann.json: image 3 names image '../../other/a.png', which is outside the image root" in line
    assert not (tmp_path / "r1" / "rounds.jsonl").exists()
