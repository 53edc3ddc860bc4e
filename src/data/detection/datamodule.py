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
import os
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from src.data.cache import CacheKey, decode_cached, decode_stretched
from src.data.datamodule import LabelledSetDataModule
from src.data.detection.annotations import ImageRecord, ReadReport, read_coco, read_voc
from src.data.detection.scenes import CLASSES as SCENE_CLASSES
from src.data.detection.scenes import class_indices, render_scene
from src.data.detection.yolo import read_yolo
from src.data.recipes import DEFAULT_HELD_OUT, split_rows
from src.data.samplers import eval_sampler
from src.errors import UserError

log = logging.getLogger(__name__)


# Scene i of a source with seed s is scene number s * SCENE_SEED_STRIDE + i: a prime stride
# far above any source size, so sources with nearby seeds never share a scene.
SCENE_SEED_STRIDE = 1_000_003


class SceneSource:
    """``n`` embedded surveillance scenes of one style, rendered once at the datamodule's size."""

    splits = None  # the datamodule draws every split
    report = None  # no annotation files read

    def __init__(
        self, n: int = 400, style: str = "street", seed: int = 0, max_objects: int = 8, **scene_options
    ):
        if int(n) < 1:
            raise UserError(f"dataset.source.n={n!r} must be a positive integer")
        self.n, self.style, self.seed, self.max_objects = int(n), str(style), int(seed), int(max_objects)
        # classes / min_scale / size_factor of render_scene; the labels index the kept classes
        self.scene_options = scene_options
        self.classes = [SCENE_CLASSES[k] for k in class_indices(scene_options.get("classes"))]
        self._cache: tuple | None = None

    def describe(self) -> str:
        return f"scenes[{self.style}, n={self.n}, seed={self.seed}]"

    def prepare(self, width: int, height: int) -> None:
        if self._cache is not None and self._cache[0] == (width, height):
            return
        images = torch.empty(self.n, 3, height, width, dtype=torch.uint8)
        targets = []
        for i in range(self.n):
            scene = render_scene(
                self.seed * SCENE_SEED_STRIDE + i,
                self.style,
                width,
                height,
                self.max_objects,
                **self.scene_options,
            )
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


FORMATS = ("coco", "voc", "yolo", "labelstudio")


