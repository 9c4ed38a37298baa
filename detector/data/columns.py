"""A COCO instances dict's annotation fields as numpy columns, and the vectorized pre-check.

Why columns: COCO train2017 has 860k annotations. Per-record Python (a loop with a few
``isinstance`` tests and f-strings per annotation) costs seconds there, and per-image Python
containers cost gigabytes in every DataLoader worker (reading a Python object writes its
reference count, so forked workers copy the pages they read). Both the dataset check
(:mod:`detector.data.check`) and the compact store (:mod:`detector.data.store`) read the same
few fields, so they are extracted here once per field, as arrays.

Rule for bad records: extraction never raises on bad data. A value that is not what COCO
prescribes (a missing key, a bool or string where a number belongs, a box that is not four
numbers) becomes a flagged row (``NaN`` box, ``ok`` False), and the checker then runs its
per-record code on the flagged rows only, so every message stays the one that per-record code
writes, naming the annotation id.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter, methodcaller

import numpy as np

_NUMBER = {int, float}  # JSON numbers; bool is a subclass of int, so test with `type(v) in _NUMBER`
_NAN4 = [math.nan] * 4


def int_ids(records: list, key: str) -> np.ndarray | None:
    """``int64[len(records)]`` of ``record[key]``, or None unless every record is a dict with a plain int there."""
    try:
        values = list(map(itemgetter(key), records))  # map/itemgetter/set(map(type)): C speed, no Python frame per row
    except (KeyError, TypeError, IndexError):
        return None
    if not set(map(type, values)) <= {int}:
        return None
    try:
        return np.fromiter(values, dtype=np.int64, count=len(values))
    except OverflowError:  # ids beyond int64: the per-record path handles them
        return None


def boxes_xywh(anns: list) -> tuple[np.ndarray, np.ndarray]:
    """``(float64[M, 4], bool[M])``: each ``bbox`` as ``[x, y, w, h]``, and whether it was four plain numbers.

    A missing or malformed ``bbox`` (not a list of 4 ints/floats; bools and strings are not
    numbers) is a row of NaN with ``ok`` False. NaN and infinity inside a well-formed box stay
    as they are (``ok`` True): the caller tests finiteness.
    """
    raw = list(map(methodcaller("get", "bbox"), anns)) if set(map(type, anns)) <= {dict} else \
        [a.get("bbox") if type(a) is dict else None for a in anns]
    if set(map(type, raw)) <= {list} and set(map(len, raw)) <= {4} and set(map(type, chain.from_iterable(raw))) <= _NUMBER:
        try:  # the common case, tested and converted at C speed
            flat = np.fromiter(chain.from_iterable(raw), dtype=np.float64, count=4 * len(raw))
            return flat.reshape(-1, 4), np.ones(len(raw), dtype=bool)  # (4M,) -> (M, 4)
        except OverflowError:
            pass
    ok = [type(b) is list and len(b) == 4 and type(b[0]) in _NUMBER and type(b[1]) in _NUMBER
          and type(b[2]) in _NUMBER and type(b[3]) in _NUMBER for b in raw]
    try:
        xywh = np.array([b if k else _NAN4 for b, k in zip(raw, ok)], dtype=np.float64).reshape(-1, 4)
    except OverflowError:  # an int beyond float64: that row is malformed
        rows = []
        for i, (b, k) in enumerate(zip(raw, ok)):
            try:
                rows.append([float(v) for v in b] if k else _NAN4)
            except OverflowError:
                rows.append(_NAN4)
                ok[i] = False
        xywh = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return xywh, np.array(ok, dtype=bool)


def crowd_flags(anns: list) -> np.ndarray:
    """``bool[M]``: ``ann.get("iscrowd", 0)`` taken as truthy, as pycocotools and the old loop did."""
    values = list(map(methodcaller("get", "iscrowd", 0), anns))
    if set(map(type, values)) <= {int, bool}:
        return np.array(values, dtype=np.int64) != 0 if values else np.zeros(0, dtype=bool)
    return np.array([bool(v) for v in values], dtype=bool)


def clipped_xyxy(xywh: np.ndarray, width: np.ndarray, height: np.ndarray) -> np.ndarray:
    """``float64[M, 4]`` ``(x1, y1, x2, y2)`` clipped to ``[0, width] x [0, height]`` per row (NaN stays NaN)."""
    xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (M, 4) xywh -> xyxy
    upper = np.stack([width, height, width, height], axis=1)  # (M,) x 2 -> (M, 4)
    return np.clip(xyxy, 0.0, upper)


@dataclass
class AnnotationColumns:
    """The fields of ``data["annotations"]`` that the check and the store read, one row per annotation.

    Attributes:
        ids, image_ids, category_ids: ``int64[M]``, or None when some record lacks the key or
            holds a non-int there (the checker's per-record path then names it).
        xywh: ``float64[M, 4]``; NaN rows where ``box_ok`` is False.
        box_ok: ``bool[M]``: the ``bbox`` was a list of four numbers.
        crowd: ``bool[M]``.
    """

    ids: np.ndarray | None
    image_ids: np.ndarray | None
    category_ids: np.ndarray | None
    xywh: np.ndarray
    box_ok: np.ndarray
    crowd: np.ndarray

    @classmethod
    def extract(cls, anns: list) -> AnnotationColumns:
        xywh, ok = boxes_xywh(anns)
        crowd = crowd_flags(anns) if set(map(type, anns)) <= {dict} else np.zeros(len(anns), dtype=bool)
        return cls(int_ids(anns, "id"), int_ids(anns, "image_id"), int_ids(anns, "category_id"), xywh, ok, crowd)


def suspect_annotations(cols: AnnotationColumns, image_ids: np.ndarray, widths: np.ndarray, heights: np.ndarray,
                        category_ids: np.ndarray, negative_tolerance: float) -> np.ndarray:
    """``bool[M]``: annotations the per-record check may report something about (a superset).

    Every test of :func:`detector.data.check.check_coco`'s annotation loop, in numpy with the
    same float64 arithmetic: unknown image or category, a malformed, non-finite or negative box,
    a box past a border, a box under 1 px after clipping. Rows it does not flag get no issue
    from the per-record code, so that code runs on the flagged rows alone.

    Args:
        image_ids: ``int64[N]`` of the images, sorted ascending.
        widths, heights: ``float64[N]`` in the same order; NaN where the record's width/height
            is not an int (the per-record code skips its border tests then; flagged here).
        category_ids: ``int64[C]`` of the categories.
    """
    m = len(cols.xywh)
    if cols.image_ids is None or cols.category_ids is None or cols.ids is None:
        return np.ones(m, dtype=bool)
    pos = np.clip(np.searchsorted(image_ids, cols.image_ids), 0, max(len(image_ids) - 1, 0))
    known = (image_ids[pos] == cols.image_ids) if len(image_ids) else np.zeros(m, dtype=bool)
    w = np.where(known, widths[pos] if len(image_ids) else np.nan, np.nan)
    h = np.where(known, heights[pos] if len(image_ids) else np.nan, np.nan)
    x, y, bw, bh = cols.xywh.T
    with np.errstate(invalid="ignore"):
        bad_box = (~cols.box_ok | ~np.isfinite(cols.xywh).all(axis=1) | (bw < 0) | (bh < 0)
                   | (x < -negative_tolerance) | (y < -negative_tolerance))
        outside = (x < 0) | (y < 0) | (x + bw > w + 0.5) | (y + bh > h + 0.5)
        tiny = ~cols.crowd & ((np.minimum(x + bw, w) - np.minimum(np.maximum(x, 0), w) < 1)
                              | (np.minimum(y + bh, h) - np.minimum(np.maximum(y, 0), h) < 1))
    no_size = known & ~(np.isfinite(w) & np.isfinite(h))
    return ~known | ~np.isin(cols.category_ids, category_ids) | bad_box | outside | tiny | no_size
