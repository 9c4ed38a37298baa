"""Shape classes of the synthetic dataset, as polygons.

Every shape is a list of outer rings and a list of holes, each an ``ndarray[V, 2]`` of
``(x, y)`` vertices around the origin that fit inside the unit circle. Rendering scales,
rotates and rasterizes these polygons once, and the same rasterized pixels become both the
coloured object and its mask, so masks match what was drawn exactly.

The classes are chosen to differ by *outline* (corners, concavities, holes, elongation), not
by colour: colour and texture are drawn at random for every object, so a detector has to
look at the shape, and localizing that outline precisely is what separates quantized RoIPool
from RoIAlign.
"""

from __future__ import annotations

import math

import numpy as np

#: Category names in label order (label ``i`` is ``SHAPES[i - 1]``; 0 is background).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross", "ellipse")

_CIRCLE_VERTICES = 40


def _regular(n: int, phase: float = 0.0) -> np.ndarray:
    t = phase + np.arange(n) * (2 * math.pi / n)
    return np.stack([np.cos(t), np.sin(t)], axis=1)  # (n, 2)


def _unit_polygons(name: str, rng: np.random.Generator) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Return ``(outers, holes)`` of one shape before rotation, radius <= 1."""
    if name == "circle":
        return [_regular(_CIRCLE_VERTICES)], []
    if name == "square":
        return [_regular(4, math.pi / 4)], []
    if name == "triangle":
        return [_regular(3, -math.pi / 2)], []
    if name == "star":
        inner = rng.uniform(0.38, 0.5)
        points = 5
        radius = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
        return [_regular(2 * points, -math.pi / 2) * radius[:, None]], []
    if name == "ring":
        inner = rng.uniform(0.45, 0.62)
        return [_regular(_CIRCLE_VERTICES)], [_regular(_CIRCLE_VERTICES) * inner]
    if name == "cross":
        a = rng.uniform(0.22, 0.34)  # half-width of the arms, arm tips at distance 1/sqrt(1+a^2)
        b = 1.0 / math.sqrt(1.0 + a * a)
        xy = [(a, b), (a, a), (b, a), (b, -a), (a, -a), (a, -b),
              (-a, -b), (-a, -a), (-b, -a), (-b, a), (-a, a), (-a, b)]
        return [np.asarray(xy, dtype=np.float64)], []
    if name == "ellipse":
        minor = rng.uniform(0.38, 0.55)
        return [_regular(_CIRCLE_VERTICES) * np.array([1.0, minor])], []
    raise ValueError(f"unknown shape {name!r}; known shapes: {', '.join(SHAPES)}")


def shape_polygons(
    name: str, center: tuple[float, float], radius: float, angle: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Polygons of shape ``name`` in image pixels.

    Args:
        name: one of :data:`SHAPES`.
        center: ``(cx, cy)`` in pixels.
        radius: half the object's size in pixels (the shape fits in a circle of this radius).
        angle: rotation in radians.
        rng: draws the shape's own proportions (star depth, ring width, ...).

    Returns:
        ``(outers, holes)``: lists of ``ndarray[V, 2]`` pixel coordinates ``(x, y)``.
    """
    outers, holes = _unit_polygons(name, rng)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]]) * radius  # row vectors: p @ rot rotates by angle
    shift = np.asarray(center, dtype=np.float64)
    return [p @ rot + shift for p in outers], [p @ rot + shift for p in holes]
