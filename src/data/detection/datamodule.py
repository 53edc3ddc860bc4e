"""The detection datamodule: the same four id sets and loaders the loop uses for
classification, with images that carry a variable number of boxes.

A batch is ``(images uint8 [B, 3, H, W], targets, ids)``: every image is resized to
``image_size`` (width, height) when it is loaded, boxes scaled with it, so batches
stack and the detector sees the size it was configured for. ``targets`` is a list of
``{"boxes": float [N, 4] xyxy, "labels": long [N]}`` with labels 0..K-1 (the model adds
its background class itself).
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from src.data.datamodule import LabelledSetDataModule
from src.data.detection.annotations import ImageRecord, read_coco, read_voc
from src.data.detection.scenes import CLASSES as SCENE_CLASSES, render_scene
from src.errors import UserError

log = logging.getLogger(__name__)


class SceneSource:
    """``n`` embedded surveillance scenes of one style, rendered once at the datamodule's size."""

    def __init__(self, n: int = 400, style: str = "street", seed: int = 0, max_objects: int = 8):
        if int(n) < 1:
            raise UserError(f"dataset.source.n={n!r} must be a positive integer")
        self.n, self.style, self.seed, self.max_objects = int(n), str(style), int(seed), int(max_objects)
        self.classes = list(SCENE_CLASSES)
        self._cache: tuple | None = None

    def describe(self) -> str:
        return f"scenes[{self.style}, n={self.n}, seed={self.seed}]"

    def prepare(self, width: int, height: int) -> None:
        if self._cache is not None and self._cache[0] == (width, height):
            return
        images = torch.empty(self.n, 3, height, width, dtype=torch.uint8)
        targets = []
        for i in range(self.n):
            # scene seeds are spread so that sources with nearby seeds do not share scenes
            scene = render_scene(self.seed * 1_000_003 + i, self.style, width, height, self.max_objects)
            images[i] = torch.from_numpy(scene.image).permute(2, 0, 1)
            targets.append({"boxes": torch.from_numpy(scene.boxes), "labels": torch.from_numpy(scene.labels)})
        self._cache = ((width, height), images, targets)

    def __len__(self) -> int:
        return self.n

    def labels(self, i: int) -> torch.Tensor:
        return self._cache[2][i]["labels"]

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        _, images, targets = self._cache
        return images[i], targets[i]


class FileSource:
    """Images and boxes of a COCO JSON file or a VOC folder, loaded and resized per item."""

    def __init__(self, format: str, annotations: str, images: str, classes: Sequence[str],
                 class_map: dict | None = None, strict: bool = False, keep_empty: bool = True):
        readers = {"coco": read_coco, "voc": read_voc}
        if format not in readers:
            raise UserError(f"dataset.source.format={format!r}; allowed: coco, voc")
        self.format = format
        self.args = dict(annotations=annotations, images=images, class_map=class_map, strict=strict,
                         keep_empty=keep_empty)
        if not annotations or not images:
            raise UserError("dataset.source.annotations and dataset.source.images must both be set "
                             f"(the {format} annotations and the image folder)")
        self.classes = [str(c) for c in classes]
        self.records: list[ImageRecord] | None = None
        self.size: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"{self.format}[{self.args['annotations']}]"

    def prepare(self, width: int, height: int) -> None:
        """Read the annotations (once): errors surface in the datamodule's setup, before training."""
        self.size = (width, height)
        if self.records is None:
            readers = {"coco": read_coco, "voc": read_voc}
            a = self.args
            self.records, self.report = readers[self.format](a["annotations"], a["images"], self.classes,
                                                             a["class_map"], a["strict"], a["keep_empty"])
            if not self.records:
                raise UserError(f"dataset.source.annotations={a['annotations']}: no images left after the class map")

    def __len__(self) -> int:
        return len(self.records)

    def labels(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.records[i].labels)

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        r = self.records[i]
        width, height = self.size
        try:
            with Image.open(r.file) as im:
                im = im.convert("RGB")
                if im.size != (r.width, r.height):
                    raise UserError(f"{r.file}: image is {im.size[0]}x{im.size[1]} but its annotation "
                                     f"says {r.width}x{r.height}")
                im = im.resize((width, height), Image.BILINEAR)
        except OSError as err:
            raise UserError(f"{r.file}: cannot read the image ({err})") from err
        image = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)
        scale = torch.tensor([width / r.width, height / r.height] * 2, dtype=torch.float32)
        return image, {"boxes": torch.from_numpy(r.boxes) * scale, "labels": torch.from_numpy(r.labels)}


class DetectionItems(Dataset):
    def __init__(self, source, ids: Sequence[int]):
        self.source = source
        self.ids = np.asarray(ids, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        row = int(self.ids[i])
        image, target = self.source.load(row)
        return image, target, row


def collate(items):
    images, targets, ids = zip(*items)
    return torch.stack(images), list(targets), torch.as_tensor(ids, dtype=torch.int64)


def majority_class(labels: torch.Tensor, empty: int = -1) -> int:
    """The most frequent class of one image (the lowest index on ties); ``empty`` when none."""
    if labels.numel() == 0:
        return empty
    return int(torch.bincount(labels).argmax())


class DetectionDataModule(LabelledSetDataModule):
    """Pool / val / test ids over one detection source, fixed by ``split_seed``."""

    def __init__(self, name: str, source, sizes: dict, image_size: Sequence[int] = (256, 144),
                 split_seed: int = 0, batch_size: int = 8, eval_batch_size: int = 32, num_workers: int = 0,
                 pin_memory: bool = False):
        super().__init__()
        if len(image_size) != 2 or not all(int(v) >= 16 for v in image_size):
            raise UserError(f"dataset.image_size={list(image_size)!r} must be [width, height], each >= 16")
        self.name = name
        self.source = source
        self.sizes = dict(sizes)
        self.width, self.height = (int(v) for v in image_size)
        self.split_seed = int(split_seed)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size)
        self.num_workers, self.pin_memory = int(num_workers), bool(pin_memory)
        self.splits: dict[str, np.ndarray] | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.source.prepare(self.width, self.height)
        n = len(self.source)
        val, test = int(self.sizes["val"]), int(self.sizes["test"])
        pool = self.sizes.get("pool")
        pool = n - val - test if pool is None else int(pool)
        if pool < 0 or val + test + pool > n:
            raise UserError(f"dataset.sizes: pool {pool} + val {val} + test {test} exceeds the {n} images of "
                             f"{self.source.describe()}")
        order = np.random.default_rng(self.split_seed).permutation(n)
        self.splits = {"val": np.sort(order[:val]), "test": np.sort(order[val:val + test]),
                       "pool": np.sort(order[val + test:val + test + pool])}

    @property
    def num_classes(self) -> int:
        return len(self.source.classes)

    @property
    def class_names(self) -> list[str]:
        return list(self.source.classes)

    @property
    def channels(self) -> int:
        return 3

    @property
    def pool_ids(self) -> np.ndarray:
        self.setup()
        return self.splits["pool"]

    def labels_of(self, ids: Sequence[int]) -> np.ndarray:
        """One class per image for class diversity on ground truth: its most frequent true class."""
        self.setup()
        return np.asarray([majority_class(self.source.labels(int(i))) for i in ids], dtype=np.int64)

    def _loader(self, ids, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(DetectionItems(self.source, ids), batch_size=batch_size, sampler=sampler, shuffle=False,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, collate_fn=collate)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits["val"], self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits["test"], self.eval_batch_size)

    def pool_dataloader(self, ids: Sequence[int]) -> DataLoader:
        self.setup()
        return self._loader(ids, self.eval_batch_size)