class FileSource:
    """Images and boxes of a COCO JSON file, a VOC folder, a YOLO tree or Label Studio exports.

    ``labelstudio``: ``annotations`` names the JSON exports of a labelling campaign (one or a
    list, oldest first; an image labelled again keeps its latest box set,
    ``data.labelstudio.merge_labels``), ``images`` the pool folder every labelled image
    must lie in, ``document_root`` the Label Studio server's local-files root the tasks name
    images by; ``classes`` are required (the model's, in label order).

    The images are decoded once, at the datamodule's width x height, into the shared
    decode cache (``src/data/cache.py``) under ``cache_dir``; the boxes are scaled by
    the same factors when the annotations are read (every run reads them: they are
    cheap, and so can never be stale). ``cache_dir`` None decodes every image on every
    access instead (the slow path, kept for the benchmark).
    """

    def __init__(
        self,
        format: str,
        annotations: str | None = None,
        images: str | None = None,
        classes: Sequence[str] | None = None,
        class_map: dict | None = None,
        strict: bool = False,
        keep_empty: bool = True,
        root: str | None = None,
        cache_dir: str | None = None,
        workers: int | None = None,
        document_root: str | None = None,
        image_prefix: str = "/data/local-files/?d=",
    ):
        if format not in FORMATS:
            raise UserError(f"dataset.source.format={format!r}; allowed: {', '.join(FORMATS)}")
        if format == "yolo" and not root:
            raise UserError("dataset.source.root must be set: the YOLO folder that holds data.yaml")
        if format == "labelstudio":
            annotations = [
                str(a) for a in ([annotations] if isinstance(annotations, str) else annotations or [])
            ]
            if not annotations:
                raise UserError(
                    "dataset.source.annotations: empty; name the Label Studio JSON export(s), oldest first"
                )
            if not document_root:
                raise UserError(
                    "dataset.source.document_root: not set; the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT of "
                    "the Label Studio server the tasks were imported into"
                )
            if not classes:
                raise UserError(
                    "dataset.source.classes: empty; list the model's classes, in label order (a Label "
                    "Studio export is read against them)"
                )
            images = images or document_root
        elif format != "yolo" and (not annotations or not images):
            raise UserError(
                "dataset.source.annotations and dataset.source.images must both be set "
                f"(the {format} annotations and the image folder)"
            )
        self.format = format
        self.args = dict(
            annotations=annotations,
            images=images,
            root=root,
            class_map=class_map,
            strict=strict,
            keep_empty=keep_empty,
            document_root=document_root,
            image_prefix=image_prefix,
        )
        self.classes = None if classes is None else [str(c) for c in classes]
        self.cache_dir, self.workers = cache_dir, workers
        self.records: list[ImageRecord] | None = None
        self.report: ReadReport | None = None
        self.splits: np.ndarray | None = None
        self.size: tuple[int, int] | None = None
        self.images: np.ndarray | None = (
            None  # uint8 [N, 3, H, W] from the cache, or None (decode per access)
        )
        self.targets: list[dict] = []

    def describe(self) -> str:
        where = self.args["root"] if self.format == "yolo" else self.args["annotations"]
        return f"{self.format}[{', '.join(where) if isinstance(where, list) else where}]"

    def read(self) -> None:
        """Read the annotations (once): errors surface in the datamodule's setup, before training."""
        if self.records is not None:
            return
        a = self.args
        if self.format == "yolo":
            self.records, self.report, self.classes = read_yolo(
                a["root"], self.classes, a["class_map"], a["strict"], a["keep_empty"]
            )
        elif self.format == "labelstudio":
            self.records = self._labelled_in_label_studio()
        else:
            reader = read_coco if self.format == "coco" else read_voc
            self.records, self.report, self.classes = reader(
                a["annotations"], a["images"], self.classes, a["class_map"], a["strict"], a["keep_empty"]
            )
        if not self.records:
            raise UserError(
                f"{self.describe()}: no images left after the class map (dataset.source.keep_empty="
                "true keeps images without boxes)"
            )
        if self.format == "yolo":
            self.splits = np.asarray([r.split for r in self.records])

    def _labelled_in_label_studio(self) -> list[ImageRecord]:
        from src.data.labelstudio import merge_labels, read_export

        a, records = self.args, []
        for export in a["annotations"]:
            new, report = read_export(
                Path(export).expanduser(),
                "detection",
                self.classes,
                Path(str(a["document_root"])).expanduser(),
                Path(str(a["images"])).expanduser(),
                a["image_prefix"],
            )
            log.info(report.summary(export))
            records = merge_labels(records, new)
        return records

    def prepare(self, width: int, height: int) -> None:
        self.read()
        if self.size == (width, height):
            return
        self.size = (width, height)
        self.targets = []
        for r in self.records:
            scale = torch.tensor([width / r.width, height / r.height] * 2, dtype=torch.float32)
            self.targets.append(
                {"boxes": torch.from_numpy(r.boxes) * scale, "labels": torch.from_numpy(r.labels)}
            )
        self.images = None if self.cache_dir is None else self._cached(width, height)

    def _cached(self, width: int, height: int) -> np.ndarray:
        a = self.args
        root = Path(
            os.path.abspath(os.path.expanduser(str(a["root"] if self.format == "yolo" else a["images"])))
        )
        if self.format == "labelstudio":
            owner = ",".join(str(Path(e).expanduser().resolve()) for e in a["annotations"])
        else:
            owner = str(
                (
                    (root / "data.yaml")
                    if self.format == "yolo"
                    else Path(str(a["annotations"])).expanduser()
                ).resolve()
            )
        key = CacheKey(
            root,
            owner,
            {"decoder": "stretched", "width": width, "height": height},
            (3, height, width),
            per_file=[f"{r.width}x{r.height}" for r in self.records],
        )
        declared = {r.file: (r.width, r.height) for r in self.records}

        def decode(file: Path) -> np.ndarray:
            return decode_stretched(file, width, height, declared[file])

        return decode_cached(
            key,
            [r.file for r in self.records],
            decode,
            Path(str(self.cache_dir)).expanduser(),
            workers=self.workers,
        ).images

    def __len__(self) -> int:
        return len(self.records)

    def labels(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.records[i].labels)

    def load(self, i: int) -> tuple[torch.Tensor, dict]:
        if self.images is not None:
            return torch.from_numpy(np.array(self.images[i])), self.targets[i]
        r = self.records[i]
        return torch.from_numpy(decode_stretched(r.file, *self.size, (r.width, r.height))), self.targets[i]


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


