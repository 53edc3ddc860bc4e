"""Detection annotations on disk: COCO JSON, Pascal VOC XML and YOLO trees, read into one shape.

Every reader first turns its files into ``RawImage``s (an image file, its size and
its objects under the class names the files use), then ``apply_classes`` makes the
``ImageRecord``s every reader returns: boxes in pixel xyxy, labels as indices into
the class list. Source class names are renamed with ``class_map`` (source name ->
class); names that map to none of ``classes`` are dropped and counted. ``classes``
None takes the (mapped) names found in the files, sorted. Bad boxes (zero or
negative size, outside the image, an undeclared class) are skipped and counted, or
raise with ``strict=True``.

Annotation files come from other people, so they are untrusted input: every image
path they name must stay inside the configured image root, as written and with every
symlink followed (``src/data/paths.py``: a symlink whose target stays inside the root
is read, one leading out of it is refused; a root that is itself a symlink is fine),
and a mistake in them is a ``UserError`` naming the file and the entry, raised before
any image is decoded.
When the configured classes keep no box at all, the error lists the class names
found in the files with their counts, and how to map them.
"""

from __future__ import annotations

import json
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.data.paths import absolute, join_inside, leads_to, written_inside
from src.errors import UserError

log = logging.getLogger(__name__)

# Rounding of float annotations can put an edge a hair past the border; more than this is an error.
EDGE_TOLERANCE = 1.0
# Where the readers' settings live in the config, for messages.
KEY = "dataset.source"


@dataclass
class ImageRecord:
    file: Path
    width: int
    height: int
    boxes: np.ndarray  # float32 [N, 4] xyxy, pixels
    labels: np.ndarray  # int64 [N]
    split: str | None = None  # 'pool' / 'val' / 'test' when the files come pre-split (YOLO), else None
    # the annotation entry it was read from: a COCO image id, a VOC XML file, a YOLO label file (which may
    # not exist: no boxes); what a kept subset is written from (src/labelling/subsets.py)
    origin: object = None


@dataclass
class RawObject:
    name: str | None  # the class name as the file writes it; None: a class the file does not declare
    box: tuple  # x0, y0, x1, y1 in pixels
    where: str  # "<file>: <entry>", for messages


@dataclass
class RawImage:
    file: Path
    width: int
    height: int
    objects: list[RawObject] = field(default_factory=list)
    split: str | None = None
    origin: object = None


@dataclass
class ReadReport:
    """What a reader kept and skipped, for the log line and the tests."""

    images: int = 0
    boxes: int = 0
    dropped_class: int = 0
    dropped_empty_images: int = 0
    bad: Counter = field(default_factory=Counter)
    found: Counter = field(default_factory=Counter)  # boxes per class name as the files write it
    # a YOLO tree pairs images and label files by name (None for the other formats): an image
    # without a label file has no boxes, the boxes of a label file without an image are not read
    images_without_labels: int | None = None
    labels_without_images: int | None = None
    outside_root: int = 0  # image files of a scanned folder skipped: symlinks leading out of the root

    def summary(self, source: str) -> str:
        bad = ", ".join(f"{n} {why}" for why, n in sorted(self.bad.items())) or "none"
        line = (
            f"{source}: {self.images} images, {self.boxes} boxes kept; {self.dropped_class} boxes of "
            f"unused classes dropped; {self.dropped_empty_images} images without boxes dropped; "
            f"bad boxes skipped: {bad}"
        )
        if self.images_without_labels is not None:
            line += (
                f"; {self.images_without_labels} images without a label file (no boxes), "
                f"{self.labels_without_images} label files without an image (their boxes not read)"
            )
        if self.outside_root:
            line += f"; {self.outside_root} image files skipped: symlinks leading outside the root"
        return line

    def found_names(self) -> str:
        """'name count, ...' of the class names in the files, most frequent first."""
        return ", ".join(f"{name} {n}" for name, n in self.found.most_common())


