"""Which image region each ROI layer actually reads, computed in closed form for many boxes.

The ROI layers in :mod:`detector.ops` never see the true box: RoIPool snaps it to whole
feature cells (twice: origin, then width/height), RoIWarp snaps its corners to the grid and
then samples, RoIAlign samples the box as given. :func:`read_region` maps a batch of
image-space boxes to the image-space box each layer reads, following ``docs/roi_ops.md``
exactly, so the loss of overlap can be measured *before* training (see :mod:`.quantization`).

Which ops have a region, and the region itself, come from the variant table
(``detector.ops.ROI_OPS``, each spec's ``region``: :mod:`detector.ops.regions` holds the
built-ins' and states the footprint model); this module adds the comparisons
(:func:`paired_iou`, RoIPool's per-bin IoU). Rounding is the ops' own
(``detector.ops.round_half_away``), not a second copy.

Everything is vectorized over boxes (and bins); no Python loop runs per box.
"""

from __future__ import annotations

import numpy as np

from detector.ops import ROI_OPS

# feature_sizes, roi_pool_cells: re-exported, the analysis's public view (notebook 01 uses them).
from detector.ops.regions import (  # noqa: F401
    as_boxes,
    check_stride,
    clip_known,
    feature_sizes,
    roi_pool_cells,
)
from detector.ops.regions import round_half_away_np as round_half_away


def region_ops() -> tuple[str, ...]:
    """Ops whose read region is known (a ``region`` in the table), in table order."""
    return tuple(name for name, spec in ROI_OPS.items() if spec.region is not None)


def read_region(boxes, stride: float, op: str = "roi_pool", image_sizes=None,
                aligned: bool = False) -> np.ndarray:
    """Image-space box ``(K, 4)`` that ``op`` reads for each input box ``(K, 4)``.

    The op's ``region`` from the variant table (``detector.ops.regions``):

    - ``roi_pool``: cells ``sw..ew`` -> ``[sw*S, (ew+1)*S)`` (clipped to the map if sizes given).
    - ``roi_warp``: corners ``round(v*s)/s``; sampled region shifted by half a cell unless
      ``aligned``; a box thinner than one cell is widened to one cell (``rw = max(rw, 1)``).
    - ``roi_align``: the box itself, with the same half-cell shift and minimum size rule.
    """
    b = as_boxes(boxes)
    S = check_stride(stride)
    spec = ROI_OPS.get(op) if isinstance(op, str) else None
    if spec is None or spec.region is None:
        raise ValueError(f"op must be one of {region_ops()}, got {op!r}")
    return spec.region(b, S, image_sizes, aligned)


def paired_iou(a, b) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` (not all pairs), ``(K,)``; 0 where the union is empty."""
    a, b = as_boxes(a), as_boxes(b)
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def roi_pool_bin_iou(boxes, stride: float, output_size, image_sizes=None) -> np.ndarray:
    """Mean over bins of the IoU between each RoIPool bin and the ideal bin, ``(K,)``.

    The ideal bin ``(ph, pw)`` is the true box cut into ``PH x PW`` equal parts. RoIPool's bin
    covers rows ``[floor(ph*bh) + sh, ceil((ph+1)*bh) + sh)`` (bins overlap or repeat cells when
    the box is not a multiple of the output size), clipped to the map; an empty bin scores 0.
    This is the second quantization of the slides (width/height), per bin.
    """
    b = as_boxes(boxes)
    S = check_stride(stride)
    ph_, pw_ = (output_size, output_size) if np.isscalar(output_size) else output_size
    if int(ph_) <= 0 or int(pw_) <= 0:
        raise ValueError(f"output_size must be positive, got {output_size!r}")
    ph_, pw_ = int(ph_), int(pw_)
    s = 1.0 / S
    start = round_half_away(b[:, :2] * s)  # (K, 2)
    size = np.maximum(round_half_away(b[:, 2:] * s) - start + 1, 1)  # (K, 2) rw, rh
    n_bins = np.array([pw_, ph_], dtype=np.float64)
    binsz = size / n_bins  # (K, 2) bw, bh
    idx_x = np.arange(pw_, dtype=np.float64)
    idx_y = np.arange(ph_, dtype=np.float64)

    def cells(axis, idx):  # -> lo, hi of shape (K, P) in cells, clipped
        lo = np.floor(idx[None, :] * binsz[:, axis:axis + 1]) + start[:, axis:axis + 1]
        hi = np.ceil((idx[None, :] + 1) * binsz[:, axis:axis + 1]) + start[:, axis:axis + 1]
        if image_sizes is not None:
            lim = feature_sizes(np.broadcast_to(image_sizes, b[:, :2].shape), S)[:, axis:axis + 1]
            lo, hi = clip_known(lo, 0, lim), clip_known(hi, 0, lim)
        return lo * S, hi * S

    qx1, qx2 = cells(0, idx_x)  # (K, PW)
    qy1, qy2 = cells(1, idx_y)  # (K, PH)
    w = (b[:, 2] - b[:, 0])[:, None] / pw_
    h = (b[:, 3] - b[:, 1])[:, None] / ph_
    tx1, tx2 = b[:, :1] + idx_x[None] * w, b[:, :1] + (idx_x[None] + 1) * w  # (K, PW)
    ty1, ty2 = b[:, 1:2] + idx_y[None] * h, b[:, 1:2] + (idx_y[None] + 1) * h  # (K, PH)
    ix = np.clip(np.minimum(qx2, tx2) - np.maximum(qx1, tx1), 0, None)  # (K, PW)
    iy = np.clip(np.minimum(qy2, ty2) - np.maximum(qy1, ty1), 0, None)  # (K, PH)
    inter = iy[:, :, None] * ix[:, None, :]  # (K, PH, PW)
    area_q = ((qy2 - qy1)[:, :, None] * (qx2 - qx1)[:, None, :])  # (K, PH, PW)
    area_t = (h * w)[:, :, None]  # (K, 1, 1)
    union = area_q + area_t - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    return iou.reshape(len(b), -1).mean(axis=1)  # (K, PH, PW) -> (K,)