def sizes_exceed(n: int, pool: int | None, val: int, test: int, what: str) -> str:
    """One line for split sizes that ask more than the ``n`` images hold (``pool`` None: the rest),
    naming the ``dataset.sizes`` keys to set with values that fit; never a negative size."""
    asked = f"val {val} + test {test}" if pool is None else f"pool {pool} + val {val} + test {test}"
    head = (
        f"dataset.sizes: {asked} = {val + test + (pool or 0)} exceeds the {n} images of {what}"
        f"{', leaving no pool' if pool is None else ''}"
    )
    if n < 3:
        return f"{head}; a detection run needs at least 3 images (one each for pool, val and test)"
    if val + test < n:  # val and test fit: only the pool is too large
        fit = {"val": val, "test": test}
    else:  # as a null val / test would take: DEFAULT_HELD_OUT each
        held_out = max(1, int(round(DEFAULT_HELD_OUT * n)))
        fit = {"val": min(val, held_out), "test": min(test, held_out)}
    rest = n - fit["val"] - fit["test"]
    if pool is not None:
        fit["pool"] = min(pool, rest)
    wanted = {"val": val, "test": test, "pool": pool}
    keys = " ".join(f"dataset.sizes.{k}={v}" for k, v in fit.items() if v != wanted[k])
    rest_note = (
        f"pool null takes the other {rest}"
        if pool is None
        else f"or dataset.sizes.pool=null: the other {rest}"
    )
    return f"{head}; set {keys} ({rest_note}), or other sizes adding up to at most {n}"


class DetectionDataModule(LabelledSetDataModule):
    """Pool / val / test ids over one detection source, fixed by ``split_seed``."""

    def __init__(
        self,
        name: str,
        source,
        sizes: dict,
        image_size: Sequence[int] = (256, 144),
        split_seed: int = 0,
        batch_size: int = 8,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
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
        self.splits = self._presplit() if self.source.splits is not None else self._drawn_splits()
        self._check_boxes_in_every_split()

    def _drawn_splits(self) -> dict[str, np.ndarray]:
        n = len(self.source)
        held_out = max(1, int(round(DEFAULT_HELD_OUT * n)))  # a null val / test, as for classification
        val, test = (held_out if self.sizes.get(s) is None else int(self.sizes[s]) for s in ("val", "test"))
        pool = self.sizes.get("pool")
        pool = None if pool is None else int(pool)
        if val + test + (pool or 0) > n or (pool or 0) < 0:
            raise UserError(sizes_exceed(n, pool, val, test, self.source.describe()))
        pool = n - val - test if pool is None else pool
        order = np.random.default_rng(self.split_seed).permutation(n)
        return {
            "val": np.sort(order[:val]),
            "test": np.sort(order[val : val + test]),
            "pool": np.sort(order[val + test : val + test + pool]),
        }

    def _presplit(self) -> dict[str, np.ndarray]:
        """The source's own splits (a YOLO tree's train/val/test); ``dataset.sizes`` null takes a whole
        split, a number that many of it, a split the files lack is drawn from the train images:
        the rule of pre-split classification folders (``recipes.split_rows``)."""
        if not (self.source.splits == "pool").any():
            raise UserError(f"{self.source.describe()}: its train split holds no images")
        wanted = {
            s: (None if self.sizes.get(s) is None else int(self.sizes[s])) for s in ("pool", "val", "test")
        }
        shim = SimpleNamespace(
            name=self.source.describe(), labels=self.source.splits, splits=self.source.splits
        )
        return {split: np.sort(rows) for split, rows in split_rows(shim, 0, wanted, self.split_seed).items()}

    def _check_boxes_in_every_split(self) -> None:
        """Stop before training when a split has no box of the configured classes: an empty pool trains
        nothing, an empty val or test set gives no mAP (the rule: at least one box in each split)."""
        for split in ("pool", "val", "test"):
            ids = self.splits[split]
            if len(ids) and not any(len(self.source.labels(int(i))) for i in ids):
                report = self.source.report
                found = f"; the files name these classes (boxes): {report.found_names()}" if report else ""
                raise UserError(
                    f"{self.source.describe()}: none of the {len(ids)} {split} images has a box of "
                    f"dataset.source.classes={self.class_names}{found}; map them with "
                    "dataset.source.class_map or change dataset.sizes / the split files"
                )

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
        return DataLoader(
            DetectionItems(self.source, ids),
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            collate_fn=collate,
        )

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits["val"], self.eval_batch_size, eval_sampler(len(self.splits["val"])))

    def test_dataloader(self) -> DataLoader:
        self.setup()
        return self._loader(self.splits["test"], self.eval_batch_size, eval_sampler(len(self.splits["test"])))

    def pool_dataloader(self, ids: Sequence[int]) -> DataLoader:
        self.setup()
        return self._loader(ids, self.eval_batch_size)
