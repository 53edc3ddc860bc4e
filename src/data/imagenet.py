"""The thesis' ImageNet test sets (4.2.1) as sources: ImageNet-V2, ImageNet-R, ImageNet-A.

All three are labelled in the ImageNet-1k index space. The WordNet-id / index /
name tables come from the files that timm ships (``timm/data/_info``), read
directly so that using them does not import timm and its model zoo:

* ``imagenet_synsets.txt``: the 1000 wnids, line i = class index i;
* ``imagenet_synset_to_lemma.txt``: wnid -> human-readable class name.

On-disk layouts, as the publishers release them:

* ImageNet-V2 (matched frequency): ``imagenetv2-matched-frequency-format-val/<index>/*.jpeg``,
  1000 folders named ``0`` ... ``999``, 10 images each;
* ImageNet-R: ``imagenet-r/<wnid>/*.jpg``, 200 classes, 30,000 images;
* ImageNet-A: ``imagenet-a/<wnid>/*.jpg``, 200 classes, 7,500 images (a README.txt beside them is ignored).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

from src.data.folder import ImageTreeSource

WNID = re.compile(r"^n\d{8}$")


def _timm_info_dir() -> Path:
    spec = importlib.util.find_spec("timm")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the ImageNet class tables come from the timm package: pip install timm")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "_info"


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids; position = class index."""
    wnids = tuple((_timm_info_dir() / "imagenet_synsets.txt").read_text().split())
    if len(wnids) != 1000:
        raise RuntimeError(f"timm's imagenet_synsets.txt lists {len(wnids)} classes, not 1000")
    return wnids


@functools.lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """Class names by index (the first lemma of each synset, e.g. 'tench')."""
    lemmas = {}
    for line in (_timm_info_dir() / "imagenet_synset_to_lemma.txt").read_text().splitlines():
        wnid, _, lemma = line.partition("\t")
        lemmas[wnid.strip()] = lemma.split(",")[0].strip()
    return tuple(lemmas[w] for w in imagenet_wnids())


@functools.lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {w: i for i, w in enumerate(imagenet_wnids())}


class _ImageNetLabelled(ImageTreeSource):
    """A source labelled in the ImageNet-1k index space: class_names = all 1000 names."""

    def class_names(self, folders: list[str]) -> list[str]:
        return list(imagenet_class_names())


class ImageNetV2(_ImageNetLabelled):
    name = "imagenet_v2"
    title = "ImageNet-V2 (matched frequency)"
    layout = "<root>/<class index 0..999>/<image>.jpeg"
    published = (
        "https://github.com/modestyachts/ImageNetV2 (imagenetv2-matched-frequency.tar.gz; "
        "or python -m src.data.download imagenet-v2)"
    )
    root_key = "source.roots.imagenet_v2"
    folder_kind = "class index (0..999)"

    def label_of(self, folder: str) -> int | None:
        if folder.isdigit() and 0 <= int(folder) < 1000 and str(int(folder)) == folder:
            return int(folder)
        return None


class _WnidSource(_ImageNetLabelled):
    folder_kind = "ImageNet wnid (n########)"

    def label_of(self, folder: str) -> int | None:
        return wnid_to_index().get(folder) if WNID.match(folder) else None


class ImageNetR(_WnidSource):
    name = "imagenet_r"
    title = "ImageNet-R"
    layout = "<root>/<wnid>/<image>.jpg (200 folders such as n01443537)"
    published = "https://github.com/hendrycks/imagenet-r (or python -m src.data.download imagenet-r)"
    root_key = "source.roots.imagenet_r"


class ImageNetA(_WnidSource):
    name = "imagenet_a"
    title = "ImageNet-A"
    layout = "<root>/<wnid>/<image>.jpg (200 folders such as n01498041)"
    published = (
        "https://github.com/hendrycks/natural-adv-examples (or python -m src.data.download imagenet-a)"
    )
    root_key = "source.roots.imagenet_a"
