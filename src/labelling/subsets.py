"""A pruned detection set written in its input's own format, ready to train on.

The kept images are mirrored below the output folder with their relative paths
(symlinks by default, copies with ``copy=True``, ``outputs.link_subset``), and their
annotations as they were in the input, boxes untouched:

* COCO: ``out/images/`` and ``out/<the JSON's name>``: the input JSON with only the
  kept images and the annotations of those images (every other key as it was; a
  file name is rewritten only to its path relative to the image root when it was
  written another way, e.g. absolute);
* VOC: ``out/images/`` and ``out/annotations/`` with the kept images' XML files (an
  XML whose image the new root would not find, because it was located by an absolute
  ``<path>`` into the old root, is written with that ``<path>`` made relative);
* YOLO: ``out/`` is the tree again: ``data.yaml`` (its ``path`` made relative when
  it was absolute), the kept train images and their label files, and the val and
  test images and labels whole.

``write_kept`` returns the ``src.run`` overrides that train on the result.
"""

from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from src.data.detection.annotations import ImageRecord, voc_image_path
from src.data.paths import join_inside
from src.errors import UserError
from src.labelling.inputs import InputSet
from src.labelling.outputs import link_subset


def _place(source: Path, target: Path, copy: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if copy:
        shutil.copy2(source, target)
    else:
        os.symlink(os.path.abspath(source), target)


def _coco(data: InputSet, kept: list[ImageRecord], out: Path, copy: bool) -> list[str]:
    images = out / "images"
    link_subset([r.file for r in kept], data.root, images, copy=copy)
    coco = json.loads(data.annotations.read_text())  # the reader has checked its shape
    relative = {r.origin: r.file.relative_to(data.root).as_posix() for r in kept}
    entries = {}
    for entry in coco["images"]:  # the last entry of an id is the one the reader kept
        if entry["id"] in relative:
            entries[entry["id"]] = {**entry, "file_name": relative[entry["id"]]}
    coco["images"] = list(entries.values())
    coco["annotations"] = [
        a for a in coco["annotations"] if isinstance(a, dict) and a.get("image_id") in entries
    ]
    target = out / data.annotations.name
    target.write_text(json.dumps(coco) + "\n")
    return ["dataset=coco", f"dataset.source.annotations={target}", f"dataset.source.images={images}"]


def _voc(data: InputSet, kept: list[ImageRecord], out: Path, copy: bool) -> list[str]:
    images, xml_dir = out / "images", out / "annotations"
    link_subset([r.file for r in kept], data.root, images, copy=copy)
    xml_dir.mkdir()
    for r in kept:
        xml, target = Path(r.origin), xml_dir / Path(r.origin).name
        tree = ET.parse(xml)
        wanted = images / r.file.relative_to(data.root)
        try:
            found = voc_image_path(images, tree.getroot(), xml)
        except UserError:
            found = None
        if found == wanted:
            _place(xml, target, copy)
            continue
        path = tree.getroot().find("path")
        if path is None:
            path = ET.SubElement(tree.getroot(), "path")
        path.text = r.file.relative_to(data.root).as_posix()
        tree.write(target, encoding="utf-8")
    return ["dataset=voc", f"dataset.source.annotations={xml_dir}", f"dataset.source.images={images}"]


def _yolo(data: InputSet, kept: list[ImageRecord], out: Path, copy: bool) -> list[str]:
    records = kept + data.kept_whole
    labels = [Path(r.origin) for r in records if r.origin is not None and Path(r.origin).is_file()]
    config = data.root / "data.yaml"
    spec = yaml.safe_load(config.read_text())  # the reader has checked it
    rewrite = bool(spec.get("path")) and os.path.isabs(str(spec["path"]))
    files = [r.file for r in records] + labels + ([] if rewrite else [config])
    link_subset(list(dict.fromkeys(files)), data.root, out, copy=copy)
    if rewrite:
        base = join_inside(data.root, str(spec["path"]))
        spec["path"] = base.relative_to(data.root).as_posix() or "."
        (out / "data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return ["dataset=yolo", f"dataset.source.root={out}"]


WRITERS = {"coco": _coco, "voc": _voc, "yolo": _yolo}


def write_kept(data: InputSet, kept_ids, out: Path, copy: bool = False) -> list[str]:
    """Write the items ``kept_ids`` (positions into ``data.records``) of a detection set into ``out``
    (new or empty) in the input's format; the ``src.run`` overrides that train on it."""
    kept = [data.records[int(i)] for i in sorted(int(i) for i in kept_ids)]
    out.mkdir(parents=True, exist_ok=True)
    return WRITERS[data.format](data, kept, out, copy)
