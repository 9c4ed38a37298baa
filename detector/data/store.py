"""A COCO file's images and annotations held as a few numpy arrays: the dataset's compact store.

Why not the parsed JSON (or pycocotools' index of it): a Python dict per annotation costs
hundreds of bytes, a COCO train2017 file about 1.5 GB per process, and DDP starts one process
per GPU, each with its DataLoader workers. Worse, a forked worker that merely *reads* a
Python object writes its reference count, so the page holding it is copied: over an epoch
every worker ends up with its own copy of everything it touched ("copy-on-read"). A numpy
array's buffer is never written by reading, so forked workers share its pages for good.
detectron2 serializes its dataset lists into one buffer for the same reason; here the fields
are columns, so building the store is vectorized too.

Layout (``N`` kept images sorted by id; ``M`` annotations of those images, grouped by image in
file order, as pycocotools' ``imgToAnns`` lists them)::

    image_ids int64[N]     widths, heights float64[N] (the JSON's; inf where missing)
    file names: one UTF-8 buffer uint8[...] + offsets int64[N + 1]
    rows of image i: ann_offsets[i] : ann_offsets[i + 1]          (ann_offsets int64[N + 1])
    ann_ids, category_ids int64[M]   xywh float64[M, 4] (the file's bbox, NaN where malformed)
    area float64[M] (NaN where missing)   crowd bool[M]   target bool[M] (a training target)
    segmentations (only when asked): one buffer of compact JSON texts + offsets int64[M + 1]; empty
        for rows that are not targets and for falsy ones (missing, [], {}), which no mask can come from

A row is a training *target* when it is not crowd, its category is in the table and its box
is at least 1 px wide and high after clipping to the image (the rules of
:class:`~detector.data.coco.CocoDetection`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from operator import itemgetter, methodcaller

import numpy as np

from detector.data.columns import AnnotationColumns, clipped_xyxy

_NUMBER = {int, float}


def _pack(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8[total], int64[len + 1])``: byte strings as one buffer and their offsets."""
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=offsets[1:])
    return np.frombuffer(b"".join(texts), dtype=np.uint8).copy(), offsets


def _floats(values: list) -> np.ndarray:
    """``float64`` of JSON numbers; NaN for anything else (missing, bool, string)."""
    if set(map(type, values)) <= _NUMBER:
        return np.fromiter(values, dtype=np.float64, count=len(values))
    return np.array([float(v) if type(v) in _NUMBER else math.nan for v in values], dtype=np.float64)


