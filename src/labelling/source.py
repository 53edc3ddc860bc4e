"""Labels from Label Studio as a classification data source: ``dataset=labelstudio``.

The labelled images of one or more Label Studio JSON exports (the rounds of a
labelling campaign, oldest first) are merged with ``merge_labels`` (an image
labelled again keeps its latest label) and decoded once into the shared image cache,
like a folder tree. Images are named relative to ``document_root`` in the exports
and must lie in ``pool_root`` (see ``labelstudio.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.data.cache import cached_images
from src.data.labelstudio import LOCAL_FILES_PREFIX, lexical_abspath, merge_labels, read_export
from src.data.sources import Source, SourceData
from src.errors import UserError

log = logging.getLogger(__name__)


class LabelStudioSource(Source):
    """The images labelled in Label Studio exports, with their classes."""

    name = "labelstudio"

    def __init__(
        self,
        exports: str | Sequence[str],
        classes: Sequence[str],
        document_root: str | Path,
        pool_root: str | Path | None = None,
        image_prefix: str = LOCAL_FILES_PREFIX,
        image_size: int = 64,
        resize_size: int | None = None,
        cache_dir: str | Path | None = None,
        skip_corrupt: bool = False,
        workers: int | None = None,
    ):
        self.exports = [
            Path(str(e)).expanduser() for e in ([exports] if isinstance(exports, (str, Path)) else exports)
        ]
        if not self.exports:
            raise UserError("dataset.exports: empty; name the Label Studio JSON export(s), oldest first")
        if not classes:
            raise UserError("dataset.classes: empty; list the classes of the model, in label order")
        self.classes = [str(c) for c in classes]
        if not document_root:
            raise UserError(
                "dataset.document_root: not set; the LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT of the "
                "Label Studio server the tasks were imported into"
            )
        self.document_root = Path(str(document_root)).expanduser()
        self.pool_root = Path(str(pool_root)).expanduser() if pool_root else self.document_root
        self.image_prefix = image_prefix
        self.image_size, self.resize_size = int(image_size), (int(resize_size) if resize_size else None)
        self.cache_dir = (
            Path(str(cache_dir)).expanduser() if cache_dir else Path.home() / ".cache" / "al-select"
        )
        self.skip_corrupt, self.workers = bool(skip_corrupt), workers

    def labelled(self) -> list:
        """The merged ``ClassLabel``s of all exports, before any image is decoded."""
        items: list = []
        for export in self.exports:
            new, report = read_export(
                export, "classification", self.classes, self.document_root, self.pool_root, self.image_prefix
            )
            log.info(report.summary(str(export)))
            items = merge_labels(items, new)
        if not items:
            raise UserError(
                f"dataset.exports={[str(e) for e in self.exports]}: no labelled image in them yet"
            )
        return items

    def _load(self) -> SourceData:
        items = self.labelled()
        files = [i.file for i in items]
        labels = np.asarray([i.label for i in items], dtype=np.int64)
        root = lexical_abspath(self.pool_root)  # the files' own spelling: the cache names them relative to it
        cached = cached_images(
            root,
            files,
            self.image_size,
            self.cache_dir,
            resize_size=self.resize_size,
            skip_corrupt=self.skip_corrupt,
            workers=self.workers,
        )
        if len(cached.kept) == 0:
            raise UserError(f"dataset.exports: none of the {len(files)} labelled images could be read")
        return SourceData(self.name, cached.images, labels[cached.kept], self.classes)


def labelstudio_datamodule(
    exports,
    classes,
    document_root,
    pool_root=None,
    image_prefix=LOCAL_FILES_PREFIX,
    image_size: int = 64,
    resize_size: int | None = None,
    cache_dir: str | None = None,
    skip_corrupt: bool = False,
    workers: int | None = None,
    **datamodule_kwargs,
):
    """An ActiveDataModule over the images labelled in Label Studio (the ``dataset=labelstudio`` option)."""
    from src.data.datamodule import ActiveDataModule

    datamodule_kwargs.pop("sources", None)
    source = LabelStudioSource(
        exports,
        classes,
        document_root,
        pool_root,
        image_prefix,
        image_size=image_size,
        resize_size=resize_size,
        cache_dir=cache_dir,
        skip_corrupt=skip_corrupt,
        workers=workers,
    )
    return ActiveDataModule(
        sources=[source], image_size=image_size, channels=3, skip_corrupt=skip_corrupt, **datamodule_kwargs
    )