class ClassMapper:
    """Source class name -> label index; ``classes`` None takes the mapped names found, sorted."""

    def __init__(self, classes, class_map=None, found: Counter | None = None):
        self.class_map = {str(k): str(v) for k, v in dict(class_map or {}).items()}
        if classes is None:
            classes = sorted({self.class_map.get(n, n) for n in (found or {})})
            if not classes:
                classes = sorted(set(self.class_map.values()))
        self.classes = [str(c) for c in classes]
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise UserError(
                f"{KEY}.classes={self.classes!r} must be a non-empty list of distinct names, or null "
                "(the class names found in the files)"
            )
        unknown = sorted(v for v in self.class_map.values() if v not in self.classes)
        if unknown:
            raise UserError(
                f"{KEY}.class_map maps to {unknown}, which are not in {KEY}.classes={self.classes}"
            )
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
    if (
        x0 < -EDGE_TOLERANCE
        or y0 < -EDGE_TOLERANCE
        or x1 > width + EDGE_TOLERANCE
        or y1 > height + EDGE_TOLERANCE
    ):
        return "outside the image"
    return None


def image_root(images, key: str = f"{KEY}.images") -> Path:
    """The image root as an absolute path (not resolved: the files keep the spelling the user gave)."""
    if not images:
        raise UserError(f"{key} is not set; name the folder the annotations' image paths are relative to")
    root = Path(os.path.abspath(os.path.expanduser(str(images))))
    if not root.is_dir():
        raise UserError(f"{key}={images}: no such directory")
    return root


def image_inside(root: Path, name: str, source, entry: str, what: str = "image") -> Path:
    """``root / name`` when it stays inside ``root`` (``paths.join_inside``: as written and with every
    symlink followed), or a one-line error naming the annotation file, the entry and the root."""
    path = join_inside(root, str(name))
    if path is None:
        written = absolute(root / str(name))
        if written_inside(written, root):  # inside as written: a symlink out of the root
            raise UserError(
                f"{source}: {entry} names {what} {str(name)!r}, which leads outside the image root "
                f"{root} through a symlink (to {leads_to(written)}); image paths must stay inside it"
            )
        raise UserError(
            f"{source}: {entry} names {what} {str(name)!r}, which is outside the image root {root}; "
            "image paths must stay inside it"
        )
    return path


def apply_classes(
    raw: list[RawImage],
    bad: Counter,
    source: str,
    classes,
    class_map=None,
    strict: bool = False,
    keep_empty: bool = True,
    require_boxes: bool = True,
    files: dict | None = None,
) -> tuple[list[ImageRecord], ReadReport, list[str]]:
    """Records, report and class names of a reader's raw images (see the module doc); ``require_boxes``
    False accepts files without any kept box (images to score, whose labels are not used); ``files``:
    the reader's file counts for the report (``ReadReport`` fields, e.g. a YOLO tree's unpaired files)."""
    report = ReadReport(bad=Counter(bad), **(files or {}))
    report.found = Counter(obj.name for image in raw for obj in image.objects if obj.name is not None)
    mapper = ClassMapper(classes, class_map, report.found)
    records = []
    for image in raw:
        boxes, labels = [], []
        for obj in image.objects:
            label = None if obj.name is None else mapper(obj.name)
            if label is None and obj.name is not None:
                report.dropped_class += 1
                continue
            why = "unknown class" if obj.name is None else check_box(*obj.box, image.width, image.height)
            if why:
                if strict:
                    raise UserError(
                        f"{obj.where}: bad box ({why}); {KEY}.strict=false skips such boxes with a count"
                    )
                report.bad[why] += 1
                continue
            boxes.append(obj.box)
            labels.append(label)
        if not boxes and not keep_empty:
            report.dropped_empty_images += 1
            continue
        clipped = np.clip(
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            0,
            [image.width, image.height, image.width, image.height],
        ).astype(np.float32)
        records.append(
            ImageRecord(
                image.file,
                int(image.width),
                int(image.height),
                clipped,
                np.asarray(labels, dtype=np.int64),
                image.split,
                image.origin,
            )
        )
        report.images += 1
        report.boxes += len(boxes)
    if report.boxes == 0 and require_boxes:
        raise UserError(no_box_message(source, mapper.classes, report))
    log.info(report.summary(source))
    return records, report, mapper.classes


