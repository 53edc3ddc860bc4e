"""Label Studio files: tasks to label written from a ranked selection, annotations read back.

The round trip, for image classification (a ``Choices`` project) and detection (a
``RectangleLabels`` project):

1. ``write_import_file`` turns a ranked selection (``Proposal``s) into a Label Studio
   import file: one task per image whose data holds the image reference, the
   acquisition score ``al_score`` and the rank ``al_rank`` (1 = label first), and
   whose pre-annotation (``predictions``) is the model's guess, so an annotator
   corrects the guess instead of starting from nothing and can sort the Data
   Manager by ``al_rank``. ``label_config`` writes the matching labelling interface.
2. A person labels in Label Studio and exports the project as ``JSON``.
3. ``read_export`` reads that export into labelled items (``ClassLabel`` or
   detection ``ImageRecord``), and ``merge_labels`` merges them with earlier labels.

How images are referenced: Label Studio serves files from the machine it runs on
only through its local-files endpoint, ``/data/local-files/?d=<path>``, where
``<path>`` is relative to ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``, serving must be
on (``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``) and the project needs a Local
Storage whose path is a sub-folder of the document root holding the images (it
need not be synced; it grants access). An absolute file path in a task is not
served: the annotator would see a broken image. So tasks reference an image by its
path relative to ``document_root`` behind ``image_prefix`` (the local-files prefix
by default; an ``http(s)://`` prefix works for images served another way).

An export comes from other people and is read as untrusted input: every image
reference must decode to a file inside ``pool_root`` (no absolute paths, no ``..``
leaving it, no symlink leading out of it: ``src/data/paths.py``; the file must
exist), every class must be one of ``classes``, and a file
of the other project type, of another export format or of another shape fails with
one line naming the file and the task. Nothing in it is evaluated.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote, unquote_plus
from xml.sax.saxutils import quoteattr

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


@dataclass(frozen=True)
class ClassGuess:
    """The model's class for an image and its probability."""

    label: str
    confidence: float


@dataclass(frozen=True)
class BoxGuess:
    """The model's detections on an image: pixel xyxy boxes on a ``width`` x ``height`` image."""

    boxes: np.ndarray  # float [N, 4] xyxy, pixels
    labels: Sequence[str]
    scores: Sequence[float]
    width: int
    height: int


@dataclass(frozen=True)
class Proposal:
    """One selected image: its acquisition score (higher = more worth labelling), rank and guess."""

    image: Path
    score: float
    rank: int
    guess: ClassGuess | BoxGuess | None = None


@dataclass(frozen=True)
class ClassLabel:
    """A labelled classification image: the file and its class index into ``classes``."""

    file: Path
    label: int


# -- writing ---------------------------------------------------------------------------------------
def _check_task(task: str) -> None:
    if task not in TASKS:
        raise UserError(f"task={task!r}: Label Studio files exist for {' | '.join(TASKS)}")


def label_config(task: str, classes: Sequence[str]) -> str:
    """The labelling interface (XML) of a project that the import file and ``read_export`` fit."""
    _check_task(task)
    if task == "classification":
        items = "".join(f"\n    <Choice value={quoteattr(str(c))}/>" for c in classes)
        control = (
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single-radio" '
            f'showInline="true" required="true">{items}\n  </Choices>'
        )
    else:
        items = "".join(f"\n    <Label value={quoteattr(str(c))}/>" for c in classes)
        control = f'  <RectangleLabels name="{FROM_NAME}" toName="{TO_NAME}" canRotate="false">{items}\n  </RectangleLabels>'
    return f'<View>\n  <Image name="{TO_NAME}" value="${IMAGE_KEY}"/>\n{control}\n</View>\n'


