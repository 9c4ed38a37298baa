"""The image region each ROI op reads: the ``region`` functions of the variant table.

An ROI op never sees the true box: RoIPool snaps it to whole feature cells (origin, then
width/height), RoIWarp snaps its corners to the grid and then samples, RoIAlign samples the
box as given. The functions here map a batch of image-space boxes to the image-space box
each op reads, by the rules of ``docs/roi_ops.md``, so :mod:`detector.analysis` can measure
the loss of overlap before any training. They live beside the ops (not in the analysis)
because the variant table (:mod:`.registry`) names each op's region function, and ``ops``
imports nothing above it.

Region function contract (what a plugin's ``RoiOpSpec.region`` must follow)::

    region(boxes: float64[K, 4], stride: float, image_sizes: float[K, 2] | None = None,
           aligned: bool = False) -> float64[K, 4]

``boxes`` are ``(x1, y1, x2, y2)`` in image pixels (checked with :func:`as_boxes`),
``stride`` a positive number (:func:`check_stride`), ``image_sizes`` each box's image as
``(W, H)`` (NaN where unknown) or None, ``aligned`` the op's option (ignored by ops without
it). Vectorized over boxes; no Python loop per box.

Footprint model (the slides' model, and RoIPool's own): feature cell ``j`` of a stride-``S``
map covers image pixels ``[j*S, (j+1)*S)``. Under it, RoIPool reading cells ``sw..ew``
reads the image box ``[sw*S, (ew+1)*S)``, and a bilinear sample at feature coordinate ``u``
reads image position ``(u + 0.5) * S`` (the centre of cell ``u``), which is why the
``aligned=False`` variants read the box shifted by half a cell (detectron2's reason for
``aligned=True``). Real backbones with padded convolutions shift every cell centre by a
backbone-specific constant; the analysis keeps the simple model and says so.

Example (the slides' box at stride 32, RoIPool reads columns 9..17 and rows 7..12):
    >>> roi_pool_region(np.array([[300.0, 210.0, 530.0, 390.0]]), 32)
    array([[288., 224., 576., 416.]])
"""

from __future__ import annotations

import numpy as np
import torch

from ._common import round_half_away


def as_boxes(boxes) -> np.ndarray:
    """``boxes`` as ``float64[K, 4]``; ValueError (with the COCO conversion) for another shape."""
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(
            f"boxes must have shape (K, 4) as (x1, y1, x2, y2), got {arr.shape}; "
            "convert COCO (x, y, w, h) with x2 = x + w, y2 = y + h"
        )
    return arr


def check_stride(stride) -> float:
    """``stride`` as a float; ValueError unless finite and positive."""
    if not np.isfinite(stride) or stride <= 0:
        raise ValueError(f"stride must be a positive number (e.g. 16 or 32), got {stride!r}")
    return float(stride)


def round_half_away_np(x: np.ndarray) -> np.ndarray:
    """:func:`detector.ops.round_half_away` (the ops' own rule, the same code) on a float64 array."""
    return round_half_away(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).numpy()


def feature_sizes(image_sizes, stride: float) -> np.ndarray:
    """Feature-map size ``(W, H)`` per image: ``ceil(size / stride)``.

    ``ceil`` matches a backbone fed an image padded to a multiple of the stride (as
    torchvision's ``GeneralizedRCNNTransform`` pads); for the slides' 800 x 576 image at
    stride 32 it gives 25 x 18.
    """
    sizes = np.asarray(image_sizes, dtype=np.float64)
    return np.ceil(sizes / check_stride(stride) - 1e-9)


def clip_known(x: np.ndarray, lo, hi: np.ndarray) -> np.ndarray:
    """Clip to ``[lo, hi]`` where ``hi`` is known; an unknown (NaN) image size clips nothing."""
    return np.where(np.isfinite(hi), np.clip(x, lo, np.nan_to_num(hi, nan=np.inf)), x)


def roi_pool_cells(boxes, stride: float, image_sizes=None) -> np.ndarray:
    """Inclusive cell range ``(sw, sh, ew, eh)`` RoIPool reads, per box: ``(K, 4)`` floats.

    Contract (``docs/roi_ops.md``): ``sw = round(x1*s)`` ... with ``s = 1/stride``, size
    ``max(ew - sw + 1, 1)`` cells; the union of all bins is exactly those cells, clipped to the
    feature map when ``image_sizes`` (``(K, 2)`` as ``(W, H)`` of each box's image) is given.
    """
    b = as_boxes(boxes)
    s = 1.0 / check_stride(stride)
    start = round_half_away_np(b[:, :2] * s)  # (K, 2): sw, sh
    end = round_half_away_np(b[:, 2:] * s)  # (K, 2): ew, eh
    end = np.maximum(end, start)  # rw = max(ew - sw + 1, 1) -> at least one cell
    if image_sizes is not None:
        fsize = feature_sizes(np.broadcast_to(image_sizes, b[:, :2].shape), stride)
        start = clip_known(start, 0, fsize - 1)
        end = clip_known(end, 0, fsize - 1)
    return np.concatenate([start, end], axis=1)


def roi_pool_region(boxes, stride: float, image_sizes=None, aligned: bool = False) -> np.ndarray:
    """RoIPool: cells ``sw..ew`` -> ``[sw*S, (ew+1)*S)``, clipped to the map if sizes are given
    (``aligned`` does not exist for RoIPool and is ignored)."""
    S = check_stride(stride)
    cells = roi_pool_cells(boxes, S, image_sizes)
    return np.concatenate([cells[:, :2] * S, (cells[:, 2:] + 1) * S], axis=1)


def _sampled_region(f: np.ndarray, S: float, aligned: bool) -> np.ndarray:
    """Region read by bilinear samples over the feature-space box ``f`` (K, 4)."""
    if aligned:
        # samples at f - 0.5 read image position (f - 0.5 + 0.5) * S: exactly the box
        return f * S
    size = np.maximum(f[:, 2:] - f[:, :2], 1.0)  # rw = max(rw, 1) when not aligned
    f = np.concatenate([f[:, :2], f[:, :2] + size], axis=1)  # (K, 4)
    return (f + 0.5) * S  # sample at u reads the centre of cell u: half a cell to the right


def roi_warp_region(boxes, stride: float, image_sizes=None, aligned: bool = False) -> np.ndarray:
    """RoIWarp: corners ``round(v*s)/s``; sampled region shifted by half a cell unless
    ``aligned``; a box thinner than one cell is widened to one cell (``rw = max(rw, 1)``)."""
    S = check_stride(stride)
    return _sampled_region(round_half_away_np(as_boxes(boxes) / S), S, aligned)


def roi_align_region(boxes, stride: float, image_sizes=None, aligned: bool = False) -> np.ndarray:
    """RoIAlign: the box itself, with RoIWarp's half-cell shift and minimum size rule."""
    S = check_stride(stride)
    return _sampled_region(as_boxes(boxes) / S, S, aligned)
