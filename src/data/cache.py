"""Decode-once image cache: JPEG/PNG files -> one memory-mapped uint8 array on disk.

Decoding and resizing a JPEG costs far more CPU than a training step needs from
it, and the active-learning loop touches the same images in every epoch of every
round of every run. So each image of a source is decoded and resized once, at a
given resolution, into ``<cache_dir>/<name>-<size>px-<digest>/images.u8`` (a raw
[N, 3, S, S] uint8 array opened with ``np.memmap``): only the rows a recipe
indexes are ever read into memory.

The digest covers everything the pixels depend on: the file list (relative path,
byte size, modification time), the labels, the resolution and the decoding
version. A changed, added or removed file gives a new digest; stale caches of the
same source and resolution are deleted then. A cache is written under a temporary
name and renamed when complete, so an interrupted build is never read.

Corruptions (Noisy/Hard) are not cached: they are a deterministic function of
(seed, item id) applied to the ~10k rows a recipe selects, seconds of work, and
caching them would multiply the disk use by every corruption setting tried.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from src.errors import UserError

log = logging.getLogger(__name__)

# Bump when decoding changes, so old caches are not reused with new semantics.
DECODE_VERSION = 1
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


class UnreadableImage(UserError):
    """An image file that cannot be decoded (truncated, not an image, unreadable)."""


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def decode_image(path: str | Path, image_size: int, resize_size: int | None = None) -> np.ndarray:
    """uint8 [3, S, S]: RGB, shorter side resized to ``resize_size`` (bilinear, antialiased),
    centre crop of ``image_size``. This is torchvision's ImageNet evaluation transform
    (resize 256, crop 224) when ``resize_size=256, image_size=224``."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")          # forces the full decode: a truncated file raises here
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UnreadableImage(f"cannot read image {path}: {err}") from err
    im = TF.resize(im, resize_size or image_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    im = TF.center_crop(im, image_size)
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


@dataclass
class CachedImages:
    images: np.ndarray      # uint8 memmap [N_kept, 3, S, S]
    kept: np.ndarray        # int64 [N_kept]: positions in the input file list
    skipped: list[str]      # files that could not be decoded (only with skip_corrupt)
    path: Path
    built: bool             # True when this call decoded the files, False when it reused a cache


def _digest(name: str, root: Path, files: list[Path], labels: np.ndarray, image_size: int,
            resize_size: int | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([DECODE_VERSION, name, int(image_size), resize_size]).encode())
    for path, label in zip(files, labels.tolist()):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{label}\n".encode())
    return h.hexdigest()[:20]


def cached_images(name: str, root: str | Path, files: list[Path], labels: np.ndarray, image_size: int,
                  cache_dir: str | Path, resize_size: int | None = None, skip_corrupt: bool = False,
                  workers: int | None = None) -> CachedImages:
    """The decoded images of ``files`` (under ``root``), from the cache or decoded into it now.

    A file that cannot be decoded raises ``UnreadableImage`` naming it; with
    ``skip_corrupt`` it is left out instead and listed in ``skipped``.
    """
    root = Path(root)
    cache_dir = Path(cache_dir)
    prefix = f"{name}-{int(image_size)}px-"
    final = cache_dir / (prefix + _digest(name, root, files, labels, image_size, resize_size))
    if not (final / "meta.json").exists():
        _build(final, root, files, image_size, resize_size, skip_corrupt, workers)
        for stale in cache_dir.glob(prefix + "*"):   # same source and resolution, older inputs
            if stale != final and not stale.name.endswith(".tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        built = True
    else:
        built = False
    meta = json.loads((final / "meta.json").read_text())
    skipped = meta["skipped"]
    if skipped and not skip_corrupt:
        # the cache was built with skip_corrupt=true; without it a bad file is still an error
        raise UnreadableImage(f"cannot read image {root / skipped[0]} ({len(skipped)} unreadable file(s) in "
                              f"{root}); remove or replace it, or pass dataset.skip_corrupt=true")
    if skipped:
        log.warning("%s: skipped %d unreadable image(s) (dataset.skip_corrupt=true), e.g. %s",
                    name, len(skipped), skipped[0])
    kept = np.load(final / "kept.npy")
    s = int(image_size)
    images = (np.memmap(final / "images.u8", dtype=np.uint8, mode="r", shape=(len(kept), 3, s, s))
              if len(kept) else np.zeros((0, 3, s, s), dtype=np.uint8))
    return CachedImages(images, kept, [str(root / p) for p in skipped], final, built)


def _build(final: Path, root: Path, files: list[Path], image_size: int, resize_size: int | None,
           skip_corrupt: bool, workers: int | None) -> None:
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    s = int(image_size)
    n = len(files)
    out = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(max(n, 1), 3, s, s))
    ok = np.zeros(n, dtype=bool)
    bad: list[int] = []

    def work(i: int):
        try:
            out[i] = decode_image(files[i], s, resize_size)
            return i, None
        except UnreadableImage as err:
            return i, err

    log.info("decoding %d images at %dpx into %s (once; later runs reuse it)", n, s, final)
    # PIL releases the GIL while decoding and resizing, so threads use several cores.
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        try:
            for i, err in pool.map(work, range(n)):
                if err is None:
                    ok[i] = True
                elif skip_corrupt:
                    bad.append(i)
                else:
                    raise err
        except UnreadableImage:
            pool.shutdown(cancel_futures=True)
            del out
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    kept = np.flatnonzero(ok)
    if len(kept) < n:   # compact the good rows to the front: the memmap is read as [N_kept, ...]
        for j, i in enumerate(kept):
            if i != j:
                out[j] = out[i]
    out.flush()
    del out
    np.save(tmp / "kept.npy", kept.astype(np.int64))
    (tmp / "meta.json").write_text(json.dumps({
        "version": DECODE_VERSION, "n_files": n, "n_kept": int(len(kept)), "image_size": s,
        "resize_size": resize_size, "skipped": [files[i].relative_to(root).as_posix() for i in bad]}))
    try:
        os.replace(tmp, final)
    except OSError:
        # another process (a parallel multirun job) finished the same cache first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "meta.json").exists():
            raise
