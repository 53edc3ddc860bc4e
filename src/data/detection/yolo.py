"""YOLO detection trees (the ultralytics layout), read into the records of ``annotations.py``.

``<root>/data.yaml`` names the splits and the classes::

    path: .                 # optional: the data set folder, relative to the root (default: the root)
    train: images/train     # folders (or lists of folders) of images, relative to path
    val: images/val
    test: images/test       # optional
    names: [person, car]    # or an index -> name map: {0: person, 1: car}

The labels of ``.../images/<split>/x.jpg`` are in ``.../labels/<split>/x.txt``, one
box per line as ``class cx cy w h`` normalised to the image size; an image without a
label file has no boxes. Both unpaired kinds are counted in the load summary: images
without a label file, and label files without an image (whose boxes are not read).
The file's train / val / test become the pool / val / test.

Every path stays inside the root (``src/data/paths.py``: as written and with every
symlink followed): ``data.yaml``, its ``path`` and split folders and a label file that
lead out of it are refused with one line; an image file of a split folder that is a
symlink out of the root is skipped and counted. The YAML is read with ``yaml.safe_load``.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import yaml
from PIL import Image

from src.data.cache import is_image
from src.data.detection.annotations import KEY, RawImage, RawObject, apply_classes, image_inside
from src.data.paths import inside_root, join_inside, leads_to, skipped_note, split_inside
from src.errors import UserError

log = logging.getLogger(__name__)

# data.yaml split key -> the datamodule split it fills
SPLITS = {"train": "pool", "val": "val", "test": "test"}


def _data_yaml(root: Path) -> tuple[Path, dict]:
    path = root / "data.yaml"
    if not path.is_file():
        raise UserError(
            f"{KEY}.root={root}: no data.yaml in it (a YOLO tree has <root>/data.yaml naming "
            "train, val and names)"
        )
    if not inside_root(path, root):
        raise UserError(
            f"{path}: leads outside {KEY}.root={root} through a symlink (to {leads_to(path)}); "
            "the tree's files must stay inside its root"
        )
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise UserError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)})") from err
    if not isinstance(data, dict):
        raise UserError(f"{path}: must be a mapping with train, val and names")
    for required in ("train", "val", "names"):
        if data.get(required) in (None, "", []):
            raise UserError(f"{path}: no '{required}' (needs train, val, names; optional path, test)")
    return path, data


def class_names(names, path: Path) -> dict[int, str]:
    """data.yaml ``names`` (a list, or an index -> name map) as {index: name}."""
    if isinstance(names, list):
        names = dict(enumerate(names))
    if not isinstance(names, dict) or not all(
        isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in names
    ):
        raise UserError(
            f"{path}: names must be a list of class names or a map of class index (0, 1, ...) to "
            f"name, got {names!r}"
        )
    return {k: str(v) for k, v in names.items()}


def _split_folders(data: dict, key: str, base: Path, root: Path, path: Path) -> list[Path]:
    entries = data[key] if isinstance(data[key], list) else [data[key]]
    folders = []
    for entry in entries:
        folder = image_inside(root, str(base / str(entry)), path, key, what="folder")
        if not folder.is_dir():
            raise UserError(
                f"{path}: {key}: {entry!r} is not a folder under {root} (image lists in .txt files "
                "are not read; name the image folder)"
            )
        if "images" not in folder.relative_to(root).parts:
            raise UserError(
                f"{path}: {key}: {entry!r} is not inside an images/ folder (the labels of "
                "images/<split>/x.jpg are read from labels/<split>/x.txt)"
            )
        folders.append(folder)
    return folders


def _labels_twin(path: Path, root: Path) -> Path:
    """``path`` (below ``root``) with the last ``images`` folder of its relative path made ``labels``."""
    parts = list(path.relative_to(root).parts)
    k = len(parts) - 1 - parts[::-1].index("images")
    parts[k] = "labels"
    return root.joinpath(*parts)


def label_file(image: Path, root: Path) -> Path:
    """The label file of an image: the last ``images`` folder of its path becomes ``labels``."""
    return _labels_twin(image, root).with_suffix(".txt")


def _label_files(folders: list[Path], root: Path) -> set[Path]:
    """The .txt files of the label folders matching image ``folders`` (LabelImg's classes.txt left out)."""
    found = set()
    for folder in folders:
        labels = _labels_twin(folder, root)
        if labels.is_dir():
            found |= {p for p in labels.rglob("*.txt") if p.is_file() and p.name != "classes.txt"}
    return found


def _objects(
    labels: Path, width: int, height: int, names: dict[int, str], bad: Counter, strict: bool
) -> list:
    objects = []
    for n, line in enumerate(labels.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{labels}:{n}"
        try:
            values = [float(v) for v in fields]
        except ValueError:
            raise UserError(f"{where}: not a label line 'class cx cy w h' (got {line.strip()!r})") from None
        if len(values) != 5:  # more values: a segmentation polygon, not a box
            if strict:
                raise UserError(
                    f"{where}: bad box (not 5 values 'class cx cy w h'); {KEY}.strict=false skips "
                    "such lines with a count"
                )
            bad["not 5 values"] += 1
            continue
        cls, cx, cy, w, h = values
        box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
        objects.append(RawObject(names.get(int(cls)) if cls.is_integer() else None, box, where))
    return objects


def read_yolo(root, classes=None, class_map=None, strict=False, keep_empty=True, require_boxes=True):
    """Records (each with its split), report and class names of a YOLO tree (see the module doc)."""
    if not root:
        raise UserError(f"{KEY}.root is not set; name the folder that holds data.yaml")
    root = Path(
        os.path.abspath(os.path.expanduser(str(root)))
    )  # '..' folded: the containment test compares paths
    if not root.is_dir():
        raise UserError(f"{KEY}.root={root}: no such directory")
    path, data = _data_yaml(root)
    base = join_inside(root, str(data.get("path") or "."))
    if base is None:
        raise UserError(
            f"{path}: path={data['path']!r} leaves {KEY}.root={root}; remove it or give a folder "
            "inside the root"
        )
    names = class_names(data["names"], path)
    raw, bad, folders, left, paired = [], Counter(), [], [], set()
    for key, split in SPLITS.items():
        if data.get(key) in (None, "", []):
            continue
        for folder in _split_folders(data, key, base, root, path):
            folders.append(folder)
            images, out = split_inside(
                sorted(p for p in folder.rglob("*") if p.is_file() and is_image(p)), root
            )
            left += out
            paired |= {label_file(f, root) for f in out}  # counted as skipped images, not as unpaired labels
            for image_file in images:
                try:
                    with Image.open(image_file) as im:
                        width, height = im.size
                except OSError as err:
                    raise UserError(f"{path}: {key}: cannot read image {image_file} ({err})") from err
                labels = label_file(image_file, root)
                paired.add(labels)
                has_labels = labels.is_file()
                if has_labels and not inside_root(labels, root):
                    raise UserError(
                        f"{labels}: the label file of {image_file} leads outside {KEY}.root={root} "
                        f"through a symlink (to {leads_to(labels)}); label files must stay inside "
                        "the root"
                    )
                objects = _objects(labels, width, height, names, bad, strict) if has_labels else []
                raw.append(RawImage(image_file, width, height, objects, split, origin=labels))
    if left:
        log.warning(f"YOLO tree {skipped_note(left, root)}")
    if not raw:
        skipped = f" ({len(left)} symlinks leading outside the root skipped)" if left else ""
        raise UserError(f"{path}: its train/val/test folders hold no images{skipped}")
    unpaired = dict(
        images_without_labels=sum(not r.origin.is_file() for r in raw),
        labels_without_images=len(_label_files(folders, root) - paired),
        outside_root=len(left),
    )
    return apply_classes(raw, bad, str(path), classes, class_map, strict, keep_empty, require_boxes, unpaired)
