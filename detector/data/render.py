"""Render one synthetic image: textured clutter, then shapes that may occlude each other.

The renderer keeps an *instance map* next to the colour image (``0`` = background or
clutter, ``j + 1`` = object ``j``). Each object is rasterized once into a boolean crop; those
very pixels are painted with the object's texture and written into the instance map, so the
visible mask of object ``j`` is exactly ``instance_map == j + 1``: what was drawn, occlusion
included, with no second rasterizer that could disagree by a pixel.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from detector.data.shapes import SHAPES, shape_polygons


@dataclass(frozen=True)
class RenderConfig:
    """What one synthetic image looks like. Sizes are in pixels.

    ``min_object_size`` sits below one 32 px cell on purpose (a stride-32 feature map sees
    such an object as less than one cell: the regime where RoIPool's rounding hurts most);
    ``max_object_fraction`` of the shorter image side lets objects fill most of the image.
    Sizes are drawn log-uniformly between the two, so every scale is equally common.
    """

    width: int = 400
    height: int = 288
    min_objects: int = 1
    max_objects: int = 8
    min_object_size: float = 12.0
    max_object_fraction: float = 0.75
    min_visible: float = 0.5  # an occluded object keeps at least this share of its pixels
    min_distractors: int = 4
    max_distractors: int = 12
    classes: tuple[str, ...] = SHAPES

    def __post_init__(self) -> None:
        if self.width < 32 or self.height < 32:
            raise ValueError(f"image size {self.width}x{self.height} is too small; use at least 32x32")
        if not 1 <= self.min_objects <= self.max_objects <= 254:
            raise ValueError(
                f"objects per image must satisfy 1 <= min_objects ({self.min_objects}) <= "
                f"max_objects ({self.max_objects}) <= 254"
            )
        max_size = self.max_object_fraction * min(self.width, self.height)
        if not 4 <= self.min_object_size <= max_size:
            raise ValueError(
                f"min_object_size={self.min_object_size} must lie in [4, max_object_fraction * "
                f"min(width, height) = {max_size:.1f}]"
            )
        if not 0.0 <= self.min_visible <= 1.0:
            raise ValueError(f"min_visible={self.min_visible} must lie in [0, 1]")
        if not 0 <= self.min_distractors <= self.max_distractors:
            raise ValueError(
                f"need 0 <= min_distractors ({self.min_distractors}) <= max_distractors ({self.max_distractors})"
            )
        unknown = [c for c in self.classes if c not in SHAPES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes={self.classes!r} must be distinct names from {SHAPES}")


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    """Saturated colours: objects stand out from the muted background, yet any hue is any class."""
    return _hsv(rng.random(), rng.uniform(0.55, 1.0), rng.uniform(0.45, 1.0))


def _clutter_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    c = _hsv(rng.random(), rng.uniform(0.0, 0.6), rng.uniform(0.2, 0.95))
    return tuple(int(x) for x in c)


def _background(cfg: RenderConfig, rng: np.random.Generator) -> Image.Image:
    """A smooth, muted colour field with grain and, sometimes, faint stripes.

    Kept in ``uint8`` with headroom (field <= 200, stripes <= 30, grain <= 24) instead of
    clipping wider integers: the background is most of the generation time.
    """
    w, h = cfg.width, cfg.height
    grid = rng.uniform(30, 200, size=(int(rng.integers(3, 8)), int(rng.integers(3, 8)), 3))
    grey = grid.mean(axis=2, keepdims=True)
    grid = grey + (grid - grey) * rng.uniform(0.1, 0.5)  # desaturate
    field = np.array(Image.fromarray(grid.astype(np.uint8)).resize((w, h), Image.BILINEAR))  # (H, W, 3)
    grain = rng.integers(0, 25, size=(h, w), dtype=np.uint8)
    if rng.random() < 0.35:
        t = rng.uniform(0, math.pi)
        period = rng.uniform(6, 30)
        # Fixed point (8 fractional bits): integer add/shift/and is ~7x cheaper than float floor-mod.
        x = (np.arange(w) * (256 * math.cos(t) / period)).astype(np.int32)
        y = (np.arange(h) * (256 * math.sin(t) / period)).astype(np.int32)
        stripes = ((x[None, :] + y[:, None]) >> 8) & 1  # (H, W), 0/1 bands `period` px wide
        grain += stripes.astype(np.uint8) * np.uint8(rng.integers(10, 31))
    field += grain[:, :, None]
    return Image.fromarray(field)


def _draw_clutter(img: Image.Image, cfg: RenderConfig, rng: np.random.Generator) -> None:
    """Lines, arcs and irregular blobs: structure that is not an object."""
    draw = ImageDraw.Draw(img)
    w, h = cfg.width, cfg.height
    for _ in range(int(rng.integers(cfg.min_distractors, cfg.max_distractors + 1))):
        kind = rng.random()
        colour = _clutter_colour(rng)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = math.exp(rng.uniform(math.log(6), math.log(0.3 * min(w, h))))
        if kind < 0.4:
            t = rng.uniform(0, 2 * math.pi)
            dx, dy = r * 2 * math.cos(t), r * 2 * math.sin(t)
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=int(rng.integers(1, 5)))
        elif kind < 0.6:
            start = rng.uniform(0, 360)
            draw.arc([cx - r, cy - r, cx + r, cy + r], start, start + rng.uniform(40, 200),
                     fill=colour, width=int(rng.integers(1, 4)))
        else:
            n = int(rng.integers(9, 16))
            t = np.sort(rng.uniform(0, 2 * math.pi, n))
            rad = r * rng.uniform(0.35, 1.0, n)  # strongly irregular: never a regular shape
            pts = np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)
            draw.polygon([tuple(p) for p in pts], fill=colour)


def _texture(h: int, w: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fill of one object: solid, stripes, checks, speckle or gradient between two colours.

    Returned as ``(index[h, w] uint8, palette[256, 3] uint8)`` so that only the masked pixels
    are ever expanded to RGB (``palette[index[mask]]``): large objects are most of the cost.
    """
    c1 = _object_colour(rng)
    c2 = np.clip(c1 * rng.uniform(0.35, 0.75) if rng.random() < 0.5 else _object_colour(rng), 0, 255)
    t = np.linspace(0.0, 1.0, 256)[:, None]  # (256, 1)
    palette = (c1 * (1 - t) + c2 * t).astype(np.uint8)  # (256, 3): index 0 -> c1, 255 -> c2
    kind = int(rng.integers(5))
    if kind == 0:
        return np.zeros((h, w), dtype=np.uint8), palette
    y = np.arange(h, dtype=np.int32)[:, None]
    x = np.arange(w, dtype=np.int32)[None, :]
    if kind == 1:  # stripes, fixed point as in _background
        angle, period = rng.uniform(0, math.pi), rng.uniform(3, 9)
        fx, fy = int(256 * math.cos(angle) / period), int(256 * math.sin(angle) / period)
        index = ((x * fx + y * fy) >> 8) & 1
    elif kind == 2:  # checks
        period = int(rng.integers(3, 10))
        index = (x // period + y // period) & 1
    elif kind == 3:  # speckle
        index = rng.random((h, w), dtype=np.float32) < 0.25
    else:  # linear gradient
        angle = rng.uniform(0, 2 * math.pi)
        g = x * math.cos(angle) + y * math.sin(angle)  # (h, w)
        g = g - g.min()
        return (g * (255.0 / max(float(g.max()), 1.0))).astype(np.uint8), palette
    return index.astype(np.uint8) * np.uint8(255), palette


def _rasterize(outers: list[np.ndarray], holes: list[np.ndarray], w: int, h: int):
    """Boolean crop of the polygons inside the image: ``(mask[h', w'], x0, y0)`` or None."""
    allp = np.concatenate(outers)
    x0, y0 = max(int(math.floor(allp[:, 0].min())), 0), max(int(math.floor(allp[:, 1].min())), 0)
    x1, y1 = min(int(math.ceil(allp[:, 0].max())) + 1, w), min(int(math.ceil(allp[:, 1].max())) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return None
    canvas = Image.new("L", (x1 - x0, y1 - y0), 0)
    draw = ImageDraw.Draw(canvas)
    off = np.array([x0, y0])
    for p in outers:
        draw.polygon([tuple(q) for q in (p - off)], fill=1)
    for p in holes:
        draw.polygon([tuple(q) for q in (p - off)], fill=0)
    return np.asarray(canvas, dtype=bool), x0, y0


def render_image(cfg: RenderConfig, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Draw one image.

    Returns:
        ``image`` (``uint8[H, W, 3]``), ``instances`` (``uint8[H, W]``, 0 = no object,
        ``j + 1`` = visible pixels of object ``j``) and ``labels`` (``labels[j]`` in
        ``1..len(cfg.classes)``). Every object keeps at least ``cfg.min_visible`` of its pixels
        and at least 16 pixels.
    """
    w, h = cfg.width, cfg.height
    bg = _background(cfg, rng)
    _draw_clutter(bg, cfg, rng)
    image = np.array(bg)  # writable (H, W, 3)
    instances = np.zeros((h, w), dtype=np.uint8)
    labels: list[int] = []
    full: list[int] = []  # drawn pixels per object
    visible: list[int] = []  # still-visible pixels per object
    lo, hi = math.log(cfg.min_object_size), math.log(cfg.max_object_fraction * min(w, h))
    for _ in range(int(rng.integers(cfg.min_objects, cfg.max_objects + 1))):
        for _attempt in range(25):
            label = int(rng.integers(len(cfg.classes))) + 1
            radius = math.exp(rng.uniform(lo, hi)) / 2
            margin = 0.6 * radius  # up to ~20% of an object may leave the frame
            cx, cy = rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)
            outers, holes = shape_polygons(cfg.classes[label - 1], (cx, cy), radius, rng.uniform(0, 2 * math.pi), rng)
            crop = _rasterize(outers, holes, w, h)
            if crop is None:
                continue
            mask, x0, y0 = crop
            area = int(mask.sum())
            if area < 16:
                continue
            region = instances[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]]
            hidden = np.bincount(region[mask], minlength=len(labels) + 1)[1:]  # pixels each older object would lose
            if any(v - d < max(cfg.min_visible * f, 16) for v, f, d in zip(visible, full, hidden) if d):
                continue
            region[mask] = len(labels) + 1
            index, palette = _texture(mask.shape[0], mask.shape[1], rng)
            image[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = palette[index[mask]]
            visible = [v - d for v, d in zip(visible, hidden)]
            labels.append(label)
            full.append(area)
            visible.append(area)
            break
    return image, instances, labels
