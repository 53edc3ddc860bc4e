"""Decode-once image cache: image files -> one memory-mapped uint8 array on disk.

Decoding and resizing a JPEG costs far more CPU than a training step needs from
it, and the active-learning loop touches the same images in every epoch of every
round of every run. So each image of a source is decoded and resized once into
``<cache_dir>/<root name>-<owner digest>-<content digest>/images.u8`` (a raw
[N, C, H, W] uint8 array opened with ``np.memmap``): only the rows a reader
indexes are ever read into memory. Classification folders (centre crop) and
detection annotation files (stretched to the model's width x height) share it.

A cache is keyed by what determines its bytes, never by a display name:

* the owner digest: the resolved image root, what owns the file list there (the
  root itself, or the resolved annotation file), the decoder and its settings
  (resolution, resize), the decoded shape (channels first: grey and RGB caches of
  one root are separate) and the decoding version;
* the content digest: every file's path relative to the root, byte size and
  modification time, plus what the owner declares per file (a detection image's
  annotated size).

A changed, added or removed file gives a new content digest; the stale cache of
the same owner (and only that one) is deleted then, so two roots, two annotation
files or two resolutions never evict each other. A cache is written under a
temporary name and renamed when complete, so an interrupted build is never read.

Within ``reuse_only()`` a cache is read where it exists and never written: a missing one
raises ``CacheMiss`` (the report reads a run's own cache, and writes only where its user said).

Corruptions (Noisy/Hard) are not cached: they are a deterministic function of
(seed, item id) applied to the ~10k rows a recipe selects, seconds of work, and
caching them would multiply the disk use by every corruption setting tried.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from src.errors import UserError

log = logging.getLogger(__name__)

# Bump when decoding changes, so old caches are not reused with new semantics.
DECODE_VERSION = 1
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"})


class UnreadableImage(UserError):
    """An image file that cannot be decoded (truncated, not an image, unreadable)."""


class CacheMiss(Exception):
    """Within ``reuse_only()``: the cache a source needs is not there, and is not to be written."""


_REUSE_ONLY: ContextVar[bool] = ContextVar("reuse_only", default=False)


@contextlib.contextmanager
def reuse_only():
    """Caches are read where they exist and nothing is written (no build, no stale cache removed);
    a cache that would have to be built raises ``CacheMiss`` instead."""
    token = _REUSE_ONLY.set(True)
    try:
        yield
    finally:
        _REUSE_ONLY.reset(token)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


# Decoded channel count -> the PIL mode a file is converted to before resizing.
CHANNEL_MODES = {1: "L", 3: "RGB"}


def decode_image(
    path: str | Path, image_size: int, resize_size: int | None = None, channels: int = 3
) -> np.ndarray:
    """uint8 [C, S, S]: RGB (``channels=3``) or PIL's grey "L" (``channels=1``), shorter side
    resized to ``resize_size`` (bilinear, antialiased), centre crop of ``image_size``. This is
    torchvision's ImageNet evaluation transform (resize 256, crop 224) when
    ``resize_size=256, image_size=224``."""
    from PIL import Image
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    try:
        with Image.open(path) as im:
            im = im.convert(CHANNEL_MODES[channels])  # forces the full decode: a truncated file raises here
    except (OSError, SyntaxError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise UnreadableImage(f"cannot read image {path}: {err}") from err
    im = TF.resize(im, resize_size or image_size, interpolation=InterpolationMode.BILINEAR, antialias=True)
    im = TF.center_crop(im, image_size)
    return np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], channels).transpose(2, 0, 1)


def decode_stretched(
    path: str | Path, width: int, height: int, expect_size: tuple[int, int] | None = None
) -> np.ndarray:
    """uint8 [3, height, width]: RGB resized to exactly width x height (PIL bilinear), the
    aspect ratio not kept: detection boxes are scaled by the same two factors.
    ``expect_size`` (width, height) is the size the annotation declares for the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:
        raise UnreadableImage(f"cannot read image {path}: {err}") from err
    if expect_size is not None and im.size != tuple(expect_size):
        raise UnreadableImage(
            f"{path}: image is {im.size[0]}x{im.size[1]} but its annotation says "
            f"{expect_size[0]}x{expect_size[1]}"
        )
    return np.ascontiguousarray(
        np.asarray(im.resize((int(width), int(height)), Image.BILINEAR)).transpose(2, 0, 1)
    )


@dataclass
class CachedImages:
    images: np.ndarray  # uint8 memmap [N_kept, C, H, W]
    kept: np.ndarray  # int64 [N_kept]: positions in the input file list
    skipped: list[str]  # files that could not be decoded (only with skip_corrupt)
    path: Path
    built: bool  # True when this call decoded the files, False when it reused a cache


@dataclass
class CacheKey:
    """Everything but the files themselves that decides a cache's bytes (see the module doc)."""

    root: Path  # the folder the files are relative to
    owner: str  # what owns the file list: the resolved root, or an annotation file
    settings: dict  # decoder name and its settings (JSON-serialisable)
    shape: tuple[int, int, int]  # one decoded image: channels, height, width
    per_file: list[str] | None = field(default=None)  # what the owner declares per file, if anything

    def owner_digest(self) -> str:
        h = hashlib.sha256(
            json.dumps(
                [DECODE_VERSION, str(self.root.resolve()), self.owner, self.settings, list(self.shape)],
                sort_keys=True,
            ).encode()
        )
        return h.hexdigest()[:12]

    def content_digest(self, files: list[Path]) -> str:
        h = hashlib.sha256()
        extra = self.per_file if self.per_file is not None else [""] * len(files)
        for path, declared in zip(files, extra):
            st = path.stat()
            h.update(
                f"{path.relative_to(self.root).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\0{declared}\n".encode()
            )
        return h.hexdigest()[:20]


