"""python -m src.select with a detection run's saved model, through the real CLI.

One tiny SSDLite run is trained per session (``save_model=true``: the run's own
``model.pt`` + ``model.json``). mode=label is checked against the thesis' image score
recomputed by hand from the network's raw head outputs (scipy's entropy of each kept
detection's full distribution, mean over the image) and the boxes against the
model's own detections scaled to each file; mode=keep against each image's loss
computed by torchvision's SSD training forward (not the project's per-image loss),
and the kept COCO / VOC / YOLO sets are read back with pycocotools and the project's
readers. Bad input is one line, exit 2, before the model is built.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import entropy
from torchvision.ops import batched_nms, clip_boxes_to_image

from src.data.cache import decode_stretched
from src.data.detection.annotations import read_coco, read_voc
from src.data.detection.scenes import CLASSES, render_scene
from src.data.detection.yolo import read_yolo
from src.labelling.trained import load_trained_model
from tests.conftest import compose_select, made_once, run_cli, run_module
from tests.test_detection_formats_cli import write_coco, write_voc, write_yolo

SIZE = (96, 54)  # the run's input (width, height); the files are 120 x 72
TOP_K, THRESHOLD, NMS_IOU = 10, 0.1, 0.5  # task=detection's scorer defaults, which the run recorded


def run_select(*args: str):
    return run_module("src.select", *args)


def _recalibrate_batch_norm(run_dir: Path) -> None:
    """A one-epoch SSDLite from scratch keeps BatchNorm's initial running statistics (momentum 0.03,
    one step), so in eval mode its features vanish and every image scores the same. Re-estimating
    them on the training scenes (a forward pass in train mode, no gradient) makes the saved model
    tell images apart; the file keeps the run's keys and shapes."""
    model, _, _ = load_trained_model(run_dir)
    images = torch.stack(
        [torch.from_numpy(render_scene(i, "street", *SIZE).image).permute(2, 0, 1) for i in range(16)]
    )
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # the plain average of the batch
    model.train()
    with torch.no_grad():
        inputs, _ = model._inputs(images, None)
        batch, _ = model.net.transform(inputs, None)
        model.net.head(list(model.net.backbone(batch.tensors).values()))
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, run_dir / "model.pt")


@pytest.fixture(scope="module")
def det_run(tmp_path_factory) -> Path:
    def make(folder: Path) -> str:
        run = folder / "run"
        run_cli(
            "task=detection",
            "baseline=none",
            "logger=none",
            "progress=false",
            "dataset.source.n=12",
            "dataset.sizes.pool=8",
            "dataset.sizes.val=2",
            "dataset.sizes.test=2",
            f"dataset.image_size=[{SIZE[0]},{SIZE[1]}]",
            "selection.budget=4",
            "selection.rounds=1",
            "trainer.max_epochs=1",
            "save_model=true",
            f"hydra.run.dir={run}",
        )
        _recalibrate_batch_norm(run)
        return str(run)

    return Path(made_once(tmp_path_factory, "detection-run", make))


@pytest.fixture(scope="module")
def det_model(det_run):
    model, _, meta = load_trained_model(det_run)
    return model, meta


def _stretched(files) -> torch.Tensor:
    return torch.stack([torch.from_numpy(decode_stretched(f, *SIZE)) for f in files])


def hand_scores(model, images: torch.Tensor) -> np.ndarray:
    """Per image: the mean over its (at most 10) most confident detections, after class-wise NMS and
    above the threshold, of scipy's entropy of the detection's full distribution, normalised; 1 without any."""
    net = model.net
    with torch.inference_mode():
        batch, _ = net.transform(list(images.float() / 255.0), None)
        features = list(net.backbone(batch.tensors).values())
        head = net.head(features)
        anchors = net.anchor_generator(batch, features)
    scores = []
    for i, (h, w) in enumerate(batch.image_sizes):
        probs = torch.softmax(head["cls_logits"][i].double(), dim=-1)
        boxes = clip_boxes_to_image(
            net.box_coder.decode_single(head["bbox_regression"][i], anchors[i]), (h, w)
        )
        conf, cls = probs[:, 1:].max(dim=1)
        candidates = torch.nonzero(conf > THRESHOLD).squeeze(1)
        kept = candidates[
            batched_nms(boxes[candidates].float(), conf[candidates].float(), cls[candidates], NMS_IOU)[:TOP_K]
        ]
        values = entropy(probs[kept].numpy(), base=2, axis=1) / math.log2(probs.shape[1])
        scores.append(values.mean() if len(kept) else 1.0)
    return np.array(scores)


