"""An embedded, procedurally generated surveillance dataset: street scenes seen from a
fixed elevated camera, with exact boxes.

Every scene is a pure function of ``(seed, style, size)``: a layout is drawn from a
NumPy generator seeded with the scene's seed, then painted with Pillow. Objects
stand on the ground plane; their size grows linearly with the distance of their
foot point below the horizon, as it does for a camera looking down a street, and
they are painted far-to-near so nearer objects occlude farther ones. Each object is
painted into an instance map with the same primitives as into the image, and its box
is the tight extent of its *visible* pixels there, so boxes match what was drawn even
under occlusion.

Two styles give a visible domain shift (thesis 4.3.3, 'Surveillance' vs 'Synthetic'):
``street`` has textured asphalt, varying light, haze and sensor noise; ``synthetic``
is flat, saturated and noise-free, like a simple render.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from src.errors import UserError

CLASSES = ("person", "car", "bus", "truck", "bicycle", "motorcycle")

# (width, height) of each class at the bottom edge of the image, in image heights
_BASE_SIZE = {
    "person": (0.12, 0.36),
    "car": (0.48, 0.24),
    "bus": (0.95, 0.45),
    "truck": (0.8, 0.42),
    "bicycle": (0.24, 0.2),
    "motorcycle": (0.26, 0.22),
}
# how often each class appears: people and cars dominate a street, as in the thesis' data
_CLASS_WEIGHTS = np.array([0.34, 0.34, 0.06, 0.08, 0.09, 0.09])

STYLES = {
    "street": dict(light=(0.55, 1.15), noise=7.0, texture=10.0, haze=(0.0, 0.35), saturation=0.7),
    "synthetic": dict(light=(1.0, 1.0), noise=0.0, texture=0.0, haze=(0.0, 0.0), saturation=1.3),
}

HORIZON = 0.3  # horizon at 30 % of the height: the camera looks down on the street
MIN_SCALE = 0.3  # nothing farther than this (it would be a few pixels)
MIN_BOX = 4.0  # px; smaller objects are not placed at all
MAX_OVERLAP = 0.45  # of the smaller box: caps occlusion so every object stays recognisable


@dataclass
class Scene:
    image: np.ndarray  # uint8 [H, W, 3]
    boxes: np.ndarray  # float32 [N, 4] xyxy in pixels, x2/y2 exclusive
    labels: np.ndarray  # int64 [N], index into CLASSES


def _overlap_of_smaller(a, b) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return iw * ih / smaller


def _layout(
    rng: np.random.Generator,
    width: int,
    height: int,
    max_objects: int,
    classes: tuple[int, ...],
    min_scale: float,
    size_factor: float,
) -> list[dict]:
    """Classes, foot points, sizes and colours of the objects, far to near."""
    horizon = HORIZON * height
    weights = _CLASS_WEIGHTS[list(classes)]
    if len(classes) < len(
        CLASSES
    ):  # (all classes: the stored weights as they are, so the draws stay bitwise)
        weights = weights / weights.sum()
    objects: list[dict] = []
    for _ in range(int(rng.integers(1, max_objects + 1)) * 3):  # tries; rejected ones are skipped
        if len(objects) >= max_objects:
            break
        cls = classes[int(rng.choice(len(classes), p=weights))]
        scale = rng.uniform(min_scale, 1.0)
        foot_y = horizon + scale * (height - horizon)
        bw, bh = (s * height * scale * size_factor * rng.uniform(0.9, 1.1) for s in _BASE_SIZE[CLASSES[cls]])
        # vehicles keep to the road (it widens towards the camera), people anywhere
        road_half = 0.08 * width + scale * 0.45 * width
        centre = width / 2 + rng.uniform(-1, 1) * (road_half if cls != 0 else 0.5 * width)
        box = (centre - bw / 2, foot_y - bh, centre + bw / 2, foot_y)
        colour = rng.integers(30, 226, size=3)
        if bw < MIN_BOX or bh < MIN_BOX or box[0] < 0 or box[2] > width:
            continue
        if any(_overlap_of_smaller(box, o["box"]) > MAX_OVERLAP for o in objects):
            continue
        objects.append(dict(cls=cls, box=box, colour=colour, facing=int(rng.integers(0, 2))))
    objects.sort(key=lambda o: o["box"][3])  # far (high on the image) first
    return objects


def _shade(colour, factor) -> tuple:
    return tuple(int(np.clip(c * factor, 0, 255)) for c in colour)


class _Draw:
    """ImageDraw with corners put in order: at a few pixels' size, rounding can cross them."""

    def __init__(self, draw: ImageDraw.ImageDraw):
        self.draw = draw

    @staticmethod
    def _box(xy):
        x0, y0, x1, y1 = xy
        return [x0, y0, max(x0, x1), max(y0, y1)]

    def rectangle(self, xy, **kw):
        self.draw.rectangle(self._box(xy), **kw)

    def ellipse(self, xy, **kw):
        self.draw.ellipse(self._box(xy), **kw)

    def polygon(self, xy, **kw):
        self.draw.polygon(xy, **kw)


