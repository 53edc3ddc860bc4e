"""Paths from untrusted input against their root, with every symlink followed (issue 18).

A symlink that leads out of a root is never read: a path an annotation file or a Label
Studio export names is refused with one line naming the file and the root; a file a
folder scan finds (dataset=folder, src.select images=<folder>, a YOLO split folder) is
skipped and counted in the log. A symlink whose target stays inside the root is read,
and a root that is itself a symlink is fine. Also here: a YOLO tree's unpaired files
are counted in its load summary, and split sizes larger than a detection set name the
keys to set with values that fit.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
from pathlib import Path

import pytest
import yaml
from PIL import Image

from src.data.detection.annotations import read_coco, read_voc
from src.data.detection.yolo import read_yolo
from src.data.folder import ImageFolderSource
from src.data.labelstudio import read_export
from src.data.paths import inside_root, join_inside
from src.errors import UserError
from src.labelling.outputs import link_subset
from src.labelling.pool import pool_files
from tests.conftest import compose_select, read_jsonl, run_cli
from tests.test_faults import _tree, one_error_line
from tests.test_labelstudio import FIXTURES
from tests.test_select import run_select, trained_run, write_images  # noqa: F401  (trained_run: a fixture)


def _image(path: Path, shade: int = 90, w: int = 40, h: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (w, h), (shade, shade, shade)).save(path)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    """A readable image outside every root of the test: what a planted symlink points at."""
    return _image(tmp_path / "private" / "secret.png", shade=200)


# -- the helper ------------------------------------------------------------------------------------
def test_inside_root_resolves_both_the_path_and_the_root(tmp_path, secret):
    root = tmp_path / "root"
    _image(root / "store" / "a.png")
    (root / "in.png").symlink_to(root / "store" / "a.png")
    (root / "out.png").symlink_to(secret)
    (root / "outdir").symlink_to(secret.parent)
    (tmp_path / "alias").symlink_to(root)
    assert inside_root(root / "in.png", root) and inside_root(root / "store" / "a.png", root)
    assert not inside_root(root / "out.png", root) and not inside_root(root / "outdir" / "secret.png", root)
    assert not inside_root(root / ".." / "private" / "secret.png", root)  # '..' as written
    # a root that is itself a symlink: resolved first, its files stay inside it
    assert inside_root(tmp_path / "alias" / "in.png", tmp_path / "alias")
    assert not inside_root(tmp_path / "alias" / "out.png", tmp_path / "alias")
    assert join_inside(root, "store/../in.png") == root / "in.png"
    assert join_inside(root, "out.png") is None and join_inside(root, str(secret)) is None
    (root / "loop").symlink_to(root / "loop")
    assert not inside_root(root / "loop", root)


# -- folder trees: dataset=folder, through the real CLI -----------------------------------------------
@pytest.mark.slow
def test_a_folder_dataset_skips_a_symlink_out_of_the_root_and_counts_it(tmp_path, secret):
    tree = tmp_path / "tree"
    _tree(tree, {"cat": 10, "dog": 10})
    (tree / "cat" / "planted.png").symlink_to(secret)  # leads out: skipped
    (tree / "dog" / "again.png").symlink_to(tree / "dog" / "0.png")  # stays inside: read
    run_dir = tmp_path / "run"
    proc = run_cli(
        "dataset=folder",
        f"dataset.root={tree}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "dataset.image_size=8",
        "dataset.sizes.pool=null",
        "dataset.sizes.val=4",
        "dataset.sizes.test=4",
        "logger=none",
        "progress=false",
        "trainer.max_epochs=1",
        "selection.rounds=1",
        "selection.budget=4",
        f"hydra.run.dir={run_dir}",
    )
    log = proc.stdout + proc.stderr
    assert (
        f"image folder at {tree}: 1 file skipped: symlinks leading outside the folder are not read "
        f"(first: {tree / 'cat' / 'planted.png'} -> {secret})"
    ) in log
    counts = json.loads((run_dir / "class_distribution.json").read_text())["counts"]
    # 20 files and the inside link; the planted one is not among them
    assert sum(sum(counts[s]) for s in ("pool", "val", "test")) == 21
    assert [r["n_labelled"] for r in read_jsonl(run_dir / "rounds.jsonl")] == [4]


def test_a_symlinked_class_folder_out_of_the_root_is_skipped_and_named_when_nothing_is_left(tmp_path, secret):
    tree = tmp_path / "tree"
    _tree(tree, {"cat": 2})
    (tree / "dog").symlink_to(secret.parent, target_is_directory=True)  # a class folder leading out
    source = ImageFolderSource(tree)
    files, labels, _, names = source.scan()
    assert names == ["cat", "dog"] and len(files) == 2 and labels.tolist() == [0, 0]
    for f in (tree / "cat").iterdir():
        f.unlink()
    with pytest.raises(
        UserError, match=rf"holds no images \(.*\) \(1 symlinks leading outside {tree} skipped\)"
    ):
        ImageFolderSource(tree).scan()


def test_a_folder_root_that_is_a_symlink_is_read(tmp_path):
    tree = tmp_path / "real"
    _tree(tree, {"cat": 2, "dog": 2})
    (tmp_path / "alias").symlink_to(tree, target_is_directory=True)
    files, _, _, _ = ImageFolderSource(tmp_path / "alias").scan()
    assert len(files) == 4 and all(tmp_path / "alias" in f.parents for f in files)


# -- annotation-named images: refused with one line -----------------------------------------------
def _coco_file(path: Path, file_names: list[str]) -> Path:
    path.write_text(
        json.dumps(
            {
                "images": [
                    {"id": i, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(file_names)
                ],
                "annotations": [
                    {"id": i, "image_id": i, "category_id": 1, "bbox": [1, 1, 5, 5]}
                    for i in range(len(file_names))
                ],
                "categories": [{"id": 1, "name": "person"}],
            }
        )
    )
    return path


def test_a_coco_image_that_is_a_symlink_out_of_the_root_is_one_line(tmp_path, secret):
    root = tmp_path / "images"
    _image(root / "a.png")
    (root / "b.png").symlink_to(secret)
    ann = _coco_file(tmp_path / "ann.json", ["a.png", "b.png"])
    with pytest.raises(UserError) as err:
        read_coco(ann, root, ["person"])
    message = str(err.value)
    assert "\n" not in message
    assert message == (
        f"{ann}: image 1 names image 'b.png', which leads outside the image root {root} through "
        f"a symlink (to {secret}); image paths must stay inside it"
    )


@pytest.mark.slow
def test_a_coco_symlink_out_of_the_root_stops_the_run_with_exit_2(tmp_path, secret):
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "linked").symlink_to(secret.parent, target_is_directory=True)
    ann = _coco_file(tmp_path / "ann.json", ["sub/linked/secret.png"])
    line = one_error_line(
        run_cli(
            "debug=fast",
            "logger=none",
            "task=detection",
            "baseline=none",
            "dataset=coco",
            f"dataset.source.annotations={ann}",
            f"dataset.source.images={root}",
            f"hydra.run.dir={tmp_path / 'run'}",
            check=False,
        )
    )
    assert line == (
        f"error: {ann}: image 0 names image 'sub/linked/secret.png', which leads outside the image "
        f"root {root} through a symlink (to {secret}); image paths must stay inside it"
    )


def test_coco_symlinks_that_stay_inside_and_a_symlinked_root_are_read(tmp_path):
    real = tmp_path / "real"
    _image(real / "store" / "a.png")
    (real / "a.png").symlink_to(real / "store" / "a.png")
    (tmp_path / "images").symlink_to(real, target_is_directory=True)  # the root the user names
    ann = _coco_file(tmp_path / "ann.json", ["a.png", "store/a.png"])
    records, _, _ = read_coco(ann, tmp_path / "images", ["person"])
    assert [r.file for r in records] == [
        tmp_path / "images" / "a.png",
        tmp_path / "images" / "store" / "a.png",
    ]


def _voc_xml(path: Path, filename: str, folder: str | None = None, recorded: str | None = None) -> None:
    extra = (f"<folder>{folder}</folder>" if folder else "") + (
        f"<path>{recorded}</path>" if recorded else ""
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation>{extra}<filename>{filename}</filename><size><width>40</width><height>30</height>"
        "<depth>3</depth></size><object><name>person</name><bndbox><xmin>2</xmin><ymin>2</ymin>"
        "<xmax>9</xmax><ymax>9</ymax></bndbox></object></annotation>"
    )


@pytest.mark.parametrize("layout", ["filename", "folder", "absolute path"])
def test_a_voc_image_that_is_a_symlink_out_of_the_root_is_one_line(tmp_path, secret, layout):
    root, xml = tmp_path / "images", tmp_path / "xml" / "x.xml"
    (root / "batch").mkdir(parents=True)
    (root / "batch" / "x.png").symlink_to(secret)
    if layout == "filename":
        (root / "x.png").symlink_to(secret)
        _voc_xml(xml, "x.png")
        entry = "<filename>"
        named = "x.png"
    elif layout == "folder":
        _voc_xml(xml, "x.png", folder="batch")
        entry, named = "<folder>/<filename>", "batch/x.png"
    else:  # the labeller's absolute <path>, inside the root as written
        _voc_xml(xml, "y.png", recorded=str(root / "batch" / "x.png"))
        entry, named = "<path>", str(root / "batch" / "x.png")
    with pytest.raises(UserError) as err:
        read_voc(xml.parent, root, ["person"])
    assert str(err.value) == (
        f"{xml}: {entry} names image {named!r}, which leads outside the image root {root} "
        f"through a symlink (to {secret}); image paths must stay inside it"
    )


def test_a_voc_symlink_that_stays_inside_is_read(tmp_path):
    root = tmp_path / "images"
    _image(root / "store" / "x.png")
    (root / "batch").mkdir()
    (root / "batch" / "x.png").symlink_to(root / "store" / "x.png")
    _voc_xml(tmp_path / "xml" / "x.xml", "x.png", folder="batch")
    records, _, _ = read_voc(tmp_path / "xml", root, ["person"])
    assert [r.file for r in records] == [root / "batch" / "x.png"] and len(records[0].boxes) == 1


# -- YOLO trees -----------------------------------------------------------------------------------
def _yolo_tree(root: Path, train: dict[str, bool], val: dict[str, bool]) -> None:
    """``{image name: has a label file}`` per split; each label file holds one box of class 0."""
    for split, images in (("train", train), ("val", val)):
        for name, labelled in images.items():
            _image(root / "images" / split / f"{name}.png")
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            if labelled:
                (root / "labels" / split / f"{name}.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(
        yaml.safe_dump({"train": "images/train", "val": "images/val", "names": ["person"]})
    )


def test_yolo_counts_images_without_a_label_file_and_label_files_without_an_image(tmp_path, caplog):
    root = tmp_path / "yolo"
    _yolo_tree(root, {"a": True, "b": False, "c": True}, {"v": True, "w": False})
    (root / "labels" / "train" / "gone.txt").write_text("0 0.5 0.5 0.2 0.2\n0 0.3 0.3 0.1 0.1\n")
    (root / "labels" / "val" / "lost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "train" / "classes.txt").write_text(
        "person\n"
    )  # LabelImg's class list, not a label file
    with caplog.at_level(logging.INFO):
        records, report, _ = read_yolo(root)
    assert len(records) == 5 and report.boxes == 3
    assert report.images_without_labels == 2 and report.labels_without_images == 2
    summary = report.summary(str(root / "data.yaml"))
    assert summary.endswith(
        "bad boxes skipped: none; 2 images without a label file (no boxes), 2 label files "
        "without an image (their boxes not read)"
    )
    assert summary in caplog.text


def test_a_complete_yolo_tree_counts_zero_unpaired_files(tmp_path):
    root = tmp_path / "yolo"
    _yolo_tree(root, {"a": True}, {"v": True})
    _, report, _ = read_yolo(root)
    assert report.images_without_labels == 0 and report.labels_without_images == 0
    assert "0 images without a label file (no boxes), 0 label files without an image" in report.summary("x")


def test_a_yolo_image_that_is_a_symlink_out_of_the_root_is_skipped_and_counted(tmp_path, secret, caplog):
    root = tmp_path / "yolo"
    _yolo_tree(root, {"a": True, "b": True}, {"v": True})
    (root / "images" / "train" / "b.png").unlink()
    (root / "images" / "train" / "b.png").symlink_to(secret)  # leads out: skipped
    (root / "images" / "train" / "c.png").symlink_to(root / "images" / "val" / "v.png")  # inside: read
    with caplog.at_level(logging.INFO):
        records, report, _ = read_yolo(root)
    assert sorted(r.file.name for r in records) == ["a.png", "c.png", "v.png"]
    assert report.outside_root == 1
    assert report.labels_without_images == 0  # b's label belongs to the skipped image: counted once, as that
    assert report.images_without_labels == 1  # c.png
    assert "1 image files skipped: symlinks leading outside the root" in report.summary("x")
    assert (
        f"YOLO tree {root}: 1 file skipped: symlinks leading outside the folder are not read" in caplog.text
    )


@pytest.mark.parametrize("planted", ["label file", "data.yaml", "split folder"])
def test_yolo_files_the_tree_names_that_lead_out_are_one_line(tmp_path, planted):
    root, elsewhere = tmp_path / "yolo", tmp_path / "elsewhere"
    _yolo_tree(root, {"a": True}, {"v": True})
    _yolo_tree(elsewhere, {"a": True}, {"v": True})
    if planted == "label file":
        target = root / "labels" / "train" / "a.txt"
        target.unlink()
        target.symlink_to(elsewhere / "labels" / "train" / "a.txt")
        expected = (
            f"{target}: the label file of {root / 'images' / 'train' / 'a.png'} leads outside "
            f"dataset.source.root={root} through a symlink (to {elsewhere / 'labels' / 'train' / 'a.txt'}); "
            "label files must stay inside the root"
        )
    elif planted == "data.yaml":
        (root / "data.yaml").unlink()
        (root / "data.yaml").symlink_to(elsewhere / "data.yaml")
        expected = (
            f"{root / 'data.yaml'}: leads outside dataset.source.root={root} through a symlink (to "
            f"{elsewhere / 'data.yaml'}); the tree's files must stay inside its root"
        )
    else:
        shutil.rmtree(root / "images" / "train")
        (root / "images" / "train").symlink_to(elsewhere / "images" / "train", target_is_directory=True)
        expected = (
            f"{root / 'data.yaml'}: train names folder {str(root / 'images' / 'train')!r}, which leads "
            f"outside the image root {root} through a symlink (to {elsewhere / 'images' / 'train'}); "
            "image paths must stay inside it"
        )
    with pytest.raises(UserError) as err:
        read_yolo(root)
    assert str(err.value) == expected


# -- Label Studio exports ---------------------------------------------------------------------------
def _export(path: Path, images: list[str]) -> Path:
    """A classification export (the real export's first task) naming ``images`` below the document root."""
    real = json.loads((FIXTURES / "classification_export.json").read_text())[0]
    tasks = []
    for i, name in enumerate(images):
        task = json.loads(json.dumps(real))
        task["id"], task["data"]["image"] = i + 1, f"/data/local-files/?d={name}"
        tasks.append(task)
    path.write_text(json.dumps(tasks))
    return path


def test_a_label_studio_image_that_leaves_the_document_root_through_a_symlink_is_one_line(tmp_path, secret):
    docs = tmp_path / "served"
    _image(docs / "pool" / "a.png")
    (docs / "pool" / "b.png").symlink_to(secret)
    export = _export(tmp_path / "export.json", ["pool/a.png", "pool/b.png"])
    with pytest.raises(UserError) as err:
        read_export(export, "classification", ["cat", "dog", "bird"], docs)
    assert str(err.value) == (
        f"{export}: task 2: image '/data/local-files/?d=pool/b.png' leads outside the pool "
        f"{docs} through a symlink (to {secret}); images must stay inside it"
    )
    # the same through the sources of dataset=labelstudio and dataset=labelstudio_detection
    from src.data.detection.datamodule import FileSource
    from src.labelling.source import LabelStudioSource

    with pytest.raises(UserError, match="leads outside the pool .* through a symlink"):
        LabelStudioSource(str(export), ["cat", "dog", "bird"], docs, cache_dir=tmp_path / "cache").load()
    detection = json.loads((FIXTURES / "detection_export.json").read_text())[:1]
    detection[0]["data"]["image"] = "/data/local-files/?d=pool/b.png"
    (tmp_path / "boxes.json").write_text(json.dumps(detection))
    with pytest.raises(UserError, match="task 5: image .* leads outside the pool .* through a symlink"):
        FileSource(
            "labelstudio", [str(tmp_path / "boxes.json")], classes=["car", "person"], document_root=str(docs)
        ).read()


def test_label_studio_symlinks_inside_the_pool_and_a_symlinked_document_root_are_read(tmp_path):
    real = tmp_path / "served"
    _image(real / "store" / "a.png")
    (real / "pool").mkdir()
    (real / "pool" / "a.png").symlink_to(real / "store" / "a.png")
    (tmp_path / "docroot").symlink_to(real, target_is_directory=True)
    export = _export(tmp_path / "export.json", ["pool/a.png"])
    items, report = read_export(export, "classification", ["cat", "dog", "bird"], tmp_path / "docroot")
    assert [i.file for i in items] == [tmp_path / "docroot" / "pool" / "a.png"] and report.labelled == 1


# -- src.select images=<folder> ------------------------------------------------------------------------
def test_select_skips_a_pool_file_that_leads_out_of_the_folder_and_counts_it(tmp_path, secret, caplog):
    pool = tmp_path / "pool"
    write_images(pool, ["a.png", "sub/b.png"], seed=3)
    (pool / "planted.png").symlink_to(secret)
    (pool / "sub" / "again.png").symlink_to(pool / "a.png")
    with caplog.at_level(logging.WARNING):
        files = pool_files(pool)
    assert [f.relative_to(pool).as_posix() for f in files] == ["a.png", "sub/again.png", "sub/b.png"]
    assert (
        f"images={pool}: 1 file skipped: symlinks leading outside the folder are not read "
        f"(first: {pool / 'planted.png'} -> {secret})"
    ) in caplog.text
    for f in files:
        f.unlink()
    with pytest.raises(UserError, match=r"no image files .* in it \(1 symlinks leading outside it skipped\)"):
        pool_files(pool)


def test_select_keep_mode_reads_a_class_tree_without_its_outside_link(tmp_path, secret):
    from src.labelling.inputs import labelled_tree

    tree = tmp_path / "tree"
    write_images(tree, ["1/a.png", "4/b.png"], seed=4)
    (tree / "4" / "planted.png").symlink_to(secret)
    files, labels = labelled_tree(tree, [str(d) for d in range(10)])
    assert [f.relative_to(tree).as_posix() for f in files] == ["1/a.png", "4/b.png"] and labels.tolist() == [
        1,
        4,
    ]


@pytest.mark.slow
def test_select_through_the_cli_ranks_the_pool_without_the_outside_link(trained_run, tmp_path, secret):  # noqa: F811
    pool, out = tmp_path / "pool", tmp_path / "out"
    write_images(pool, [f"x{i}.png" for i in range(4)], seed=5, grey=True)
    (pool / "planted.png").symlink_to(secret)
    proc = run_select(f"run_dir={trained_run}", f"images={pool}", "budget=2", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"images={pool}: 1 file skipped: symlinks leading outside the folder" in proc.stdout + proc.stderr
    ranked = (out / "ranked.csv").read_text()
    assert "planted" not in ranked and len(ranked.strip().splitlines()) == 3  # header + budget 2
    assert not any("planted" in a["image"] for a in read_jsonl(trained_run / "labelling.jsonl"))


def test_select_check_request_lists_no_outside_link(tmp_path, secret):
    import torch

    from src.labelling.select import check_request
    from src.labelling.trained import save_trained_model

    run = tmp_path / "run"
    run.mkdir()
    save_trained_model(
        run, torch.nn.Linear(1, 10), "classification", [str(d) for d in range(10)], channels=1, overrides=[]
    )
    write_images(tmp_path / "pool", ["a.png"], seed=6)
    (tmp_path / "pool" / "planted.png").symlink_to(secret)
    request = check_request(
        compose_select(
            f"run_dir={run}", f"images={tmp_path / 'pool'}", "export=labelstudio", f"out={tmp_path / 'o'}"
        )
    )
    assert request.files == [tmp_path / "pool" / "a.png"]


# -- kept subsets are hard links, so they read back as trees of their own --------------------------------
def test_a_kept_subset_reads_back_and_a_link_that_cannot_be_made_is_one_line(tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    _tree(tree, {"cat": 2, "dog": 2})
    kept = [tree / "cat" / "0.png", tree / "dog" / "1.png"]
    link_subset(kept, tree, tmp_path / "kept")
    files, labels, _, _ = ImageFolderSource(tmp_path / "kept").scan()  # nothing skipped: no symlink out
    assert [f.relative_to(tmp_path / "kept").as_posix() for f in files] == ["cat/0.png", "dog/1.png"]

    def cross_device(src, dst, **kwargs):
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(os, "link", cross_device)
    with pytest.raises(
        UserError, match=r"out=.*: cannot hard-link .* \(Invalid cross-device link: .*set copy=true"
    ):
        link_subset(kept, tree, tmp_path / "new")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="set copy=true"):
        link_subset(kept, tree, tmp_path / "empty")
    assert list((tmp_path / "empty").iterdir()) == []


# -- split sizes larger than a detection set --------------------------------------------------------------
def test_labelstudio_detection_with_default_sizes_names_the_keys_and_sizes_that_fit(compose_cfg, tmp_path):
    from src.config.instantiate import build

    real = json.loads((FIXTURES / "detection_export.json").read_text())[0]
    tasks = []
    for i in range(8):
        _image(tmp_path / "pool" / f"street {i}.png", shade=20 * i, w=80, h=60)
        task = json.loads(json.dumps(real))
        task["id"], task["data"]["image"] = i + 1, f"/data/local-files/?d=pool/street%20{i}.png"
        tasks.append(task)
    (tmp_path / "round1.json").write_text(json.dumps(tasks))
    overrides = [
        "task=detection",
        "dataset=labelstudio_detection",
        f"dataset.source.annotations=[{tmp_path / 'round1.json'}]",
        f"dataset.source.document_root={tmp_path}",
        "dataset.source.classes=[car,person]",
        "dataset.source.cache_dir=null",
        "dataset.image_size=[40,30]",
    ]
    cfg = compose_cfg(*overrides)  # the sizes as conf/dataset/labelstudio_detection.yaml sets them
    assert cfg.dataset.sizes.val == 10 and cfg.dataset.sizes.test == 10 and cfg.dataset.sizes.pool is None
    with pytest.raises(UserError) as err:
        build(cfg.dataset).setup()
    message = str(err.value)
    assert message == (
        f"dataset.sizes: val 10 + test 10 = 20 exceeds the 8 images of labelstudio["
        f"{tmp_path / 'round1.json'}], leaving no pool; set dataset.sizes.val=1 dataset.sizes.test=1 "
        "(pool null takes the other 6), or other sizes adding up to at most 8"
    )
    assert "-" not in message.split("images of")[0]  # no negative pool
    # the suggested sizes fit
    dm = build(compose_cfg(*overrides, "dataset.sizes.val=1", "dataset.sizes.test=1").dataset)
    dm.setup()
    assert [len(dm.splits[s]) for s in ("pool", "val", "test")] == [6, 1, 1]


@pytest.mark.parametrize(
    "sizes, expected",
    [
        (
            {"pool": 20, "val": 6, "test": 6},
            "dataset.sizes: pool 20 + val 6 + test 6 = 32 exceeds the 30 images of "
            "scenes[street, n=30, seed=0]; set dataset.sizes.pool=18 (or dataset.sizes.pool=null: the other 18), or other "
            "sizes adding up to at most 30",
        ),
        (
            {"pool": None, "val": 20, "test": 20},
            "dataset.sizes: val 20 + test 20 = 40 exceeds the 30 images of "
            "scenes[street, n=30, seed=0], leaving no pool; set dataset.sizes.val=3 dataset.sizes.test=3 (pool null takes "
            "the other 24), or other sizes adding up to at most 30",
        ),
    ],
)
def test_every_drawn_detection_set_names_sizes_that_fit(sizes, expected):
    from src.data.detection.datamodule import DetectionDataModule, SceneSource

    with pytest.raises(UserError) as err:
        DetectionDataModule("scenes", SceneSource(n=30), sizes, image_size=(32, 18)).setup()
    assert str(err.value) == expected


def test_a_null_val_or_test_of_a_drawn_detection_set_takes_a_tenth():
    from src.data.detection.datamodule import DetectionDataModule, SceneSource

    dm = DetectionDataModule(
        "scenes", SceneSource(n=30), {"pool": None, "val": None, "test": 5}, image_size=(32, 18)
    )
    dm.setup()
    assert [len(dm.splits[s]) for s in ("pool", "val", "test")] == [22, 3, 5]