def no_box_message(source, classes: list[str], report: ReadReport, where: str = "") -> str:
    """One line: no box is kept (``where``: in which part), the names the files use and how to map them."""
    if not report.found:
        return f"{source}: the files hold no boxes at all{where}; a detection set needs annotated objects"
    example = ", ".join(f"{name}: {classes[0]}" for name, _ in report.found.most_common(2))
    return (
        f"{source}: {KEY}.classes={classes} keep no box{where}; the files name these classes (boxes): "
        f"{report.found_names()}; rename them with {KEY}.class_map={{{example}}}, or set "
        f"{KEY}.classes=null to use the names found"
    )


# -- COCO ------------------------------------------------------------------------------------
def _coco_field(entry, name: str, kind, where: str):
    """``entry[name]`` checked to be of ``kind`` (a type or a tuple), else a one-line error."""
    if not isinstance(entry, dict) or name not in entry:
        raise UserError(f"{where}: malformed COCO entry (no '{name}')")
    value = entry[name]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UserError(f"{where}: malformed COCO entry ('{name}' is {value!r})")
    return value


def _coco_box(ann, where: str) -> tuple:
    bbox = _coco_field(ann, "bbox", list, where)
    if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
        raise UserError(
            f"{where}: malformed COCO entry ('bbox' must be 4 numbers [x, y, w, h], got {bbox!r})"
        )
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


def _load_coco(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{KEY}.annotations={path}: no such file")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a text file ({err})") from err
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise UserError(
            f"{path}: not a COCO detection file (needs lists 'images', 'annotations', 'categories')"
        )
    return data


def read_coco(
    annotation_file, image_dir, classes, class_map=None, strict=False, keep_empty=True, require_boxes=True
):
    """Records, report and class names of a COCO detection JSON (``images``, ``annotations``, ``categories``)."""
    path = Path(annotation_file)
    data = _load_coco(path)
    root = image_root(image_dir)
    number = (int, float)
    category = {
        _coco_field(c, "id", int, f"{path}: category #{k}"): str(
            _coco_field(c, "name", str, f"{path}: category #{k}")
        )
        for k, c in enumerate(data["categories"])
    }
    raw: dict[int, RawImage] = {}
    for k, im in enumerate(data["images"]):
        where = f"{path}: image #{k}"
        image_id = _coco_field(im, "id", (int, str), where)
        file_name = _coco_field(im, "file_name", str, where)
        raw[image_id] = RawImage(
            image_inside(root, file_name, path, f"image {image_id}"),
            int(_coco_field(im, "width", number, where)),
            int(_coco_field(im, "height", number, where)),
            origin=image_id,
        )
        if not raw[image_id].file.is_file():
            raise UserError(
                f"{path}: image {image_id} names image {file_name!r}, which does not exist under the "
                f"image root {root}"
            )
    bad = Counter()
    for k, ann in enumerate(data["annotations"]):
        where = f"{path}: annotation {ann.get('id', f'#{k}') if isinstance(ann, dict) else f'#{k}'}"
        image = raw.get(_coco_field(ann, "image_id", (int, str), where))
        if image is None:
            if strict:
                raise UserError(
                    f"{where}: unknown image_id; {KEY}.strict=false skips such boxes with a count"
                )
            bad["unknown image_id"] += 1
            continue
        if ann.get("iscrowd", 0):
            continue  # crowd regions are not single objects
        category_id = _coco_field(ann, "category_id", int, where)
        image.objects.append(RawObject(category.get(category_id), _coco_box(ann, where), where))
    return apply_classes(
        list(raw.values()), bad, str(path), classes, class_map, strict, keep_empty, require_boxes
    )