def torchvision_losses(model, images: torch.Tensor, targets: list[dict]) -> np.ndarray:
    """Each image's classification + box loss from torchvision's own SSD training forward on a batch
    of one (BatchNorm left in eval mode, as the saved model scores)."""
    net = model.net
    net.train()
    for module in net.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        with torch.no_grad():
            out = [
                net([image.float() / 255.0], [{"boxes": t["boxes"], "labels": t["labels"] + 1}])
                for image, t in zip(images, targets)
            ]
    finally:
        net.eval()
    return np.array([float(o["classification"] + o["bbox_regression"]) for o in out])


def losses_of(model, records) -> np.ndarray:
    scale = torch.tensor([SIZE[0] / 120, SIZE[1] / 72] * 2)
    targets = [
        {"boxes": torch.from_numpy(r.boxes) * scale, "labels": torch.from_numpy(r.labels)} for r in records
    ]
    return torchvision_losses(model, _stretched([r.file for r in records]), targets)


def _one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# -- mode=label ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_label_mode_ranks_a_folder_with_a_copied_checkpoint_and_pre_annotates_boxes(
    det_run, det_model, tmp_path
):
    """checkpoint=: the weights copied away from the run, renamed, with their JSON renamed alike."""
    pool, models, out = tmp_path / "pool", tmp_path / "models", tmp_path / "out"
    sizes = [(120, 72), (96, 96), (160, 90)]
    names = [f"cam{i % 2}/{i:02d}.png" for i in range(6)]
    for i, name in enumerate(names):
        (pool / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(render_scene(700 + i, "street", *sizes[i % 3]).image).save(pool / name)
    models.mkdir()
    shutil.copy(det_run / "model.pt", models / "det-v1.pt")
    shutil.copy(det_run / "model.json", models / "det-v1.json")
    # pivot 1: the three images the model is surest of, so that their guesses hold boxes
    proc = run_select(
        f"checkpoint={models / 'det-v1.pt'}",
        f"images={pool}",
        "budget=3",
        "selection.pivot=1",
        "export=labelstudio",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    model, meta = det_model
    files = [pool / n for n in names]
    scores = hand_scores(model, _stretched(files))
    assert len(set(np.round(scores, 4))) == len(files)  # the images are told apart
    top = np.argsort(-scores, kind="stable")[-3:]
    rows = list(csv.DictReader((out / "ranked.csv").open()))
    assert [r["path"] for r in rows] == [names[i] for i in top]
    np.testing.assert_allclose([float(r["score"]) for r in rows], scores[top], rtol=1e-4)

    # the guesses: the model's detections of score >= 0.3, from its input back to each file's pixels
    with torch.inference_mode():
        found = model(_stretched([files[i] for i in top]))
    tasks = json.loads((out / "tasks.json").read_text())
    for row, task, i, det in zip(rows, tasks, top, found):
        width, height = sizes[i % 3]
        keep = det["scores"] >= 0.3
        scale = torch.tensor([width / SIZE[0], height / SIZE[1]] * 2)
        boxes = json.loads(row["predicted"])
        assert [b["label"] for b in boxes] == [CLASSES[k] for k in det["labels"][keep].tolist()]
        np.testing.assert_allclose([b["score"] for b in boxes], det["scores"][keep].numpy(), atol=1e-4)
        np.testing.assert_allclose(
            np.array([b["box"] for b in boxes]).reshape(-1, 4),
            (det["boxes"][keep] * scale).numpy(),
            atol=0.02,
        )
        # Label Studio: one rectangle per box, in percent of the file's size
        results = task["predictions"][0]["result"]
        assert [r["value"]["rectanglelabels"] for r in results] == [[b["label"]] for b in boxes]
        for r, b in zip(results, boxes):
            x0, y0, x1, y1 = np.clip(b["box"], 0, [width, height, width, height])
            assert r["original_width"] == width and r["original_height"] == height
            assert r["value"]["x"] == pytest.approx(100 * x0 / width, abs=0.05)
            assert r["value"]["width"] == pytest.approx(100 * (x1 - x0) / width, abs=0.05)
    assert any(json.loads(r["predicted"]) for r in rows)  # some proposal carries boxes
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d={names[i]}" for i in top]
    assert (
        "<RectangleLabels" in (out / "tasks.xml").read_text()
        and '<Label value="person"/>' in (out / "tasks.xml").read_text()
    )
    # the audit sits beside the weights it was made with
    audit = [json.loads(line) for line in (models / "labelling.jsonl").read_text().splitlines()]
    assert [a["image"] for a in audit] == [str(files[i]) for i in top]
    assert [a["guess"] for a in audit] == [json.loads(r["predicted"]) for r in rows]


# -- mode=keep -------------------------------------------------------------------------------------
@pytest.mark.slow
def test_keep_mode_prunes_a_coco_set_by_loss_into_a_coco_file(det_run, det_model, tmp_path):
    from pycocotools.coco import COCO

    data, out = tmp_path / "data", tmp_path / "kept"
    write_coco(data)
    proc = run_select(
        f"run_dir={det_run}",
        "mode=keep",
        "format=coco",
        f"annotations={data / 'ann.json'}",
        f"images={data / 'images'}",
        "scorer=loss",
        "fraction=0.5",
        "selection.pivot=0.5",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    records, _, _ = read_coco(data / "ann.json", data / "images", CLASSES)
    losses = losses_of(det_model[0], records)
    by_loss = np.argsort(-losses, kind="stable")
    names = [r.file.name for r in records]
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert [m["path"] for m in manifest] == [names[i] for i in by_loss]
    np.testing.assert_allclose([float(m["score"]) for m in manifest], losses[by_loss], rtol=1e-4)
    # 6 of 12 around the middle: ranks 3..8 (0-based) kept, 3 harder and 3 easier dropped
    assert [m["kept"] for m in manifest] == ["no"] * 3 + ["yes"] * 6 + ["no"] * 3
    kept_ids = sorted(int(i) for i in np.array([records[i].origin for i in by_loss])[3:9])

    original, pruned = COCO(str(data / "ann.json")), COCO(str(out / "ann.json"))
    assert sorted(pruned.getImgIds()) == kept_ids
    for image_id in kept_ids:
        assert pruned.loadImgs(image_id) == original.loadImgs(image_id)
        mine = pruned.loadAnns(pruned.getAnnIds(imgIds=image_id))
        assert mine == original.loadAnns(original.getAnnIds(imgIds=image_id)) and mine
    assert len(pruned.getAnnIds()) == sum(len(original.getAnnIds(imgIds=i)) for i in kept_ids)
    assert pruned.loadCats(pruned.getCatIds()) == original.loadCats(original.getCatIds())
    shown = sorted(p.name for p in (out / "images").iterdir())
    assert shown == sorted(f"{i}.jpg" for i in kept_ids)
    assert all(
        not p.is_symlink() and p.samefile(data / "images" / p.name) for p in (out / "images").iterdir()
    )
    assert "dataset=coco" in proc.stdout and f"dataset.source.annotations={out / 'ann.json'}" in proc.stdout


@pytest.mark.slow
def test_keep_mode_writes_a_voc_set_as_copies(det_run, det_model, tmp_path):
    data, out = tmp_path / "data", tmp_path / "kept"
    write_voc(data)  # flat images and LabelImg-style <folder>/<file> sub-folders
    proc = run_select(
        f"run_dir={det_run}",
        "mode=keep",
        "format=voc",
        f"annotations={data / 'xml'}",
        f"images={data / 'images'}",
        "scorer=loss",
        "budget=5",
        "copy=true",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    records, _, _ = read_voc(data / "xml", data / "images", CLASSES)
    losses = losses_of(det_model[0], records)
    kept = {records[i].file: records[i] for i in np.argsort(-losses, kind="stable")[:5]}  # pivot 0: highest
    again, _, _ = read_voc(out / "annotations", out / "images", CLASSES)
    assert sorted(r.file.relative_to(out / "images") for r in again) == sorted(
        f.relative_to(data / "images") for f in kept
    )
    for r in again:
        source = kept[data / "images" / r.file.relative_to(out / "images")]
        assert np.array_equal(r.boxes, source.boxes) and np.array_equal(r.labels, source.labels)
        assert not r.file.is_symlink() and r.file.read_bytes() == source.file.read_bytes()
    assert all(not p.is_symlink() for p in (out / "annotations").iterdir())


@pytest.mark.slow
def test_keep_mode_prunes_a_yolo_trees_train_split_and_keeps_val_and_test(det_run, det_model, tmp_path):
    data, out = tmp_path / "data", tmp_path / "kept"
    write_yolo(data)  # 8 train, 2 val, 2 test
    proc = run_select(
        f"run_dir={det_run}",
        "mode=keep",
        "format=yolo",
        f"images={data}",
        "scorer=loss",
        "fraction=0.25",
        "selection.pivot=1",
        f"out={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    records, _, _ = read_yolo(data, CLASSES)
    train = [r for r in records if r.split == "pool"]
    losses = losses_of(det_model[0], train)
    easiest = {train[i].file for i in np.argsort(-losses, kind="stable")[-2:]}  # pivot 1: the lowest loss
    again, _, _ = read_yolo(out, CLASSES)
    expected = easiest | {r.file for r in records if r.split != "pool"}
    assert sorted(r.file.relative_to(out) for r in again) == sorted(f.relative_to(data) for f in expected)
    by_file = {r.file: r for r in records}
    for r in again:
        source = by_file[data / r.file.relative_to(out)]
        assert (
            r.split == source.split
            and np.allclose(r.boxes, source.boxes)
            and np.array_equal(r.labels, source.labels)
        )
    assert (out / "data.yaml").samefile(data / "data.yaml")
    assert sorted(p.relative_to(out).as_posix() for p in (out / "labels").rglob("*.txt")) == sorted(
        f.relative_to(data).with_suffix(".txt").as_posix().replace("images/", "labels/", 1) for f in expected
    )
    manifest = list(csv.DictReader((out / "manifest.csv").open()))
    assert len(manifest) == 8 and [m["kept"] for m in manifest] == ["no"] * 6 + ["yes"] * 2


# -- one-line errors ------------------------------------------------------------------------------
@pytest.mark.slow
def test_bad_detection_input_is_one_line_before_the_model_is_built(det_run, tmp_path):
    data = tmp_path / "data"
    write_coco(data, names=["fedex_truck", "car", "bus", "truck", "bicycle", "motorcycle"])
    coco = [
        f"run_dir={det_run}",
        "format=coco",
        f"annotations={data / 'ann.json'}",
        f"images={data / 'images'}",
    ]
    keep = ["mode=keep", "scorer=loss", f"out={tmp_path / 'o'}"]
    # classes the model does not know (mode=keep reads the boxes)
    line = _one_error_line(run_select(*coco, *keep))
    assert line == (
        f"error: {data / 'ann.json'}: classes ['fedex_truck'] are not known to the model; it knows "
        f"{list(CLASSES)}; map them with class_map={{name: class}}"
    )
    # the same file in mode=label: its labels are ignored, but a label-needing scorer is refused
    line = _one_error_line(run_select(*coco, "scorer=loss", f"out={tmp_path / 'o'}"))
    assert line.startswith("error: scorer=loss: mode=label has no labels")
    # a folder tree cannot be pruned by a detector
    line = _one_error_line(run_select(f"run_dir={det_run}", f"images={data / 'images'}", *keep))
    assert line.startswith(
        "error: format=folder: mode=keep prunes a labelled set and a folder tree holds no boxes"
    )
    # an image outside the image root
    ann = json.loads((data / "ann.json").read_text())
    ann["images"][3]["file_name"] = "../../elsewhere/a.png"
    (data / "ann.json").write_text(json.dumps(ann))
    line = _one_error_line(run_select(*coco, f"out={tmp_path / 'o'}"))
    assert "ann.json: image 3 names image '../../elsewhere/a.png', which is outside the image root" in line
    # a checkpoint whose JSON did not travel with it
    shutil.copy(det_run / "model.pt", tmp_path / "lonely.pt")
    line = _one_error_line(
        run_select(
            f"checkpoint={tmp_path / 'lonely.pt'}", f"images={data / 'images'}", f"out={tmp_path / 'o'}"
        )
    )
    assert line.startswith(f"error: checkpoint={tmp_path / 'lonely.pt'}: no lonely.json beside it")
    assert not (tmp_path / "o").exists() and not (det_run / "labelling.jsonl").exists()


# -- the checks before the model is built (in-process, no weights needed) -------------------------


@pytest.fixture
def detector_dir(tmp_path):
    """A run directory as a detection run leaves it (the weights are a stand-in: nothing is built here)."""
    from src.labelling.trained import save_trained_model

    run = tmp_path / "run"
    run.mkdir()
    save_trained_model(
        run, torch.nn.Linear(1, 1), "detection", CLASSES, channels=3, overrides=["task=detection"]
    )
    return run


def test_label_mode_lists_a_coco_sets_images_and_ignores_its_labels(detector_dir, tmp_path):
    from src.labelling.select import check_request

    write_coco(tmp_path / "data", names=["pedestrian", "van", "x", "y", "z", "w"])  # no class the model knows
    ann = json.loads((tmp_path / "data" / "ann.json").read_text())
    ann["annotations"] = []  # nor any box: an unlabelled COCO listing is fine here
    (tmp_path / "data" / "ann.json").write_text(json.dumps(ann))
    request = check_request(
        compose_select(
            f"run_dir={detector_dir}",
            "format=coco",
            f"annotations={tmp_path / 'data' / 'ann.json'}",
            f"images={tmp_path / 'data' / 'images'}",
            f"out={tmp_path / 'o'}",
        )
    )
    assert [f.name for f in request.files] == [f"{i}.jpg" for i in range(12)]
    assert request.task == "detection" and request.data.records is None and request.n_select == 12


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["format=cvat"], "format=cvat: allowed folder | coco | voc | yolo"),
        (["format=coco"], "annotations: missing; format=coco needs annotations=<the JSON file>"),
        (
            ["format=yolo", "annotations=x.json"],
            "annotations=x.json: format=yolo takes its labels from data.yaml",
        ),
        (
            ["format=voc", "annotations=nowhere"],
            "annotations=nowhere: no such folder; format=voc reads a folder",
        ),
        (["scorer=coreset"], "scorer=coreset chooses a batch jointly"),
        (["scorer=mc_entropy"], "scorer=mc_entropy is not available for a detection model"),
        (["scorer.aggregate=median"], "scorer.aggregate='median'; allowed: mean, max, sum"),
        (["min_box_score=2"], "min_box_score=2 must be a number in \\[0, 1\\]"),
        (
            ["mode=keep", "format=yolo", "export=labelstudio"],
            "export: only mode=label writes a Label Studio file",
        ),
    ],
)
def test_bad_detection_arguments_are_one_line(detector_dir, tmp_path, overrides, message):
    from src.errors import UserError
    from src.labelling.select import check_request

    write_yolo(tmp_path / "data")
    cfg = compose_select(
        f"run_dir={detector_dir}", f"images={tmp_path / 'data'}", f"out={tmp_path / 'o'}", *overrides
    )
    with pytest.raises(UserError, match=message):
        check_request(cfg)


def test_a_classification_model_refuses_detection_files(tmp_path):
    from src.errors import UserError
    from src.labelling.select import check_request
    from src.labelling.trained import save_trained_model

    save_trained_model(
        tmp_path, torch.nn.Linear(1, 1), "classification", ["a", "b"], channels=1, overrides=[]
    )
    write_yolo(tmp_path / "data")
    cfg = compose_select(
        f"run_dir={tmp_path}", "format=yolo", f"images={tmp_path / 'data'}", f"out={tmp_path / 'o'}"
    )
    with pytest.raises(UserError, match="format=yolo: a classification model reads image folders"):
        check_request(cfg)