def image_url(image: str | Path, document_root: str | Path, image_prefix: str = LOCAL_FILES_PREFIX) -> str:
    """The reference to ``image`` in a task: its path under ``document_root``, URL-quoted, behind the prefix."""
    root, path = lexical_abspath(document_root), lexical_abspath(image)
    # the URL names the path as written below the root: Label Studio serves what it names (the file
    # itself was found inside the images folder the user gave, src/labelling/pool.py)
    if not written_inside(path, root):
        raise UserError(
            f"image {image}: not under the Label Studio document root {root}; "
            f"images must lie below it to be served"
        )
    return image_prefix + quote(path.relative_to(root).as_posix(), safe="/")


def _class_result(guess: ClassGuess, classes: Sequence[str]) -> tuple[list[dict], float]:
    if guess.label not in classes:
        raise ValueError(f"predicted class {guess.label!r} is not one of {list(classes)}")
    return (
        [
            {
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "choices",
                "value": {"choices": [guess.label]},
            }
        ],
        float(guess.confidence),
    )


def _box_results(guess: BoxGuess, classes: Sequence[str]) -> tuple[list[dict], float | None]:
    w, h = int(guess.width), int(guess.height)
    boxes = np.clip(np.asarray(guess.boxes, dtype=np.float64).reshape(-1, 4), 0, [w, h, w, h])
    results = []
    for k, ((x0, y0, x1, y1), name, score) in enumerate(zip(boxes, guess.labels, guess.scores)):
        if name not in classes:
            raise ValueError(f"predicted class {name!r} is not one of {list(classes)}")
        results.append(
            {
                "id": f"p{k}",
                "from_name": FROM_NAME,
                "to_name": TO_NAME,
                "type": "rectanglelabels",
                "original_width": w,
                "original_height": h,
                "image_rotation": 0,
                "score": float(score),
                # Label Studio's rectangle: top-left corner and size, in percent of the image
                "value": {
                    "x": 100.0 * x0 / w,
                    "y": 100.0 * y0 / h,
                    "width": 100.0 * (x1 - x0) / w,
                    "height": 100.0 * (y1 - y0) / h,
                    "rotation": 0,
                    "rectanglelabels": [str(name)],
                },
            }
        )
    mean_score = float(np.mean(guess.scores)) if len(guess.scores) else None
    return results, mean_score


def import_tasks(
    proposals: Iterable[Proposal],
    task: str,
    classes: Sequence[str],
    document_root: str | Path,
    model_version: str = "al-select",
    image_prefix: str = LOCAL_FILES_PREFIX,
) -> list[dict]:
    """The Label Studio tasks of a ranked selection, in rank order."""
    _check_task(task)
    tasks = []
    for p in sorted(proposals, key=lambda p: p.rank):
        entry = {
            "data": {
                IMAGE_KEY: image_url(p.image, document_root, image_prefix),
                SCORE_KEY: float(p.score),
                RANK_KEY: int(p.rank),
            }
        }
        if p.guess is not None:
            is_box = isinstance(p.guess, BoxGuess)
            if is_box != (task == "detection"):
                raise ValueError(f"{p.image}: a {type(p.guess).__name__} cannot pre-annotate a {task} task")
            results, confidence = (_box_results if is_box else _class_result)(p.guess, classes)
            prediction = {"model_version": model_version, "result": results}
            if confidence is not None:  # the model's confidence: Label Studio's "prediction score"
                prediction["score"] = confidence
            entry["predictions"] = [prediction]
        tasks.append(entry)
    return tasks


def write_import_file(
    path: str | Path,
    proposals: Iterable[Proposal],
    task: str,
    classes: Sequence[str],
    document_root: str | Path,
    model_version: str = "al-select",
    image_prefix: str = LOCAL_FILES_PREFIX,
) -> Path:
    """Write the import file (a JSON list of tasks) and the labelling interface beside it (``.xml``)."""
    path = Path(path)
    tasks = import_tasks(proposals, task, classes, document_root, model_version, image_prefix)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=1) + "\n")
    path.with_suffix(".xml").write_text(label_config(task, classes))
    return path


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
    _check_task(task)
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