def cached_images(
    root: str | Path,
    files: list[Path],
    image_size: int,
    cache_dir: str | Path,
    resize_size: int | None = None,
    skip_corrupt: bool = False,
    workers: int | None = None,
    channels: int = 3,
) -> CachedImages:
    """The centre-cropped [C, S, S] images of ``files`` (under ``root``), from the cache or decoded now:
    C = ``channels``, 3 for RGB or 1 for grey.

    A file that cannot be decoded raises ``UnreadableImage`` naming it; with
    ``skip_corrupt`` it is left out instead and listed in ``skipped``.
    """
    s, resize, c = int(image_size), (int(resize_size) if resize_size else None), int(channels)
    if c not in CHANNEL_MODES:
        raise UserError(f"dataset.channels={channels!r}; allowed: 1 (grey) or 3 (RGB)")
    # The channel count is in the key through the shape (part of the owner digest), so a grey
    # and an RGB cache of one root are two caches and neither evicts the other; the settings
    # stay as they were so that the RGB caches built before grey decoding existed are reused.
    key = CacheKey(
        Path(root),
        str(Path(root).resolve()),
        {"decoder": "centre_crop", "image_size": s, "resize_size": resize},
        (c, s, s),
    )
    return decode_cached(
        key,
        files,
        lambda path: decode_image(path, s, resize, c),
        cache_dir,
        skip_corrupt=skip_corrupt,
        workers=workers,
    )


def decode_cached(
    key: CacheKey,
    files: list[Path],
    decode: Callable[[Path], np.ndarray],
    cache_dir: str | Path,
    skip_corrupt: bool = False,
    workers: int | None = None,
) -> CachedImages:
    """``decode(file)`` of every file (uint8 of ``key.shape``), from the cache or decoded into it now.

    ``decode`` raises ``UnreadableImage`` for a bad file: an error, or with
    ``skip_corrupt`` the file is left out and listed in ``skipped``.
    """
    cache_dir = Path(cache_dir)
    prefix = f"{key.root.resolve().name or 'root'}-{key.owner_digest()}-"
    final = cache_dir / (prefix + key.content_digest(files))
    built = not (final / "meta.json").exists()
    if built and _REUSE_ONLY.get():
        raise CacheMiss(f"{final}: not cached")
    if built:
        _build(final, key, files, decode, skip_corrupt, workers)
        for stale in cache_dir.glob(prefix + "*"):  # the same owner and settings, older files
            if stale != final and not stale.name.endswith(".tmp"):
                shutil.rmtree(stale, ignore_errors=True)
    meta = json.loads((final / "meta.json").read_text())
    if meta.get("shape") != list(key.shape):
        # only a folder copied or renamed by hand gets here (the shape is in the digest): its bytes
        # read in another shape, a grey cache as RGB say, would be silently wrong images
        raise UserError(
            f"decode cache {final} holds images of shape {meta.get('shape')}, not {list(key.shape)}; "
            "delete that folder and it is rebuilt"
        )
    skipped = meta["skipped"]
    if skipped and not skip_corrupt:
        # the cache was built with skip_corrupt=true; without it a bad file is still an error
        raise UnreadableImage(
            f"cannot read image {key.root / skipped[0]} ({len(skipped)} unreadable file(s) in "
            f"{key.root}); remove or replace it, or pass dataset.skip_corrupt=true"
        )
    if skipped:
        log.warning(
            "%s: skipped %d unreadable image(s) (dataset.skip_corrupt=true), e.g. %s",
            key.root,
            len(skipped),
            skipped[0],
        )
    kept = np.load(final / "kept.npy")
    images = (
        np.memmap(final / "images.u8", dtype=np.uint8, mode="r", shape=(len(kept),) + tuple(key.shape))
        if len(kept)
        else np.zeros((0,) + tuple(key.shape), dtype=np.uint8)
    )
    return CachedImages(images, kept, [str(key.root / p) for p in skipped], final, built)


def _build(
    final: Path,
    key: CacheKey,
    files: list[Path],
    decode: Callable[[Path], np.ndarray],
    skip_corrupt: bool,
    workers: int | None,
) -> None:
    tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n = len(files)
    out = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(max(n, 1),) + tuple(key.shape))
    ok = np.zeros(n, dtype=bool)
    bad: list[int] = []

    def work(i: int):
        try:
            out[i] = decode(files[i])  # noqa: F821 (ruff reads the except branch's del as unbinding it here)
            return i, None
        except UnreadableImage as err:
            return i, err

    log.info(
        "decoding %d images at %dx%d px into %s (once; later runs reuse it)",
        n,
        key.shape[2],
        key.shape[1],
        final,
    )
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
        except BaseException:  # an unreadable file, or a bug in decode: no half-written cache is left
            pool.shutdown(cancel_futures=True)
            del out
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    kept = np.flatnonzero(ok)
    if len(kept) < n:  # compact the good rows to the front: the memmap is read as [N_kept, ...]
        for j, i in enumerate(kept):
            if i != j:
                out[j] = out[i]
    out.flush()
    del out
    np.save(tmp / "kept.npy", kept.astype(np.int64))
    (tmp / "meta.json").write_text(
        json.dumps(
            {
                "version": DECODE_VERSION,
                "n_files": n,
                "n_kept": int(len(kept)),
                "owner": key.owner,
                "settings": key.settings,
                "shape": list(key.shape),
                "skipped": [files[i].relative_to(key.root).as_posix() for i in bad],
            }
        )
    )
    try:
        os.replace(tmp, final)
    except OSError:
        # another process (a parallel multirun job) finished the same cache first: use theirs
        shutil.rmtree(tmp, ignore_errors=True)
        if not (final / "meta.json").exists():
            raise