@dataclass
class AnnotationStore:
    """See the module doc for the layout; build one with :meth:`from_coco`."""

    image_ids: np.ndarray
    widths: np.ndarray
    heights: np.ndarray
    name_bytes: np.ndarray
    name_offsets: np.ndarray
    ann_offsets: np.ndarray
    ann_ids: np.ndarray
    category_ids: np.ndarray
    xywh: np.ndarray
    area: np.ndarray
    crowd: np.ndarray
    target: np.ndarray
    segm_bytes: np.ndarray | None = None
    segm_offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.image_ids)

    @classmethod
    def from_coco(cls, data: dict, category_ids: list[int], exclude: set | frozenset = frozenset(),
                  drop_empty: bool = False, segmentations: bool = False,
                  columns: AnnotationColumns | None = None) -> tuple[AnnotationStore, np.ndarray]:
        """Build the store from a parsed COCO dict; returns it and the ids of the dropped (< 1 px) boxes.

        ``data`` must have int ``id`` on every image and int ``id``/``image_id``/``category_id``
        on every annotation (:class:`~detector.data.coco.CocoDetection` checks that first and
        names what is wrong); anything else may be malformed (a malformed box is not a target).

        Args:
            category_ids: the category table; annotations of other ids are held but not targets.
            exclude: image ids to leave out (images whose file is bad, ``skip_bad_images``).
            drop_empty: leave out images without any target.
            segmentations: hold the targets' segmentations (for masks).
            columns: ``AnnotationColumns.extract(data["annotations"])`` when the caller has it already.

        Returns:
            ``(store, dropped)``: ``dropped`` ``int64[D]`` ids of non-crowd annotations of known
            categories whose box is under 1 px (or NaN) after clipping, in image then file order.
        """
        images = data.get("images") or []
        anns = data.get("annotations") or []
        ids = np.fromiter(map(itemgetter("id"), images), dtype=np.int64, count=len(images))
        # Duplicate ids: the last record wins, as in pycocotools' index.
        uniq, last_rev = np.unique(ids[::-1], return_index=True)  # sorted unique ids, their last position
        pick = len(ids) - 1 - last_rev
        if exclude:
            keep = ~np.isin(uniq, np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
            uniq, pick = uniq[keep], pick[keep]
        records = [images[k] for k in pick]
        widths = _floats(list(map(methodcaller("get", "width", math.inf), records)))
        heights = _floats(list(map(methodcaller("get", "height", math.inf), records)))

        cols = columns if columns is not None else AnnotationColumns.extract(anns)
        pos = np.searchsorted(uniq, cols.image_ids) if len(uniq) else np.zeros(len(anns), dtype=np.int64)
        pos = np.minimum(pos, max(len(uniq) - 1, 0))
        mine = (uniq[pos] == cols.image_ids) if len(uniq) else np.zeros(len(anns), dtype=bool)
        rows = np.flatnonzero(mine)
        rows = rows[np.argsort(pos[rows], kind="stable")]  # grouped by image, file order within one
        img_of_row = pos[rows]
        xywh = cols.xywh[rows]
        crowd = cols.crowd[rows]
        known = np.isin(cols.category_ids[rows], np.asarray(category_ids, dtype=np.int64))
        xyxy = clipped_xyxy(xywh, widths[img_of_row], heights[img_of_row])
        with np.errstate(invalid="ignore"):
            big = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)  # NaN -> False
        candidate = ~crowd & known
        target = candidate & big
        dropped = cols.ids[rows[candidate & ~big]]

        if drop_empty:
            has_target = np.bincount(img_of_row[target], minlength=len(uniq)) > 0
            kept_images = np.flatnonzero(has_target)
            remap = np.full(len(uniq), -1, dtype=np.int64)
            remap[kept_images] = np.arange(len(kept_images))
            in_kept = has_target[img_of_row]
            rows, img_of_row, xywh, crowd, target = (rows[in_kept], remap[img_of_row[in_kept]], xywh[in_kept],
                                                     crowd[in_kept], target[in_kept])
            uniq, widths, heights = uniq[kept_images], widths[kept_images], heights[kept_images]
            records = [records[k] for k in kept_images]

        names = [r.get("file_name") for r in records]
        name_bytes, name_offsets = _pack([n.encode("utf-8", "surrogatepass") if type(n) is str else b"" for n in names])
        ann_offsets = np.zeros(len(uniq) + 1, dtype=np.int64)
        np.cumsum(np.bincount(img_of_row, minlength=len(uniq)), out=ann_offsets[1:])
        area = _floats([anns[k].get("area") for k in rows])
        store = cls(uniq, widths, heights, name_bytes, name_offsets, ann_offsets, cols.ids[rows],
                    cols.category_ids[rows], xywh, area, crowd, target)
        if segmentations:
            segms = [anns[k].get("segmentation") if t else None for k, t in zip(rows, target)]
            texts = [json.dumps(g, separators=(",", ":")).encode() if g else b"" for g in segms]
            store.segm_bytes, store.segm_offsets = _pack(texts)
        return store, dropped

    # ------------------------------------------------------------------ per image
    def file_name(self, i: int) -> str:
        """Image ``i``'s ``file_name`` ("" when the JSON's was not a string)."""
        start, end = self.name_offsets[i], self.name_offsets[i + 1]
        return self.name_bytes[start:end].tobytes().decode("utf-8", "surrogatepass")

    def rows(self, i: int) -> slice:
        """The rows of image ``i``'s annotations."""
        return slice(int(self.ann_offsets[i]), int(self.ann_offsets[i + 1]))

    def target_rows(self, i: int) -> np.ndarray:
        """``int64[L]`` rows of image ``i``'s training targets, in file order."""
        r = self.rows(i)
        return r.start + np.flatnonzero(self.target[r])

    def target_boxes(self, i: int) -> np.ndarray:
        """``float32[L, 4]`` ``(x1, y1, x2, y2)`` of image ``i``'s targets, clipped to the JSON's width/height."""
        rows = self.target_rows(i)
        n = len(rows)
        xyxy = clipped_xyxy(self.xywh[rows], np.full(n, self.widths[i]), np.full(n, self.heights[i]))
        return xyxy.astype(np.float32)

    def segmentation(self, row: int) -> object:
        """The segmentation of target ``row`` as in the JSON (polygons or RLE), None where it was falsy.

        Needs ``segmentations=True``.
        """
        if self.segm_bytes is None:
            raise ValueError("this store holds no segmentations: build it with segmentations=True")
        start, end = self.segm_offsets[row], self.segm_offsets[row + 1]
        return json.loads(self.segm_bytes[start:end].tobytes()) if end > start else None

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays (what each process pays, shared by its forked workers)."""
        return sum(v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray))
