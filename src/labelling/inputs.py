"""The images ``python -m src.select`` scores, read from a folder or a detection set's files.

``format`` names how ``images`` is laid out:

* ``folder``: mode=label, a plain folder of images (searched recursively); mode=keep, a
  labelled classification tree ``<images>/<class>/<file>``;
* ``coco``: ``annotations`` is the JSON file, ``images`` the root its file names are relative to;
* ``voc``: ``annotations`` is the folder of XML files, ``images`` the image root;
* ``yolo``: ``images`` is the tree's root, the folder holding ``data.yaml``.

The detection files are read with the project's own readers
(``src/data/detection/annotations.py``, ``yolo.py``): every image path they name must
stay inside the image root, a mistake in them is one line naming the file and the
entry. In mode=label their boxes are ignored (only the image list is used); in
mode=keep the boxes are the labels (``scorer=loss``), every class must be one the
model knows (after ``class_map``), and a YOLO tree's train split is what is pruned:
its val and test images are kept whole, so the evaluation stays the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.data.detection.annotations import ImageRecord, read_coco, read_voc
from src.data.detection.datamodule import majority_class
from src.data.detection.yolo import read_yolo
from src.errors import UserError
from src.labelling.pool import pool_files

log = logging.getLogger(__name__)

FORMATS = ("folder", "coco", "voc", "yolo")
DETECTION_FORMATS = FORMATS[1:]


@dataclass
class InputSet:
    """What is scored: the files in order (their positions are the ids) and, for mode=keep, their labels."""

    format: str
    root: Path  # paths are shown relative to it and mirrored below it
    files: list[Path]
    labels: np.ndarray | None = None  # classification mode=keep: class index per file
    records: list[ImageRecord] | None = None  # detection mode=keep: boxes (file pixels) per file
    annotations: Path | None = None  # coco: the JSON file; voc: the XML folder
    kept_whole: list[ImageRecord] = field(default_factory=list)  # yolo mode=keep: val and test

    def diversity_classes(self) -> np.ndarray | None:
        """mode=keep: one class per item for class diversity (detection: its most frequent true class)."""
        if self.labels is not None:
            return self.labels
        if self.records is not None:
            import torch

            return np.asarray(
                [majority_class(torch.from_numpy(r.labels)) for r in self.records], dtype=np.int64
            )
        return None


def check_format(fmt: str, task: str, mode: str, annotations) -> None:
    """One line for a format the task (or mode) cannot use, before anything is read."""
    if fmt not in FORMATS:
        raise UserError(f"format={fmt}: allowed {' | '.join(FORMATS)}")
    if task == "classification" and fmt != "folder":
        raise UserError(
            f"format={fmt}: a classification model reads image folders (format=folder); "
            f"{fmt.upper()} files are detection sets"
        )
    if task == "detection" and mode == "keep" and fmt == "folder":
        raise UserError(
            "format=folder: mode=keep prunes a labelled set and a folder tree holds no boxes; give "
            "the detection set as format=coco | voc | yolo (annotations=...)"
        )
    if fmt in ("coco", "voc") and not annotations:
        what = "the JSON file" if fmt == "coco" else "the folder of XML files"
        raise UserError(f"annotations: missing; format={fmt} needs annotations=<{what}>")
    if fmt in ("folder", "yolo") and annotations:
        where = "data.yaml in images=" if fmt == "yolo" else "the folder tree"
        raise UserError(
            f"annotations={annotations}: format={fmt} takes its labels from {where}; leave it unset"
        )


def labelled_tree(root: Path, classes: list[str]) -> tuple[list[Path], np.ndarray]:
    """The files of ``<root>/<class>/*`` and their class indices into the model's ``classes``."""
    files = pool_files(root)
    folders = [f.relative_to(root).parts for f in files]
    if any(len(parts) != 2 for parts in folders):
        bad = next(f for f, parts in zip(files, folders) if len(parts) != 2)
        raise UserError(
            f"images={root}: {bad} is not <class>/<file>; mode=keep reads a folder tree per class"
        )
    unknown = sorted({parts[0] for parts in folders} - set(classes))
    if unknown:
        raise UserError(f"images={root}: classes {unknown} are not known to the model; it knows {classes}")
    return files, np.array([classes.index(parts[0]) for parts in folders], dtype=np.int64)


def _read_detection_set(fmt: str, root: Path, annotations: Path | None, classes: list[str], class_map):
    if not root.is_dir():
        raise UserError(
            f"images={root}: not a folder; name the {'YOLO tree' if fmt == 'yolo' else 'image root'}"
        )
    if fmt == "yolo":
        if not (root / "data.yaml").is_file():
            raise UserError(f"images={root}: no data.yaml in it; format=yolo takes the tree's root")
        return read_yolo(root, classes, class_map, require_boxes=False)
    if fmt == "coco" and not annotations.is_file():
        raise UserError(f"annotations={annotations}: no such file; format=coco reads one JSON file")
    if fmt == "voc" and not annotations.is_dir():
        raise UserError(f"annotations={annotations}: no such folder; format=voc reads a folder of XML files")
    reader = read_coco if fmt == "coco" else read_voc
    return reader(annotations, root, classes, class_map, require_boxes=False)


def read_input(
    fmt: str, root: Path, annotations: Path | None, task: str, mode: str, classes: list[str], class_map=None
) -> InputSet:
    """The input set of a checked request (``check_format`` passed): listed and read, nothing decoded."""
    if fmt == "folder":
        if mode == "label":
            return InputSet(fmt, root, pool_files(root))
        files, labels = labelled_tree(root, classes)
        return InputSet(fmt, root, files, labels=labels)
    records, report, _ = _read_detection_set(fmt, root, annotations, classes, class_map)
    source = root / "data.yaml" if fmt == "yolo" else annotations
    if mode == "label":  # labels ignored: every image once
        files = list(dict.fromkeys(r.file for r in records))
        return InputSet(fmt, root, files, annotations=annotations)
    mapping = {str(k): str(v) for k, v in dict(class_map or {}).items()}
    unknown = sorted({mapping.get(name, name) for name in report.found} - set(classes))
    if unknown:
        hint = "" if class_map else "; map them with class_map={name: class}"
        raise UserError(f"{source}: classes {unknown} are not known to the model; it knows {classes}{hint}")
    scored = [r for r in records if r.split in (None, "pool")]
    kept_whole = [r for r in records if r.split not in (None, "pool")]
    if not scored:
        raise UserError(f"{source}: no images to prune (a YOLO tree's train split is pruned)")
    shared = sorted({r.file for r in scored} & {r.file for r in kept_whole})
    if shared:
        raise UserError(
            f"{source}: {shared[0]} is in the train split and in val or test; the train split "
            f"is pruned and val and test are kept whole, so they must not share images"
        )
    seen: set[Path] = set()
    for r in scored:
        if r.file in seen:
            raise UserError(f"{source}: image {r.file} is named twice; mode=keep needs one entry per image")
        seen.add(r.file)
    return InputSet(
        fmt, root, [r.file for r in scored], records=scored, annotations=annotations, kept_whole=kept_whole
    )
