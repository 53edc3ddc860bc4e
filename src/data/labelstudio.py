"""Label Studio exports read back: the labelled images of a campaign, as the datasets take them.

A person labels the tasks ``src.labelling.labelstudio`` wrote (one task per image, referenced
through Label Studio's local-files endpoint ``/data/local-files/?d=<path>``, relative to
``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``) and exports the project as ``JSON``. ``read_export``
reads that export into labelled items (``ClassLabel`` for a ``Choices`` project, detection
``ImageRecord``s for a ``RectangleLabels`` one) and ``merge_labels`` merges them with earlier
labels, later answers winning.

An export comes from other people and is read as untrusted input: every image reference must
decode to a file inside ``pool_root`` (no absolute paths, no ``..`` leaving it, no symlink
leading out of it: ``src/data/paths.py``; the file must exist), every class must be one of
``classes``, and a file of the other project type, of another export format or of another shape
fails with one line naming the file and the task. Nothing in it is evaluated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, unquote_plus

import numpy as np

from src.data.detection.annotations import ImageRecord, check_box
from src.data.paths import absolute, inside_root, leads_to, written_inside
from src.errors import UserError

TASKS = ("classification", "detection")
LOCAL_FILES_PREFIX = "/data/local-files/?d="
# Names shared by the labelling interface, the tasks and the pre-annotations.
IMAGE_KEY, FROM_NAME, TO_NAME = "image", "label", "image"
SCORE_KEY, RANK_KEY = "al_score", "al_rank"
# Region types of other project kinds: a detection export holding them was made for another task.
OTHER_REGION_TYPES = frozenset(
    {
        "polygonlabels",
        "keypointlabels",
        "brushlabels",
        "ellipselabels",
        "rectangle",
        "labels",
        "polygon",
        "keypoint",
        "brush",
        "ellipse",
    }
)


def check_task(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"task={task!r}: Label Studio files exist for {' | '.join(TASKS)}")


@dataclass(frozen=True)
class ClassLabel:
    """A labelled classification image: the file and its class index into ``classes``."""

    file: Path
    label: int


# -- reading -----------------------------------------------------------------------------------------
@dataclass
class ExportReport:
    """What ``read_export`` took from an export, for the log line and the tests."""

    tasks: int = 0
    labelled: int = 0
    unannotated: int = 0  # no annotation, or only skipped (cancelled) ones
    no_choice: int = 0  # classification annotations submitted without a class
    superseded: int = 0  # labels of an image replaced by a later annotation of it in another task
    boxes: int = 0
    bad_boxes: dict = field(default_factory=dict)

    def summary(self, source: str) -> str:
        bad = ", ".join(f"{n} {why}" for why, n in sorted(self.bad_boxes.items())) or "none"
        return (
            f"{source}: {self.tasks} tasks, {self.labelled} images labelled, {self.unannotated} without "
            f"an annotation, {self.no_choice} without a class, {self.superseded} superseded; "
            f"{self.boxes} boxes, bad boxes skipped: {bad}"
        )


def lexical_abspath(path: str | Path) -> Path:
    """Absolute and lexically normalised (``..`` folded), symlinks kept: the spelling files are shown by."""
    return absolute(path)


def _load_tasks(path: Path) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: no such Label Studio export file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg})") from err
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a text file ({err.reason})") from err
    if not isinstance(data, list) or not all(isinstance(t, dict) for t in data):
        raise UserError(
            f"{path}: not a Label Studio JSON export (a list of tasks); export the project as 'JSON'"
        )
    for t in data:
        if not isinstance(t.get("data"), dict) or not isinstance(t.get("annotations"), list):
            raise UserError(
                f"{path}: task {t.get('id', '?')} has no 'data' and 'annotations' lists: not a Label "
                f"Studio 'JSON' export (JSON_MIN, CSV and import files are not read)"
            )
    return data


def _when(annotation: dict, where: str) -> tuple[datetime, int]:
    """Sort key of an annotation: last change, then id (ids grow with creation)."""
    stamp = annotation.get("updated_at") or annotation.get("created_at")
    try:
        when = datetime.fromisoformat(str(stamp)) if stamp else datetime.min
    except ValueError as err:
        raise UserError(f"{where}: updated_at={stamp!r} is not an ISO date") from err
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    ann_id = annotation.get("id")
    return when, ann_id if isinstance(ann_id, int) else -1


def _latest_annotation(task: dict, where: str) -> dict | None:
    """The task's latest annotation that was submitted (not skipped), or None."""
    kept = [a for a in task["annotations"] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not all(isinstance(a.get("result"), list) for a in kept):
        raise UserError(f"{where}: an annotation without a 'result' list")
    return max(kept, key=lambda a: _when(a, where), default=None)


def image_path(value, document_root: Path, pool_root: Path, image_prefix: str, where: str) -> Path:
    """The pool file that a task's image reference names; UserError for anything else."""
    if not isinstance(value, str) or not value.startswith(image_prefix):
        raise UserError(
            f"{where}: image {value!r} does not start with {image_prefix!r}: not an image of the pool "
            f"(tasks must come from this project's import file)"
        )
    encoded = value[len(image_prefix) :]
    relative = unquote_plus(encoded) if "?" in image_prefix else unquote(encoded)
    if not relative or "\x00" in relative or os.path.isabs(relative):
        raise UserError(f"{where}: image {value!r} is not a relative path below the document root")
    path = lexical_abspath(document_root / relative)
    if not written_inside(path, pool_root):
        raise UserError(f"{where}: image {value!r} lies outside the pool {pool_root}")
    if not inside_root(path, pool_root):
        raise UserError(
            f"{where}: image {value!r} leads outside the pool {pool_root} through a symlink "
            f"(to {leads_to(path)}); images must stay inside it"
        )
    if not path.is_file():
        raise UserError(f"{where}: image {path} named by the export does not exist in the pool")
    return path


def _class_of(name, classes: Sequence[str], where: str) -> int:
    if not isinstance(name, str) or name not in classes:
        raise UserError(f"{where}: class {name!r} is not one the model knows; allowed: {', '.join(classes)}")
    return list(classes).index(name)


def _read_choice(results: list[dict], classes: Sequence[str], where: str) -> int | None:
    choices = [r for r in results if isinstance(r, dict) and r.get("type") == "choices"]
    if not choices:
        kinds = sorted({str(r.get("type")) for r in results if isinstance(r, dict)})
        if kinds:
            raise UserError(
                f"{where}: results of type {', '.join(kinds)} but no 'choices': not a classification "
                f"export (read a RectangleLabels project with task=detection)"
            )
        return None
    names = [c for r in choices for c in _choices_of(r, where)]
    if len(names) != 1:
        raise UserError(f"{where}: {len(names)} classes chosen ({names}); one class per image is allowed")
    return _class_of(names[0], classes, where)


def _choices_of(result: dict, where: str) -> list:
    value = result.get("value")
    if not isinstance(value, dict) or not isinstance(value.get("choices"), list):
        raise UserError(f"{where}: a 'choices' result without a value.choices list")
    return value["choices"]


def _image_size(result: dict, file: Path, where: str) -> tuple[int, int]:
    w, h = result.get("original_width"), result.get("original_height")
    if w is None or h is None:  # not recorded: the file's own size
        from PIL import Image

        with Image.open(file) as im:
            return im.size
    if not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
        raise UserError(f"{where}: original_width/original_height {w!r}/{h!r} must be positive integers")
    return w, h


def _read_boxes(results: list[dict], classes: Sequence[str], file: Path, where: str, report: ExportReport):
    """Boxes (pixel xyxy), labels and image size of one annotation's rectangles."""
    boxes, labels, size = [], [], None
    for r in results:
        kind = r.get("type") if isinstance(r, dict) else None
        if kind in OTHER_REGION_TYPES:
            raise UserError(
                f"{where}: a '{kind}' region: only RectangleLabels regions are read for detection"
            )
        if kind != "rectanglelabels":
            continue  # choices, text areas, ratings: not boxes
        v = r.get("value")
        if (
            not isinstance(v, dict)
            or not isinstance(v.get("rectanglelabels"), list)
            or len(v["rectanglelabels"]) != 1
        ):
            raise UserError(f"{where}: a rectangle needs exactly one label in value.rectanglelabels")
        if abs(_number(v.get("rotation", 0), where)) > 1e-6:
            raise UserError(
                f"{where}: a rotated rectangle; only axis-aligned boxes are allowed (canRotate=false)"
            )
        label = _class_of(v["rectanglelabels"][0], classes, where)
        w, h = _image_size(r, file, where)
        if size is not None and size != (w, h):
            raise UserError(f"{where}: rectangles disagree on the image size ({size} vs {(w, h)})")
        size = (w, h)
        x, y, bw, bh = (_number(v.get(k), where) for k in ("x", "y", "width", "height"))
        x0, y0, x1, y1 = x * w / 100.0, y * h / 100.0, (x + bw) * w / 100.0, (y + bh) * h / 100.0
        why = check_box(x0, y0, x1, y1, w, h)
        if why:
            report.bad_boxes[why] = report.bad_boxes.get(why, 0) + 1
            continue
        boxes.append([x0, y0, x1, y1])
        labels.append(label)
    return boxes, labels, size


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{where}: rectangle coordinate {value!r} is not a finite number")
    return float(value)


def _check_is_detection(tasks: list[dict], path: Path) -> None:
    """A detection read of a classification export would find no boxes, silently: refuse it."""
    kinds = {
        r.get("type")
        for t in tasks
        for a in t["annotations"]
        if isinstance(a, dict)
        for r in (a.get("result") or [])
        if isinstance(r, dict)
    }
    if "choices" in kinds and "rectanglelabels" not in kinds:
        raise UserError(
            f"{path}: 'choices' results and no rectangles: a classification export, not detection "
            f"(read it with task=classification)"
        )


def read_export(
    path: str | Path,
    task: str,
    classes: Sequence[str],
    document_root: str | Path,
    pool_root: str | Path | None = None,
    image_prefix: str = LOCAL_FILES_PREFIX,
):
    """Labelled items of a Label Studio JSON export, and an ``ExportReport``.

    Per task the latest submitted annotation counts (skipped ones do not); an image
    labelled in several tasks keeps the label of the latest annotation. Returns
    ``ClassLabel``s (classification) or ``ImageRecord``s with pixel xyxy boxes and an
    empty box list for an image submitted without objects (detection), in file order.
    Images must lie in ``pool_root`` (default: the document root).
    """
    check_task(task)
    path, document_root = Path(path), lexical_abspath(document_root)
    pool_root = lexical_abspath(pool_root) if pool_root is not None else document_root
    classes = [str(c) for c in classes]
    tasks = _load_tasks(path)
    if task == "detection":
        _check_is_detection(tasks, path)
    report = ExportReport(tasks=len(tasks))
    latest: dict[Path, tuple[tuple, object]] = {}
    for t in tasks:
        where = f"{path}: task {t.get('id', '?')}"
        file = image_path(t["data"].get(IMAGE_KEY), document_root, pool_root, image_prefix, where)
        annotation = _latest_annotation(t, where)
        if annotation is None:
            report.unannotated += 1
            continue
        if task == "classification":
            label = _read_choice(annotation["result"], classes, where)
            if label is None:
                report.no_choice += 1
                continue
            item = ClassLabel(file, label)
        else:
            boxes, labels, size = _read_boxes(annotation["result"], classes, file, where, report)
            w, h = size if size else _image_size({}, file, where)
            pixels = np.clip(np.asarray(boxes, np.float64).reshape(-1, 4), 0, [w, h, w, h]).astype(np.float32)
            item = ImageRecord(file, w, h, pixels, np.asarray(labels, dtype=np.int64))
        when = _when(annotation, where)
        if file in latest:
            report.superseded += 1
            if latest[file][0] > when:
                continue
        latest[file] = (when, item)
    items = [item for _, item in latest.values()]
    report.labelled = len(items)
    report.boxes = sum(len(i.labels) for i in items if isinstance(i, ImageRecord))
    return items, report


def merge_labels(earlier: Iterable, later: Iterable) -> list:
    """Earlier labels updated by later ones: an image labelled in both keeps its later label whole
    (for detection its later box set, not a union). Earlier order first, then new images."""
    merged = {lexical_abspath(item.file): item for item in earlier}
    for item in later:
        merged[lexical_abspath(item.file)] = item
    return list(merged.values())
