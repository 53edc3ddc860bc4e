"""Label Studio files: the writer's values by hand, and the reader on exports a real server produced.

The exports in tests/fixtures/labelstudio/ were made by Label Studio (version in
VERSION there) from the scripted round of tests/labelstudio_scenario.py; the values
expected here are worked out by hand from the percent rectangles posted to it.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from src.data.labelstudio import ClassLabel, merge_labels, read_export
from src.errors import UserError
from src.labelling.labelstudio import (
    BoxGuess,
    ClassGuess,
    Proposal,
    image_url,
    import_tasks,
    label_config,
    write_import_file,
)
from tests.labelstudio_scenario import CLASSES, EXPECTED_CLASSIFICATION, EXPECTED_DETECTION

FIXTURES = Path(__file__).parent / "fixtures" / "labelstudio"


def test_fixtures_come_from_a_recorded_server_version():
    assert (FIXTURES / "VERSION").read_text().startswith("label-studio 1.")


# -- reading real exports ---------------------------------------------------------------------------
def test_classification_export_reads_latest_submitted_choice():
    items, report = read_export(
        FIXTURES / "classification_export.json",
        "classification",
        CLASSES["classification"],
        FIXTURES,
        FIXTURES / "pool",
    )
    got = {item.file.name: CLASSES["classification"][item.label] for item in items}
    # 'b+1' has two annotations: 'bird' (id 3) and 'cat' (id 2, edited after id 3 was made): the edit wins
    assert got == EXPECTED_CLASSIFICATION == {"a cat.png": "dog", "b+1.png": "cat"}
    assert all(
        item.file.is_file() and item.file.parent == (FIXTURES / "pool" / "classification").resolve()
        for item in items
    )
    assert (report.tasks, report.labelled, report.unannotated) == (4, 2, 2)  # one skipped, one never opened


def test_detection_export_percent_rectangles_become_pixel_boxes():
    items, report = read_export(
        FIXTURES / "detection_export.json", "detection", CLASSES["detection"], FIXTURES
    )
    by_name = {r.file.name: r for r in items}
    assert set(by_name) == set(EXPECTED_DETECTION)
    a = by_name["street a.png"]
    # 80 x 60 image: x=10% y=10% w=40% h=40% -> x0 = 8, y0 = 6, x1 = 0.5 * 80 = 40, y1 = 0.5 * 60 = 30
    #                x=75% y=20% w=20% h=70% -> 60, 12, 0.95 * 80 = 76, 0.9 * 60 = 54
    assert (a.width, a.height) == (80, 60)
    np.testing.assert_allclose(a.boxes, [[8, 6, 40, 30], [60, 12, 76, 54]], atol=1e-4)
    assert a.labels.tolist() == [0, 1]
    b = by_name["street b.png"]  # submitted with no objects: a labelled background image
    assert b.boxes.shape == (0, 4) and b.labels.shape == (0,) and (b.width, b.height) == (64, 48)
    c = by_name["street c.png"]  # the model's boxes accepted; the writer clipped the one past the border
    np.testing.assert_allclose(c.boxes, [[20, 10, 60, 40], [70, 5, 100, 45]], atol=1e-4)
    assert c.boxes.dtype == np.float32 and c.labels.dtype == np.int64
    assert report.bad_boxes == {"zero or negative size": 1} and report.boxes == 4 and report.labelled == 3


def test_reading_the_other_project_type_is_one_line():
    with pytest.raises(UserError, match="rectanglelabels.*not a classification export"):
        read_export(FIXTURES / "detection_export.json", "classification", CLASSES["detection"], FIXTURES)
    with pytest.raises(UserError, match="a classification export, not detection"):
        read_export(FIXTURES / "classification_export.json", "detection", CLASSES["classification"], FIXTURES)


def test_classes_the_model_does_not_know_are_refused():
    with pytest.raises(
        UserError, match=r"task 1: class 'dog' is not one the model knows; allowed: cat, bird"
    ):
        read_export(FIXTURES / "classification_export.json", "classification", ["cat", "bird"], FIXTURES)
    with pytest.raises(UserError, match=r"class 'person' is not one the model knows; allowed: car$"):
        read_export(FIXTURES / "detection_export.json", "detection", ["car"], FIXTURES)


def test_images_outside_the_pool_are_refused():
    with pytest.raises(UserError, match="outside the pool"):
        read_export(
            FIXTURES / "detection_export.json",
            "detection",
            CLASSES["detection"],
            FIXTURES,
            pool_root=FIXTURES / "pool" / "classification",
        )


def _tampered(tmp_path: Path, name: str, change) -> Path:
    tasks = json.loads((FIXTURES / name).read_text())
    change(tasks)
    path = tmp_path / name
    path.write_text(json.dumps(tasks))
    return path


@pytest.mark.parametrize(
    "image, why",
    [
        ("/data/local-files/?d=../../../../etc/passwd", "outside the pool"),
        ("/data/local-files/?d=pool/classification/../../../test_labelstudio.py", "outside the pool"),
        ("/data/local-files/?d=%2Fetc%2Fpasswd", "not a relative path"),
        ("/data/local-files/?d=pool/classification/missing.png", "does not exist in the pool"),
        ("/data/upload/1/1234-a.png", "does not start with"),
        (None, "does not start with"),
    ],
)
def test_image_references_must_name_pool_files(tmp_path, image, why):
    def change(tasks):
        tasks[0]["data"]["image"] = image

    path = _tampered(tmp_path, "classification_export.json", change)
    with pytest.raises(UserError, match=f"task 1: image .*{why}"):
        read_export(path, "classification", CLASSES["classification"], FIXTURES, FIXTURES / "pool")


def test_rotated_or_malformed_rectangles_are_refused(tmp_path):
    def rotate(tasks):
        tasks[0]["annotations"][0]["result"][0]["value"]["rotation"] = 30

    with pytest.raises(UserError, match="rotated rectangle"):
        read_export(
            _tampered(tmp_path, "detection_export.json", rotate), "detection", CLASSES["detection"], FIXTURES
        )

    def text_coordinate(tasks):
        tasks[0]["annotations"][0]["result"][0]["value"]["x"] = "1e400"

    with pytest.raises(UserError, match="not a finite number"):
        read_export(
            _tampered(tmp_path, "detection_export.json", text_coordinate),
            "detection",
            CLASSES["detection"],
            FIXTURES,
        )


@pytest.mark.parametrize(
    "content, why",
    [
        ("[{]", r"classification_export.json:1:3: not valid JSON"),
        ('{"tasks": []}', "not a Label Studio JSON export"),
        (
            '[{"image": "/data/local-files/?d=a.png", "choice": "cat"}]',
            "JSON_MIN, CSV and import files are not read",
        ),
    ],
)
def test_files_of_another_shape_are_one_line(tmp_path, content, why):
    path = tmp_path / "classification_export.json"
    path.write_text(content)
    with pytest.raises(UserError, match=why):
        read_export(path, "classification", CLASSES["classification"], FIXTURES)


def test_an_import_file_is_not_an_export():
    with pytest.raises(UserError, match="not a Label Studio 'JSON' export"):
        read_export(
            FIXTURES / "classification_import.json", "classification", CLASSES["classification"], FIXTURES
        )


def test_merge_later_labels_win_whole_and_keep_earlier_order(tmp_path):
    a, b, c = (tmp_path / n for n in ("a.png", "b.png", "c.png"))
    earlier = [ClassLabel(a, 0), ClassLabel(b, 1)]
    later = [
        ClassLabel(tmp_path / "x" / ".." / "b.png", 2),
        ClassLabel(c, 0),
    ]  # the same b, spelt differently
    assert merge_labels(earlier, later) == [ClassLabel(a, 0), later[0], ClassLabel(c, 0)]


# -- writing -----------------------------------------------------------------------------------------
def test_detection_guess_becomes_percent_rectangles_clipped_to_the_image(tmp_path):
    image = tmp_path / "pool" / "x.png"
    guess = BoxGuess(
        np.array([[20.0, 10.0, 60.0, 40.0], [70.0, 5.0, 110.0, 45.0]]),
        ["car", "person"],
        [0.9, 0.6],
        width=100,
        height=50,
    )
    (task,) = import_tasks([Proposal(image, 0.25, 1, guess)], "detection", ["car", "person"], tmp_path)
    assert task["data"] == {"image": "/data/local-files/?d=pool/x.png", "al_score": 0.25, "al_rank": 1}
    (prediction,) = task["predictions"]
    assert prediction["score"] == pytest.approx(0.75)  # mean box score: the model's confidence
    values = [r["value"] for r in prediction["result"]]
    # 100 x 50: (20, 10, 60, 40) -> x 20%, y 20%, w 40%, h 60%; (70, 5, 110 -> 100, 45) -> 70, 10, 30, 80
    np.testing.assert_allclose(
        [[v["x"], v["y"], v["width"], v["height"]] for v in values],
        [[20, 20, 40, 60], [70, 10, 30, 80]],
        atol=1e-9,
    )
    assert [v["rectanglelabels"] for v in values] == [["car"], ["person"]]
    assert [r["score"] for r in prediction["result"]] == [0.9, 0.6]
    assert {(r["original_width"], r["original_height"]) for r in prediction["result"]} == {(100, 50)}


def test_classification_tasks_in_rank_order_with_guess_and_score(tmp_path):
    proposals = [
        Proposal(tmp_path / "b.png", 0.5, 2, ClassGuess("dog", 0.4)),
        Proposal(tmp_path / "a b+c.png", 0.9, 1, ClassGuess("cat", 0.3)),
        Proposal(tmp_path / "c.png", 0.1, 3),
    ]
    path = write_import_file(
        tmp_path / "out" / "tasks.json", proposals, "classification", ["cat", "dog"], tmp_path
    )
    tasks = json.loads(path.read_text())
    assert [t["data"]["al_rank"] for t in tasks] == [1, 2, 3]
    assert tasks[0]["data"]["image"] == "/data/local-files/?d=a%20b%2Bc.png"
    assert tasks[0]["predictions"] == [
        {
            "model_version": "al-select",
            "score": 0.3,
            "result": [
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}
            ],
        }
    ]
    assert "predictions" not in tasks[2]
    choices = ET.fromstring(path.with_suffix(".xml").read_text()).find("Choices")
    assert [c.get("value") for c in choices] == ["cat", "dog"] and choices.get("toName") == "image"


def test_label_config_escapes_class_names():
    root = ET.fromstring(label_config("detection", ['say "hi"', "a<b&c"]))
    assert [lab.get("value") for lab in root.find("RectangleLabels")] == ['say "hi"', "a<b&c"]


def test_images_outside_the_document_root_cannot_be_served(tmp_path):
    with pytest.raises(UserError, match="not under the Label Studio document root"):
        image_url(tmp_path.parent / "elsewhere.png", tmp_path)
    with pytest.raises(UserError, match="task='segmentation'"):
        label_config("segmentation", ["a"])


def test_exports_read_from_a_copied_pool(tmp_path):
    """The export names images relative to the document root, so the pool may move with it."""
    shutil.copytree(FIXTURES / "pool", tmp_path / "pool")
    items, _ = read_export(
        FIXTURES / "classification_export.json", "classification", CLASSES["classification"], tmp_path
    )
    assert {i.file for i in items} == {
        tmp_path / "pool" / "classification" / n for n in EXPECTED_CLASSIFICATION
    }


@pytest.mark.parametrize(
    "stamp, expected", [("2000-01-01T00:00:00Z", "dog"), ("2100-01-01T00:00:00Z", "bird")]
)
def test_an_image_in_two_tasks_keeps_the_later_label(tmp_path, stamp, expected):
    def duplicate(tasks):
        copy = json.loads(json.dumps(tasks[0]))  # 'a cat.png', labelled 'dog' in the real export
        copy["id"] = 99
        copy["annotations"][0].update(
            id=99,
            updated_at=stamp,
            result=[
                {"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["bird"]}}
            ],
        )
        tasks.append(copy)

    items, report = read_export(
        _tampered(tmp_path, "classification_export.json", duplicate),
        "classification",
        CLASSES["classification"],
        FIXTURES,
    )
    got = {i.file.name: CLASSES["classification"][i.label] for i in items}
    assert got["a cat.png"] == expected and report.superseded == 1 and report.labelled == 2


def test_labelstudio_source_decodes_the_merged_labelled_images(tmp_path):
    from src.labelling.source import LabelStudioSource

    source = LabelStudioSource(
        str(FIXTURES / "classification_export.json"),
        CLASSES["classification"],
        FIXTURES,
        FIXTURES / "pool",
        image_size=16,
        cache_dir=tmp_path,
    )
    data = source.load()
    assert data.images.shape == (2, 3, 16, 16) and data.class_names == CLASSES["classification"]
    assert [CLASSES["classification"][k] for k in data.labels] == ["dog", "cat"]  # 'a cat.png', 'b+1.png'
    # the scenario paints image k's background 40 * k (a corner) and a white square inside
    assert data.images[0, :, 0, 0].tolist() == [0, 0, 0] and data.images[1, :, 0, 0].tolist() == [40, 40, 40]
    assert data.images[0].max() == 255


def test_labelstudio_source_without_labels_is_one_line(tmp_path):
    from src.labelling.source import LabelStudioSource

    export = tmp_path / "empty.json"
    export.write_text("[]")
    with pytest.raises(UserError, match="no labelled image in them yet"):
        LabelStudioSource(str(export), ["cat"], FIXTURES, cache_dir=tmp_path).load()


@pytest.mark.slow
def test_run_trains_on_a_labelstudio_campaign(tmp_path):
    """`python -m src.run dataset=labelstudio` over two rounds of exports (the real export's task,
    repeated over 60 pool images, classes in turn), the second relabelling 'img 0' from cat to bird."""
    from PIL import Image

    from tests.conftest import read_jsonl, run_cli

    real = json.loads((FIXTURES / "classification_export.json").read_text())[0]  # 'a cat.png', labelled 'dog'
    (tmp_path / "pool").mkdir()
    rounds = [[], []]
    for i in range(60):
        Image.fromarray(np.full((12, 12, 3), 80 * (i % 3), np.uint8)).save(tmp_path / "pool" / f"img {i}.png")
        task = json.loads(json.dumps(real))
        task["id"], task["data"]["image"] = i + 1, f"/data/local-files/?d=pool/img%20{i}.png"
        task["annotations"][0]["result"][0]["value"]["choices"] = [CLASSES["classification"][i % 3]]
        rounds[i >= 30].append(task)
    relabelled = json.loads(json.dumps(rounds[0][0]))  # 'img 0' again in round 2
    relabelled["annotations"][0]["result"][0]["value"]["choices"] = ["bird"]
    rounds[1].append(relabelled)
    for k, tasks in enumerate(rounds):
        (tmp_path / f"round{k + 1}.json").write_text(json.dumps(tasks))
    run_dir = tmp_path / "run"
    run_cli(
        "dataset=labelstudio",
        f"dataset.exports=[{tmp_path}/round1.json,{tmp_path}/round2.json]",
        f"dataset.document_root={tmp_path}",
        f"dataset.pool_root={tmp_path}/pool",
        "dataset.classes=[cat,dog,bird]",
        "dataset.image_size=12",
        f"dataset.cache_dir={tmp_path}/cache",
        "debug=fast",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=10",
        "dataset.sizes.test=10",
        "selection.budget=10",
        f"hydra.run.dir={run_dir}",
    )
    records = read_jsonl(run_dir / "rounds.jsonl")
    assert [r["n_labelled"] for r in records] == [10, 20]
    counts = json.loads((run_dir / "class_distribution.json").read_text())["counts"]
    # 20 images per class, one cat relabelled bird: 19 / 20 / 21 over pool (the rest) + val + test
    assert np.sum([counts[split] for split in ("pool", "val", "test")], axis=0).tolist() == [19, 20, 21]


# -- training on the boxes that came back: task=detection dataset=labelstudio_detection ---------------
def test_a_detection_export_is_a_dataset_of_the_detection_loop(compose_cfg):
    import hydra
    import torch

    exports = [FIXTURES / "detection_export.json"] * 2  # a later round relabelling the same images
    cfg = compose_cfg(
        "task=detection",
        "dataset=labelstudio_detection",
        f"dataset.source.annotations=[{','.join(str(e) for e in exports)}]",
        f"dataset.source.document_root={FIXTURES}",
        f"dataset.source.images={FIXTURES / 'pool'}",
        "dataset.source.classes=[car,person]",
        "dataset.source.cache_dir=null",
        "dataset.sizes.val=0",
        "dataset.sizes.test=0",
        "dataset.image_size=[40,30]",
    )
    dm = hydra.utils.instantiate(cfg.dataset)
    dm.setup()
    assert dm.class_names == ["car", "person"] and len(dm.pool_ids) == 3  # merged: each image once
    by_name = {dm.source.records[i].file.name: dm.source.load(i) for i in dm.pool_ids}
    image, target = by_name["street a.png"]
    assert tuple(image.shape) == (3, 30, 40)
    # 80 x 60 labelled, 40 x 30 trained: every coordinate halves
    np.testing.assert_allclose(target["boxes"], [[4, 3, 20, 15], [30, 6, 38, 27]], atol=1e-4)
    assert target["labels"].tolist() == [0, 1]
    # 100 x 50 -> 40 x 30: x by 0.4, y by 0.6
    np.testing.assert_allclose(
        by_name["street c.png"][1]["boxes"], [[8, 6, 24, 24], [28, 3, 40, 27]], atol=1e-4
    )
    assert by_name["street b.png"][1]["boxes"].shape == torch.Size([0, 4])


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.source.document_root=null", "dataset.source.document_root: not set"),
        ("dataset.source.classes=null", "dataset.source.classes: empty"),
        ("dataset.source.annotations=[]", "dataset.source.annotations: empty"),
    ],
)
def test_a_detection_export_dataset_without_its_settings_is_one_line(compose_cfg, override, message):
    from src.config.instantiate import build  # what the run builds its data with: a UserError stays one

    cfg = compose_cfg(
        "task=detection",
        "dataset=labelstudio_detection",
        f"dataset.source.annotations=[{FIXTURES / 'detection_export.json'}]",
        f"dataset.source.document_root={FIXTURES}",
        "dataset.source.classes=[car,person]",
        override,
    )
    with pytest.raises(UserError, match=message):
        build(cfg.dataset)
