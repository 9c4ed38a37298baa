"""Which image region each ROI layer actually reads, computed in closed form for many boxes.

The ROI layers in :mod:`detector.ops` never see the true box: RoIPool snaps it to whole
feature cells (twice: origin, then width/height), RoIWarp snaps its corners to the grid and
then samples, RoIAlign samples the box as given. This module maps a batch of image-space
boxes to the image-space box each layer reads, following ``shared/ROI_OPS.md`` exactly, so
the loss of overlap can be measured *before* training (see :mod:`.quantization`).

Footprint model (the slides' model, and RoIPool's own): feature cell ``j`` of a stride-``S``
map covers image pixels ``[j*S, (j+1)*S)``. Under it, RoIPool reading cells ``sw..ew``
reads the image box ``[sw*S, (ew+1)*S)``, and a bilinear sample at feature coordinate ``u``
reads image position ``(u + 0.5) * S`` (the centre of cell ``u``), which is why the
``aligned=False`` variants read the box shifted by half a cell (detectron2's reason for
``aligned=True``). Real backbones with padded convolutions shift every cell centre by a
backbone-specific constant; the analysis keeps the simple model and says so.

Everything is vectorized over boxes (and bins); no Python loop runs per box.
"""

from __future__ import annotations

import numpy as np

#: Ops whose read region this module knows, in the order tables list them.
REGION_OPS = ("roi_pool", "roi_warp", "roi_align")


def round_half_away(x: np.ndarray) -> np.ndarray:
    """Round half away from zero (C's ``round``, which RoIPool uses), not numpy's half-to-even."""
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _as_boxes(boxes) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"boxes must have shape (K, 4) as (x1, y1, x2, y2), got {arr.shape}; "
            "convert COCO (x, y, w, h) with x2 = x + w, y2 = y + h"
        )
    return arr


def _check_stride(stride) -> float:
    if not np.isfinite(stride) or stride <= 0:
        raise ValueError(f"stride must be a positive number (e.g. 16 or 32), got {stride!r}")
    return float(stride)


def feature_sizes(image_sizes, stride: float) -> np.ndarray:
    """Feature-map size ``(W, H)`` per image: ``ceil(size / stride)``.

    ``ceil`` matches a backbone fed an image padded to a multiple of the stride (as
    torchvision's ``GeneralizedRCNNTransform`` pads); for the slides' 800 x 576 image at
    stride 32 it gives 25 x 18.
    """
    sizes = np.asarray(image_sizes, dtype=np.float64)
    return np.ceil(sizes / _check_stride(stride) - 1e-9)


def roi_pool_cells(boxes, stride: float, image_sizes=None) -> np.ndarray:
    """Inclusive cell range ``(sw, sh, ew, eh)`` RoIPool reads, per box: ``(K, 4)`` floats.

    Contract (``ROI_OPS.md``): ``sw = round(x1*s)`` ... with ``s = 1/stride``, size
    ``max(ew - sw + 1, 1)`` cells; the union of all bins is exactly those cells, clipped to the
    feature map when ``image_sizes`` (``(K, 2)`` as ``(W, H)`` of each box's image) is given.
    """
    b = _as_boxes(boxes)
    s = 1.0 / _check_stride(stride)
    start = round_half_away(b[:, :2] * s)  # (K, 2): sw, sh
    end = round_half_away(b[:, 2:] * s)  # (K, 2): ew, eh
    end = np.maximum(end, start)  # rw = max(ew - sw + 1, 1) -> at least one cell
    if image_sizes is not None:
        fsize = feature_sizes(np.broadcast_to(image_sizes, b[:, :2].shape), stride)
        start = _clip_known(start, 0, fsize - 1)
        end = _clip_known(end, 0, fsize - 1)
    return np.concatenate([start, end], axis=1)


def _clip_known(x: np.ndarray, lo, hi: np.ndarray) -> np.ndarray:
    """Clip to ``[lo, hi]`` where ``hi`` is known; an unknown (NaN) image size clips nothing."""
    return np.where(np.isfinite(hi), np.clip(x, lo, np.nan_to_num(hi, nan=np.inf)), x)


def read_region(boxes, stride: float, op: str = "roi_pool", image_sizes=None,
                aligned: bool = False) -> np.ndarray:
    """Image-space box ``(K, 4)`` that ``op`` reads for each input box ``(K, 4)``.

    - ``roi_pool``: cells ``sw..ew`` -> ``[sw*S, (ew+1)*S)`` (clipped to the map if sizes given).
    - ``roi_warp``: corners ``round(v*s)/s``; sampled region shifted by half a cell unless
      ``aligned``; a box thinner than one cell is widened to one cell (``rw = max(rw, 1)``).
    - ``roi_align``: the box itself, with the same half-cell shift and minimum size rule.
    """
    b = _as_boxes(boxes)
    S = _check_stride(stride)
    if op == "roi_pool":
        cells = roi_pool_cells(b, S, image_sizes)
        return np.concatenate([cells[:, :2] * S, (cells[:, 2:] + 1) * S], axis=1)
    if op not in ("roi_warp", "roi_align"):
        raise ValueError(f"op must be one of {REGION_OPS}, got {op!r}")
    f = b / S  # feature coordinates, (K, 4)
    if op == "roi_warp":
        f = round_half_away(f)
    if aligned:
        # samples at f - 0.5 read image position (f - 0.5 + 0.5) * S: exactly the box
        return f * S
    size = np.maximum(f[:, 2:] - f[:, :2], 1.0)  # rw = max(rw, 1) when not aligned
    f = np.concatenate([f[:, :2], f[:, :2] + size], axis=1)  # (K, 4)
    return (f + 0.5) * S  # sample at u reads the centre of cell u: half a cell to the right


def paired_iou(a, b) -> np.ndarray:
    """IoU of ``a[i]`` with ``b[i]`` (not all pairs), ``(K,)``; 0 where the union is empty."""
    a, b = _as_boxes(a), _as_boxes(b)
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
    b = _as_boxes(boxes)
    S = _check_stride(stride)
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
            lo, hi = _clip_known(lo, 0, lim), _clip_known(hi, 0, lim)
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
