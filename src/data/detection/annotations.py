"""Detection annotations on disk: COCO JSON and Pascal VOC XML, read into one shape.

Both readers return ``ImageRecord``s with boxes in pixel xyxy and labels as indices
into the configured ``classes`` list. Source class names are renamed with
``class_map`` (source name -> one of ``classes``); names that map to none of
``classes`` are dropped silently (that is a choice, not an error). Bad boxes (zero
or negative size, outside the image, an undeclared category) are skipped and counted,
or raise with ``strict=True``. Every error names the file (and, where a parser can
tell, the line and column), and missing image files are reported before any image is
decoded.
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.errors import UserError

log = logging.getLogger(__name__)

# Rounding of float annotations can put an edge a hair past the border; more than this is an error.
EDGE_TOLERANCE = 1.0


@dataclass
class ImageRecord:
    file: Path
    width: int
    height: int
    boxes: np.ndarray        # float32 [N, 4] xyxy, pixels
    labels: np.ndarray       # int64 [N]


@dataclass
class ReadReport:
    """What a reader kept and skipped, for the log line and the tests."""
    images: int = 0
    boxes: int = 0
    dropped_class: int = 0
    dropped_empty_images: int = 0
    bad: Counter = field(default_factory=Counter)

    def summary(self, source: str) -> str:
        bad = ", ".join(f"{n} {why}" for why, n in sorted(self.bad.items())) or "none"
        return (f"{source}: {self.images} images, {self.boxes} boxes kept; {self.dropped_class} boxes of "
                f"unused classes dropped; {self.dropped_empty_images} images without boxes dropped; "
                f"bad boxes skipped: {bad}")


class ClassMapper:
    def __init__(self, classes, class_map=None):
        self.classes = [str(c) for c in classes]
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise UserError(f"dataset.source.classes={self.classes!r} must be a non-empty list of distinct names")
        self.class_map = {str(k): str(v) for k, v in dict(class_map or {}).items()}
        unknown = sorted(v for v in self.class_map.values() if v not in self.classes)
        if unknown:
            raise UserError(f"dataset.source.class_map maps to {unknown}, which are not in dataset.source.classes={self.classes}")
        self.index = {name: i for i, name in enumerate(self.classes)}

    def __call__(self, source_name: str) -> int | None:
        """Index of the class a source name becomes, or None when it is dropped."""
        return self.index.get(self.class_map.get(source_name, source_name))


def check_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> str | None:
    """Why a box is bad, or None."""
    if not all(np.isfinite([x0, y0, x1, y1])):
        return "non-finite coordinates"
    if x1 - x0 <= 0 or y1 - y0 <= 0:
        return "zero or negative size"
    if x0 < -EDGE_TOLERANCE or y0 < -EDGE_TOLERANCE or x1 > width + EDGE_TOLERANCE or y1 > height + EDGE_TOLERANCE:
        return "outside the image"
    return None


class _Collector:
    """Shared bookkeeping of both readers: bad-box policy, dropped classes, empty images."""

    def __init__(self, mapper: ClassMapper, strict: bool, keep_empty: bool):
        self.mapper, self.strict, self.keep_empty = mapper, bool(strict), bool(keep_empty)
        self.report = ReadReport()
        self.records: list[ImageRecord] = []

    def bad(self, why: str, where: str) -> None:
        if self.strict:
            raise UserError(f"{where}: bad box ({why}); dataset.source.strict=false skips such boxes with a count")
        self.report.bad[why] += 1

    def add(self, file: Path, width: int, height: int, boxes: list, labels: list) -> None:
        if not boxes and not self.keep_empty:
            self.report.dropped_empty_images += 1
            return
        clipped = np.clip(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), 0,
                          [width, height, width, height]).astype(np.float32)
        self.records.append(ImageRecord(file, int(width), int(height), clipped, np.asarray(labels, dtype=np.int64)))
        self.report.images += 1
        self.report.boxes += len(boxes)


def _check_images_exist(records: list[ImageRecord], annotation_file: Path) -> None:
    for r in records:
        if not r.file.is_file():
            raise UserError(f"{annotation_file}: image {r.file} named by an annotation does not exist")


def read_coco(annotation_file, image_dir, classes, class_map=None, strict=False, keep_empty=True):
    """Records of a COCO detection JSON (``images``, ``annotations``, ``categories``)."""
    path = Path(annotation_file)
    if not path.is_file():
        raise UserError(f"dataset.source.annotations={path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a text file ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        raise UserError(f"{path}: not a COCO detection file (needs lists 'images', 'annotations', 'categories')")
    out = _Collector(ClassMapper(classes, class_map), strict, keep_empty)
    try:
        category = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {im["id"]: im for im in data["images"]}
        per_image: dict = {i: ([], []) for i in images}
        for k, ann in enumerate(data["annotations"]):
            where = f"{path}: annotation {ann.get('id', f'#{k}')}"
            image = images.get(ann["image_id"])
            if image is None:
                out.bad("unknown image_id", where)
                continue
            if ann.get("iscrowd", 0):
                continue        # crowd regions are not single objects
            if ann["category_id"] not in category:
                out.bad("unknown class", where)
                continue
            label = out.mapper(category[ann["category_id"]])
            if label is None:
                out.report.dropped_class += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            why = check_box(x, y, x + w, y + h, image["width"], image["height"])
            if why:
                out.bad(why, where)
                continue
            per_image[ann["image_id"]][0].append([x, y, x + w, y + h])
            per_image[ann["image_id"]][1].append(label)
        for image_id, im in images.items():
            boxes, labels = per_image[image_id]
            out.add(Path(image_dir) / im["file_name"], im["width"], im["height"], boxes, labels)
    except (KeyError, TypeError, ValueError) as err:   # a field missing or of the wrong type
        raise UserError(f"{path}: malformed COCO entry ({type(err).__name__}: {err})") from err
    _check_images_exist(out.records, path)
    log.info(out.report.summary(str(path)))
    return out.records, out.report


def read_voc(annotation_dir, image_dir, classes, class_map=None, strict=False, keep_empty=True):
    """Records of a Pascal VOC folder of XML files (one per image)."""
    adir = Path(annotation_dir)
    if not adir.is_dir():
        raise UserError(f"dataset.source.annotations={adir}: no such directory")
    files = sorted(adir.glob("*.xml"))
    if not files:
        raise UserError(f"dataset.source.annotations={adir}: no .xml files in it")
    out = _Collector(ClassMapper(classes, class_map), strict, keep_empty)
    for xml in files:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as err:
            line, col = err.position
            raise UserError(f"{xml}:{line}:{col}: not valid XML ({err})") from err
        try:
            name = root.findtext("filename")
            width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
            boxes, labels = [], []
            for k, obj in enumerate(root.findall("object")):
                where = f"{xml}: object {k}"
                label = out.mapper(str(obj.findtext("name")).strip())
                if label is None:
                    out.report.dropped_class += 1
                    continue
                bb = obj.find("bndbox")
                # VOC corners are 1-based and inclusive: pixel i spans [i-1, i) in xyxy terms
                x0, y0 = float(bb.findtext("xmin")) - 1, float(bb.findtext("ymin")) - 1
                x1, y1 = float(bb.findtext("xmax")), float(bb.findtext("ymax"))
                why = check_box(x0, y0, x1, y1, width, height)
                if why:
                    out.bad(why, where)
                    continue
                boxes.append([x0, y0, x1, y1])
                labels.append(label)
        except (TypeError, AttributeError, ValueError) as err:   # a field missing or not a number
            raise UserError(f"{xml}: malformed VOC annotation (a missing or non-numeric filename, size or "
                             f"bndbox field: {err})") from err
        if not name:
            raise UserError(f"{xml}: malformed VOC annotation (no <filename>)")
        out.add(Path(image_dir) / name, width, height, boxes, labels)
    _check_images_exist(out.records, adir)
    log.info(out.report.summary(str(adir)))
    return out.records, out.report
