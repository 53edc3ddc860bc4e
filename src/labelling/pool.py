"""A folder of unlabelled images as a pool to score, and the model's guesses in image pixels.

``UnlabelledImages`` yields batches shaped like the labelled datasets' (``(uint8
images, targets, ids)``) so the same pool pass scores them: classification items
are decoded like a folder source (shorter side resized, centre crop) with label -1;
detection items are resized to the model's input size with an empty target, and the
original size is kept so guesses map back to the file's pixels. With no labels,
only the uncertainty scorers apply (``loss`` needs labels).

``class_guesses`` and ``box_guesses`` turn model outputs into the ``ClassGuess`` /
``BoxGuess`` pre-annotations of ``labelstudio.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from src.data.cache import decode_image, is_image
from src.data.paths import skipped_note, split_inside
from src.errors import UserError
from src.labelling.labelstudio import BoxGuess, ClassGuess

log = logging.getLogger(__name__)

TASKS = ("classification", "detection")


def pool_files(folder: str | Path) -> list[Path]:
    """The image files under ``folder`` (recursively, hidden ones left out), sorted: the pool's ids.

    A file that leads outside ``folder`` (a symlink out of it, ``src/data/paths.py``) is skipped
    and counted in the log, never read or ranked.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise UserError(f"images={root}: not a folder; name the folder of images to choose from")
    files, left = split_inside(
        sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and is_image(p)
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        ),
        root,
    )
    if left:
        log.warning(f"images={skipped_note(left, root)}")
    if not files:
        skipped = f" ({len(left)} symlinks leading outside it skipped)" if left else ""
        raise UserError(
            f"images={root}: no image files (.jpg, .jpeg, .png, .bmp, .webp, .gif, .tif) in it{skipped}"
        )
    return files


class UnlabelledImages(Dataset):
    """Item i: (uint8 [3, H, W] image, -1 or an empty detection target, i)."""

    def __init__(
        self,
        files: Sequence[Path],
        task: str,
        image_size: int | Sequence[int],
        resize_size: int | None = None,
    ):
        if task not in TASKS:
            raise UserError(f"task={task!r}: allowed {' | '.join(TASKS)}")
        self.files, self.task = [Path(f) for f in files], task
        self.image_size = int(image_size) if task == "classification" else tuple(int(v) for v in image_size)
        self.resize_size = resize_size  # classification: as the run's dataset decoded its files
        self.original_sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        if self.task == "classification":
            return (
                torch.from_numpy(decode_image(self.files[i], self.image_size, self.resize_size).copy()),
                torch.tensor(-1),
                i,
            )
        from PIL import Image

        width, height = self.image_size
        with Image.open(self.files[i]) as im:
            self.original_sizes[i] = im.size
            pixels = np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR))
        target = {
            "boxes": torch.zeros((0, 4), dtype=torch.float32),
            "labels": torch.zeros(0, dtype=torch.int64),
        }
        return torch.from_numpy(pixels.copy()).permute(2, 0, 1), target, i

    def original_size(self, i: int) -> tuple[int, int]:
        """(width, height) of file i, read from its header when the item was not loaded here."""
        if i not in self.original_sizes:
            from PIL import Image

            with Image.open(self.files[i]) as im:
                self.original_sizes[i] = im.size
        return self.original_sizes[i]


def class_guesses(logits: torch.Tensor, classes: Sequence[str]) -> list[ClassGuess]:
    """The most probable class of each row of logits and its softmax probability."""
    probs = torch.softmax(logits.double(), dim=1)
    best, index = probs.max(dim=1)
    return [ClassGuess(str(classes[k]), float(p)) for p, k in zip(best.tolist(), index.tolist())]


def box_guesses(
    detections: Sequence[dict],
    input_size: Sequence[int],
    original_sizes: Sequence[tuple[int, int]],
    classes: Sequence[str],
    min_score: float = 0.3,
) -> list[BoxGuess]:
    """Detections on the resized input (boxes in input pixels, labels 0..K-1, scores) as guesses in each
    file's own pixels; detections below ``min_score`` are left out so the annotator is not handed noise."""
    in_w, in_h = (int(v) for v in input_size)
    out = []
    for det, (w, h) in zip(detections, original_sizes):
        keep = det["scores"] >= min_score
        scale = torch.tensor([w / in_w, h / in_h, w / in_w, h / in_h], dtype=torch.float64)
        boxes = det["boxes"][keep].double().cpu() * scale
        out.append(
            BoxGuess(
                boxes.numpy(),
                [str(classes[k]) for k in det["labels"][keep].tolist()],
                det["scores"][keep].double().tolist(),
                int(w),
                int(h),
            )
        )
    return out