def _paint(draw: ImageDraw.ImageDraw, obj: dict, fill=None) -> None:
    """The primitives of one object; ``fill`` overrides every colour (instance map)."""
    draw = _Draw(draw)
    x0, y0, x1, y1 = obj["box"]
    w, h = x1 - x0, y1 - y0
    c = obj["colour"]

    def col(factor):
        return fill if fill is not None else _shade(c, factor)

    dark = fill if fill is not None else (25, 25, 28)
    glass = fill if fill is not None else (120, 150, 175)
    name = CLASSES[obj["cls"]]
    if name == "person":
        head = 0.18 * h
        draw.ellipse(
            [x0 + 0.25 * w, y0, x1 - 0.25 * w, y0 + head], fill=col(1.1) if fill else (225, 190, 160)
        )
        draw.rectangle([x0, y0 + head, x1, y0 + 0.6 * h], fill=col(1.0))
        draw.rectangle([x0 + 0.1 * w, y0 + 0.6 * h, x0 + 0.45 * w, y1 - 1], fill=col(0.5))
        draw.rectangle([x0 + 0.55 * w, y0 + 0.6 * h, x1 - 0.1 * w, y1 - 1], fill=col(0.5))
    elif name in ("car", "bus", "truck"):
        wheel = 0.22 * h if name == "car" else 0.16 * h
        body_bottom = y1 - wheel * 0.6
        if name == "car":
            draw.rectangle([x0, y0 + 0.45 * h, x1, body_bottom], fill=col(1.0))
            draw.polygon(
                [
                    (x0 + 0.18 * w, y0 + 0.45 * h),
                    (x0 + 0.3 * w, y0),
                    (x1 - 0.3 * w, y0),
                    (x1 - 0.15 * w, y0 + 0.45 * h),
                ],
                fill=col(0.85),
            )
            draw.rectangle([x0 + 0.33 * w, y0 + 0.1 * h, x1 - 0.33 * w, y0 + 0.4 * h], fill=glass)
        elif name == "bus":
            draw.rectangle([x0, y0, x1, body_bottom], fill=col(1.0))
            for k in range(5):
                wx = x0 + (0.06 + 0.18 * k) * w
                draw.rectangle([wx, y0 + 0.15 * h, wx + 0.13 * w, y0 + 0.45 * h], fill=glass)
        else:  # truck: cab on one side, cargo box on the other
            cargo = (x0, x0 + 0.7 * w) if obj["facing"] else (x0 + 0.3 * w, x1)
            cab = (x0 + 0.7 * w, x1) if obj["facing"] else (x0, x0 + 0.3 * w)
            draw.rectangle([cargo[0], y0, cargo[1], body_bottom], fill=col(1.0))
            draw.rectangle([cab[0], y0 + 0.35 * h, cab[1], body_bottom], fill=col(0.7))
            draw.rectangle(
                [
                    cab[0] + 0.2 * (cab[1] - cab[0]),
                    y0 + 0.42 * h,
                    cab[1] - 0.2 * (cab[1] - cab[0]),
                    y0 + 0.6 * h,
                ],
                fill=glass,
            )
        for fx in (0.12, 0.72) if name != "bus" else (0.1, 0.78):
            draw.ellipse([x0 + fx * w, y1 - wheel, x0 + fx * w + wheel, y1 - 1], fill=dark)
    else:  # bicycle / motorcycle: two wheels, a frame, a rider's torso
        r = 0.38 * h
        motor = name == "motorcycle"
        for fx in (0.0, 1.0):
            cx = x0 + r / 2 + fx * (w - r)
            if motor:
                draw.ellipse([cx - r / 2, y1 - r, cx + r / 2, y1 - 1], fill=dark)
            else:
                draw.ellipse([cx - r / 2, y1 - r, cx + r / 2, y1 - 1], outline=dark, width=max(1, int(r / 6)))
        draw.rectangle([x0 + r / 2, y1 - 0.7 * r, x1 - r / 2, y1 - 0.45 * r], fill=col(0.8 if motor else 1.0))
        draw.rectangle([x0 + 0.35 * w, y0, x1 - 0.35 * w, y1 - 0.7 * r], fill=col(1.2))


