"""Label Studio files: tasks to label written from a ranked selection (reading the annotations
back is ``src.data.labelstudio``, a dataset reader like COCO's and VOC's).

The round trip, for image classification (a ``Choices`` project) and detection (a
``RectangleLabels`` project):

1. ``write_import_file`` turns a ranked selection (``Proposal``s) into a Label Studio
   import file: one task per image whose data holds the image reference, the
   acquisition score ``al_score`` and the rank ``al_rank`` (1 = label first), and
   whose pre-annotation (``predictions``) is the model's guess, so an annotator
   corrects the guess instead of starting from nothing and can sort the Data
   Manager by ``al_rank``. ``label_config`` writes the matching labelling interface.
2. A person labels in Label Studio and exports the project as ``JSON``.
3. ``src.data.labelstudio.read_export`` reads that export into labelled items
   (``ClassLabel`` or detection ``ImageRecord``), and ``merge_labels`` merges them with
   earlier labels.

How images are referenced: Label Studio serves files from the machine it runs on
only through its local-files endpoint, ``/data/local-files/?d=<path>``, where
``<path>`` is relative to ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT``, serving must be
on (``LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true``) and the project needs a Local
Storage whose path is a sub-folder of the document root holding the images (it
need not be synced; it grants access). An absolute file path in a task is not
served: the annotator would see a broken image. So tasks reference an image by its
path relative to ``document_root`` behind ``image_prefix`` (the local-files prefix
by default; an ``http(s)://`` prefix works for images served another way).

An export is untrusted input; how it is checked: ``src.data.labelstudio``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np

from src.data.labelstudio import (
    FROM_NAME,
    IMAGE_KEY,
    LOCAL_FILES_PREFIX,
    RANK_KEY,
    SCORE_KEY,
    TO_NAME,
    check_task,
    lexical_abspath,
)
from src.data.paths import written_inside
from src.errors import UserError


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


# -- writing ---------------------------------------------------------------------------------------
def label_config(task: str, classes: Sequence[str]) -> str:
    """The labelling interface (XML) of a project that the import file and ``read_export`` fit."""
    check_task(task)
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
    check_task(task)
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
