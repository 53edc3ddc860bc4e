"""Image sources read from folder trees: the base of the ImageNet sources and a user's own data.

A tree is one sub-folder per class holding image files (searched recursively),
optionally pre-split into ``train/``, ``val/``, ``test/`` sub-trees of that shape.
Images are decoded once into the on-disk cache (``cache.py``); the source hands
the recipe a memory-mapped array, so a recipe reads only the rows it uses.
Every layout problem is reported before anything is decoded, as one message that
names the path, the layout expected and where the data is published. A file that
leads outside the root (a symlink out of it, ``src/data/paths.py``) is skipped and
counted in the log, never read; a symlink whose target stays inside is read.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from src.data.cache import cached_images, is_image
from src.data.paths import skipped_note, split_inside
from src.data.sources import Source, SourceData
from src.errors import UserError

log = logging.getLogger(__name__)


# Names of pre-split sub-trees and the recipe split each one fills.
SPLIT_DIRS = {"train": "pool", "val": "val", "valid": "val", "validation": "val", "test": "test"}


def _subdirs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_under(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and is_image(p))


class ImageTreeSource(Source):
    """Images in class folders under ``root``; subclasses say how a folder name maps to a label."""

    title = "image folder"
    layout = "<root>/<class name>/<image>.jpg"
    published = ""  # where the data set can be downloaded
    root_key = "dataset.root"  # the config key that sets the root
    folder_kind = "class folder"  # what a sub-folder name must be, for messages

    def __init__(
        self,
        root: str | Path,
        image_size: int = 224,
        resize_size: int | None = None,
        cache_dir: str | Path | None = None,
        skip_corrupt: bool = False,
        workers: int | None = None,
        name: str | None = None,
        channels: int = 3,
    ):
        self.root = Path(str(root)).expanduser()
        self.channels = int(channels)  # 3: RGB, 1: grey ("L"); a recipe sets its own (decode_channels)
        self.image_size = int(image_size)
        self.resize_size = int(resize_size) if resize_size else None
        self.cache_dir = (
            Path(str(cache_dir)).expanduser() if cache_dir else Path.home() / ".cache" / "al-select"
        )
        self.skip_corrupt = bool(skip_corrupt)
        self.workers = workers
        if name:
            self.name = name

    # -- what subclasses define ----------------------------------------------------------
    def class_names(self, folders: list[str]) -> list[str]:
        raise NotImplementedError

    def label_of(self, folder: str) -> int | None:
        """The label of a class folder name, None when the name is not a known class."""
        raise NotImplementedError

    # -- messages ----------------------------------------------------------------------------
    def where_to_get(self) -> str:
        return f"; get it from {self.published}" if self.published else ""

    def layout_error(self, problem: str) -> UserError:
        return UserError(
            f"{self.title} {problem}: expected {self.layout.replace('<root>', str(self.root))}"
            f"{self.where_to_get()}; set {self.root_key}=<folder>"
        )

    # -- scanning ------------------------------------------------------------------------------
    def check_root(self) -> list[Path]:
        """The class folders of the root, after the layout checks."""
        if not self.root.exists():
            raise self.layout_error(f"not found at {self.root}")
        if not self.root.is_dir():
            raise self.layout_error(f"root {self.root} is not a folder")
        folders = _subdirs(self.root)
        if not folders:
            raise self.layout_error(f"root {self.root} has no class folders")
        return folders

    def _labelled_folders(
        self, parent: Path, folders: list[Path], names: list[str]
    ) -> list[tuple[Path, int]]:
        known = [(f, self.label_of(f.name)) for f in folders]
        unknown = [f for f, label in known if label is None]
        if unknown and len(unknown) == len(known):
            nested = [f.name for f in folders if (f / self.root.name).is_dir() or f.name == self.root.name]
            hint = f" (did you mean {parent / nested[0]}?)" if nested else ""
            raise self.layout_error(
                f"root {parent} is not laid out as expected: its folders "
                f"({', '.join(f.name for f in folders[:3])}{', ...' if len(folders) > 3 else ''}) "
                f"are not {self.folder_kind}s{hint}"
            )
        if unknown:
            raise UserError(
                f"class folder {unknown[0]} is not a known {self.folder_kind} of {self.title}"
                f"{f' ({len(unknown)} such folders)' if len(unknown) > 1 else ''}; "
                f"expected {self.layout.replace('<root>', str(self.root))}"
            )
        return known

    def scan(self) -> tuple[list[Path], np.ndarray, np.ndarray | None, list[str]]:
        """(files, labels, split per file or None, class names) of the tree, checked."""
        folders = self.check_root()
        split_dirs = [f for f in folders if f.name.lower() in SPLIT_DIRS]
        presplit = bool(split_dirs) and len(split_dirs) == len(folders)
        if presplit:
            trees = [(f, SPLIT_DIRS[f.name.lower()]) for f in folders]
            if "pool" not in {s for _, s in trees}:
                raise self.layout_error(f"root {self.root} is pre-split but has no train/ sub-tree")
            class_folders = {f: _subdirs(f) for f, _ in trees}
        else:
            trees = [(self.root, None)]
            class_folders = {self.root: folders}
        names = self.class_names(sorted({c.name for cs in class_folders.values() for c in cs}))
        if len(names) < 2:
            # torchmetrics would refuse later with a message about num_classes
            raise UserError(
                f"{self.title} at {self.root}: {len(names)} class found ({', '.join(names)}); "
                "classification needs at least 2 class folders"
            )
        files, labels, splits, left = [], [], [], []
        for tree, split in trees:
            if not class_folders[tree]:
                raise self.layout_error(f"split {tree} has no class folders")
            n_before = len(files)
            for folder, label in self._labelled_folders(tree, class_folders[tree], names):
                found, out = split_inside(_images_under(folder), self.root)
                left += out
                files += found
                labels += [label] * len(found)
                splits += [split] * len(found)
            if len(files) == n_before:
                where = f"split {split!r} ({tree})" if split else f"root {tree}"
                skipped = f" ({len(left)} symlinks leading outside {self.root} skipped)" if left else ""
                raise UserError(
                    f"{self.title}: {where} holds no images (.jpg, .jpeg, .png, ... files in its "
                    f"class folders){skipped}; expected {self.layout.replace('<root>', str(self.root))}"
                )
        if left:
            log.warning(f"{self.title} at {skipped_note(left, self.root)}")
        return files, np.asarray(labels, dtype=np.int64), (np.asarray(splits) if presplit else None), names

    def decode_channels(self, channels: int) -> None:
        # A grey recipe decodes grey files once into a 1-channel cache (a third of the disk and
        # reads) instead of RGB reduced to grey after resizing; before loading only (memoised).
        if not hasattr(self, "_cache"):
            self.channels = int(channels)

    def _load(self) -> SourceData:
        files, labels, splits, names = self.scan()
        cached = cached_images(
            self.root,
            files,
            self.image_size,
            self.cache_dir,
            resize_size=self.resize_size,
            skip_corrupt=self.skip_corrupt,
            workers=self.workers,
            channels=self.channels,
        )
        if len(cached.kept) == 0:
            raise UserError(f"{self.title} at {self.root}: no readable images")
        return SourceData(
            self.name,
            cached.images,
            labels[cached.kept],
            names,
            splits=None if splits is None else splits[cached.kept],
        )


class ImageFolderSource(ImageTreeSource):
    """A user's tree: ``<root>/<class>/*.jpg`` or ``<root>/{train,val,test}/<class>/*.jpg``.

    Classes are the sorted folder names found (over all sub-trees), or the list
    ``classes`` when given; a folder outside that list is an error then.
    """

    name = "folder"
    title = "image folder"
    layout = "<root>/<class>/<image>.jpg, or <root>/train|val|test/<class>/<image>.jpg"
    folder_kind = "class"

    def __init__(self, root, classes: list[str] | None = None, **kwargs):
        super().__init__(root, **kwargs)
        self.classes = [str(c) for c in classes] if classes else None
        self._index: dict[str, int] = {}

    def class_names(self, folders: list[str]) -> list[str]:
        names = self.classes or folders
        self._index = {c: i for i, c in enumerate(names)}
        return list(names)

    def label_of(self, folder: str) -> int | None:
        return self._index.get(folder)


def folder_datamodule(
    root: str,
    classes: list[str] | None = None,
    image_size: int = 64,
    resize_size: int | None = None,
    cache_dir: str | None = None,
    skip_corrupt: bool = False,
    workers: int | None = None,
    channels: int = 3,
    **datamodule_kwargs,
):
    """An ActiveDataModule over one user folder tree (the ``dataset=folder`` option), its images
    decoded as RGB (``channels=3``) or grey (``channels=1``, PIL's "L"); the model takes as many."""
    from src.data.datamodule import ActiveDataModule

    datamodule_kwargs.pop("sources", None)
    source = ImageFolderSource(
        root,
        classes=classes,
        image_size=image_size,
        resize_size=resize_size,
        cache_dir=cache_dir,
        skip_corrupt=skip_corrupt,
        workers=workers,
        channels=channels,
    )
    return ActiveDataModule(
        sources=[source],
        image_size=image_size,
        channels=channels,
        skip_corrupt=skip_corrupt,
        **datamodule_kwargs,
    )