# -- Pascal VOC ------------------------------------------------------------------------------
def _voc_text(node, tag: str, xml: Path, where: str = "") -> str:
    text = node.findtext(tag)
    if text is None or not text.strip():
        raise UserError(f"{xml}: malformed VOC annotation (no <{tag}>{where})")
    return text.strip()


def _voc_number(node, tag: str, xml: Path, where: str = "") -> float:
    text = _voc_text(node, tag, xml, where)
    try:
        return float(text)
    except ValueError:
        raise UserError(
            f"{xml}: malformed VOC annotation (<{tag}>{where} is {text!r}, not a number)"
        ) from None


def voc_image_path(root: Path, annotation, xml: Path) -> Path:
    """The image of one VOC file: ``<folder>/<filename>``, then ``<path>``, then the flat ``<filename>``.

    Labelling tools (LabelImg, CVAT) write images into sub-folders named by
    ``<folder>`` and record the labeller's own ``<path>``. A relative name that leaves
    the root is an error; an absolute ``<path>`` outside it (the labeller's machine)
    is not a candidate, one inside it that leads out through a symlink is an error.
    """
    filename = _voc_text(annotation, "filename", xml)
    folder = (annotation.findtext("folder") or "").strip()
    recorded = (annotation.findtext("path") or "").strip()
    tried = []
    if folder:
        tried.append(image_inside(root, os.path.join(folder, filename), xml, "<folder>/<filename>"))
    if recorded:
        if os.path.isabs(recorded):
            if written_inside(recorded, root):
                tried.append(image_inside(root, recorded, xml, "<path>"))
        else:
            tried.append(image_inside(root, recorded, xml, "<path>"))
    tried.append(image_inside(root, filename, xml, "<filename>"))
    for path in tried:
        if path.is_file():
            return path
    raise UserError(
        f"{xml}: image {filename!r} does not exist under the image root {root} (looked for "
        f"{', '.join(p.relative_to(root).as_posix() for p in dict.fromkeys(tried))})"
    )


def _voc_image(xml: Path, root: Path) -> RawImage:
    try:
        annotation = ET.parse(xml).getroot()
    except ET.ParseError as err:
        line, col = err.position
        raise UserError(f"{xml}:{line}:{col}: not valid XML ({err})") from err
    image = RawImage(
        voc_image_path(root, annotation, xml),
        int(_voc_number(annotation, "size/width", xml)),
        int(_voc_number(annotation, "size/height", xml)),
        origin=xml,
    )
    for k, obj in enumerate(annotation.findall("object")):
        where = f" in object {k}"
        box = obj.find("bndbox")
        if box is None:
            raise UserError(f"{xml}: malformed VOC annotation (no <bndbox>{where})")
        # VOC corners are 1-based and inclusive: pixel i spans [i-1, i) in xyxy terms
        corners = (
            _voc_number(box, "xmin", xml, where) - 1,
            _voc_number(box, "ymin", xml, where) - 1,
            _voc_number(box, "xmax", xml, where),
            _voc_number(box, "ymax", xml, where),
        )
        image.objects.append(RawObject(_voc_text(obj, "name", xml, where), corners, f"{xml}: object {k}"))
    return image


def read_voc(
    annotation_dir, image_dir, classes, class_map=None, strict=False, keep_empty=True, require_boxes=True
):
    """Records, report and class names of a Pascal VOC folder of XML files (one per image)."""
    adir = Path(annotation_dir)
    if not adir.is_dir():
        raise UserError(f"{KEY}.annotations={adir}: no such directory")
    files = sorted(adir.glob("*.xml"))
    if not files:
        raise UserError(f"{KEY}.annotations={adir}: no .xml files in it")
    root = image_root(image_dir)
    raw = [_voc_image(xml, root) for xml in files]
    return apply_classes(raw, Counter(), str(adir), classes, class_map, strict, keep_empty, require_boxes)