def _background(rng: np.random.Generator, width: int, height: int, style: dict) -> np.ndarray:
    horizon = HORIZON * height
    sat = style["saturation"]
    sky = np.array([150, 180, 215]) * rng.uniform(0.85, 1.1)
    ground = np.array([95, 120, 80]) * (sat if sat > 1 else 1.0) * rng.uniform(0.85, 1.1)
    road = np.array([105, 105, 110]) * rng.uniform(0.8, 1.15)
    img = Image.new("RGB", (width, height), tuple(int(v) for v in np.clip(ground, 0, 255)))
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, horizon], fill=tuple(int(v) for v in np.clip(sky, 0, 255)))
    near_half, far_half = 0.55 * width, 0.08 * width
    draw.polygon(
        [
            (width / 2 - far_half, horizon),
            (width / 2 + far_half, horizon),
            (width / 2 + near_half, height),
            (width / 2 - near_half, height),
        ],
        fill=tuple(int(v) for v in np.clip(road, 0, 255)),
    )
    for k in range(6):  # dashed centre line, foreshortened
        t0, t1 = (k + 0.2) / 6, (k + 0.6) / 6
        draw.line(
            [(width / 2, horizon + t0 * (height - horizon)), (width / 2, horizon + t1 * (height - horizon))],
            fill=(230, 230, 210),
            width=max(1, int(1 + 3 * t1 * height / 144)),
        )
    arr = np.asarray(img, dtype=np.float32)
    if style["texture"] > 0:
        arr += rng.normal(0, style["texture"], size=(height, width, 1)).astype(np.float32)
    return arr


def class_indices(classes: Sequence[str] | None) -> tuple[int, ...]:
    """Indices into CLASSES of a subset given by name (None: all), in the subset's order."""
    if classes is None:
        return tuple(range(len(CLASSES)))
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes or len(set(classes)) != len(classes):
        raise UserError(
            f"dataset.source.classes={list(classes)!r}: give distinct names from "
            f"{', '.join(CLASSES)} (or null for all)"
        )
    return tuple(CLASSES.index(c) for c in classes)


def render_scene(
    seed: int,
    style: str = "street",
    width: int = 256,
    height: int = 144,
    max_objects: int = 8,
    draw_objects: bool = True,
    noise: bool = True,
    classes: Sequence[str] | None = None,
    min_scale: float = MIN_SCALE,
    size_factor: float = 1.0,
) -> Scene:
    """Scene ``seed`` in ``style``. ``draw_objects=False`` gives the same scene empty
    (same background, light and noise), which is how the tests check the boxes.

    ``classes`` limits the objects to those classes (labels then index that list);
    ``min_scale`` in (0, 1] is the distance scale of the farthest object (1: every
    object as near as the bottom edge); ``size_factor`` multiplies every object's size.
    """
    if style not in STYLES:
        raise UserError(f"scene style {style!r}; allowed: {', '.join(STYLES)}")
    if not 0 < min_scale <= 1 or not 0 < size_factor <= 2:
        raise UserError(
            f"dataset.source.min_scale={min_scale!r} must be in (0, 1] and "
            f"dataset.source.size_factor={size_factor!r} in (0, 2]"
        )
    subset = class_indices(classes)
    st = STYLES[style]
    # separate streams: the layout is the same in every style, only the look changes
    layout_rng, look_rng = np.random.default_rng([int(seed), 7919]), np.random.default_rng([int(seed), 7907])
    objects = _layout(layout_rng, width, height, max_objects, subset, min_scale, size_factor)
    arr = _background(look_rng, width, height, st)
    rng = look_rng
    light = rng.uniform(*st["light"])
    haze = rng.uniform(*st["haze"])
    noise_rng = np.random.default_rng([int(seed), 104729])

    instances = Image.new("L", (width, height), 0)
    canvas = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if draw_objects:
        draw, idraw = ImageDraw.Draw(canvas), ImageDraw.Draw(instances)
        for k, obj in enumerate(objects):
            _paint(draw, obj)
            _paint(idraw, obj, fill=k + 1)
    out = np.asarray(canvas, dtype=np.float32)
    sat = st["saturation"]
    grey = out.mean(axis=2, keepdims=True)
    out = grey + (out - grey) * sat
    # haze grows towards the horizon: distant objects lose contrast, as through a real lens
    rows = np.linspace(1.0, 0.0, height, dtype=np.float32)[:, None, None] * haze
    out = out * light * (1 - rows) + 200.0 * rows
    if noise and st["noise"] > 0:
        out += noise_rng.normal(0, st["noise"], size=out.shape).astype(np.float32)
    image = np.clip(np.rint(out), 0, 255).astype(np.uint8)

    ids = np.asarray(instances)
    boxes, labels = [], []
    for k, obj in enumerate(objects):
        ys, xs = np.nonzero(ids == k + 1)
        if len(xs) == 0:
            continue
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(subset.index(obj["cls"]))
    return Scene(
        image=image,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(labels, dtype=np.int64),
    )
