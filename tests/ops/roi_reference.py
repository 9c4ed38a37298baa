"""Slow, obvious references for every ROI op, written line by line from docs/roi_ops.md.

Python loops over boxes, bins and sampling points, float64 throughout, no cleverness: the
point is that a reader can check each line against the contract. The production code
(torchvision dispatch, C++ kernels, vectorized PyTorch) is tested against these.

Non-finite coordinates: a box with any NaN/inf coordinate reads 0 in every bin (the
contract's "the affected samples read as 0", applied to the whole box).

The adaptive RoIAlign grid is capped at ``MAX_GRID`` points per bin side, as the ops'
docstrings restate (``detector.ops.MAX_SAMPLING_GRID``; issue 12): only bins over
64 feature cells are affected.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

MAX_GRID = 64  # most sampling points per bin side (the ops' documented cap)


def round_half_away(v: float) -> int:
    """C's round(): 2.5 -> 3, -2.5 -> -3, 0.49999999999999994 -> 0."""
    whole = math.trunc(v)
    return whole + (int(math.copysign(1, v)) if abs(v - whole) >= 0.5 else 0)


def _finite(roi: list[float]) -> bool:
    return all(math.isfinite(v) for v in roi[1:])


def roi_pool_ref(feat: Tensor, rois: Tensor, ph_n: int, pw_n: int, s: float) -> Tensor:
    feat = feat.double()
    _, c, h, w = feat.shape
    out = torch.zeros(rois.shape[0], c, ph_n, pw_n, dtype=torch.float64)
    for k, roi in enumerate(rois.double().tolist()):
        if not _finite(roi):
            continue
        n = int(roi[0])
        sw, sh = round_half_away(roi[1] * s), round_half_away(roi[2] * s)
        ew, eh = round_half_away(roi[3] * s), round_half_away(roi[4] * s)
        rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
        bw, bh = rw / pw_n, rh / ph_n
        for ph in range(ph_n):
            for pw in range(pw_n):
                hs = min(max(math.floor(ph * bh) + sh, 0), h)
                he = min(max(math.ceil((ph + 1) * bh) + sh, 0), h)
                ws = min(max(math.floor(pw * bw) + sw, 0), w)
                we = min(max(math.ceil((pw + 1) * bw) + sw, 0), w)
                if he > hs and we > ws:
                    out[k, :, ph, pw] = feat[n, :, hs:he, ws:we].amax(dim=(1, 2))
    return out


def bilinear(plane: Tensor, y: float, x: float) -> Tensor:
    """docs/roi_ops.md "Bilinear value" at (y, x) for a (C, H, W) map; returns (C,)."""
    _, h, w = plane.shape
    if math.isnan(y) or math.isnan(x) or y < -1 or y > h or x < -1 or x > w:
        return torch.zeros(plane.shape[0], dtype=plane.dtype)
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = math.floor(y), math.floor(x)
    if y0 >= h - 1:
        y0 = y1 = h - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= w - 1:
        x0 = x1 = w - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return (
        (1 - ly) * (1 - lx) * plane[:, y0, x0]
        + (1 - ly) * lx * plane[:, y0, x1]
        + ly * (1 - lx) * plane[:, y1, x0]
        + ly * lx * plane[:, y1, x1]
    )


def roi_align_ref(
    feat: Tensor, rois: Tensor, ph_n: int, pw_n: int, s: float, sampling_ratio: int, aligned: bool, mode: str
) -> Tensor:
    feat = feat.double()
    _, c, _, _ = feat.shape
    out = torch.zeros(rois.shape[0], c, ph_n, pw_n, dtype=torch.float64)
    for k, roi in enumerate(rois.double().tolist()):
        if not _finite(roi):
            continue
        n = int(roi[0])
        off = 0.5 if aligned else 0.0
        sw, sh = roi[1] * s - off, roi[2] * s - off
        rw, rh = roi[3] * s - off - sw, roi[4] * s - off - sh
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bw, bh = rw / pw_n, rh / ph_n
        gh = sampling_ratio if sampling_ratio > 0 else min(math.ceil(rh / ph_n), MAX_GRID)
        gw = sampling_ratio if sampling_ratio > 0 else min(math.ceil(rw / pw_n), MAX_GRID)
        for ph in range(ph_n):
            for pw in range(pw_n):
                if gh <= 0 or gw <= 0:
                    continue  # no sampling point: 0
                values = []
                for iy in range(gh):  # row-major: y outer, x inner
                    for ix in range(gw):
                        y = sh + ph * bh + (iy + 0.5) * bh / gh
                        x = sw + pw * bw + (ix + 0.5) * bw / gw
                        values.append(bilinear(feat[n], y, x))
                if mode == "avg":
                    out[k, :, ph, pw] = sum(values) / len(values)
                else:  # elementwise maximum, one sample at a time (no reduction kernel)
                    out[k, :, ph, pw] = functools.reduce(torch.maximum, values)
    return out


def snap_rois(rois: Tensor, s: float) -> Tensor:
    """RoIWarp's box quantization: each coordinate -> round(v * s) / s (half away from zero)."""
    snapped = rois.double().clone()
    for k, roi in enumerate(rois.double().tolist()):
        if _finite(roi):
            snapped[k, 1:] = torch.tensor([round_half_away(v * s) / s for v in roi[1:]], dtype=torch.float64)
    return snapped


def roi_warp_ref(feat, rois, ph_n, pw_n, s, sampling_ratio, aligned, mode) -> Tensor:
    return roi_align_ref(feat, snap_rois(rois, s), ph_n, pw_n, s, sampling_ratio, aligned, mode)


def _hat(t: float) -> float:
    return max(0.0, 1.0 - abs(t))


def _f(plane: Tensor, y: float, x: float) -> Tensor:
    """f(y, x) = sum_ij F[i, j] hat(y - i) hat(x - j), only the (at most 4) nonzero terms."""
    _, h, w = plane.shape
    value = torch.zeros(plane.shape[0], dtype=plane.dtype)
    for i in (math.floor(y), math.floor(y) + 1):
        for j in (math.floor(x), math.floor(x) + 1):
            if 0 <= i < h and 0 <= j < w:
                value = value + plane[:, i, j] * _hat(y - i) * _hat(x - j)
    return value


def _pieces(lo: float, hi: float) -> list[tuple[float, float]]:
    """[lo, hi] cut at integers: f is bilinear on each piece."""
    cuts = [lo] + [float(v) for v in range(math.floor(lo) + 1, math.ceil(hi))] + [hi]
    return list(zip(cuts[:-1], cuts[1:]))


def prroi_ref(feat: Tensor, rois: Tensor, ph_n: int, pw_n: int, s: float) -> Tensor:
    """Bin integral by 2x2-point Gauss-Legendre per unit-cell piece: exact for bilinear pieces."""
    feat = feat.double()
    c = feat.shape[1]
    out = torch.zeros(rois.shape[0], c, ph_n, pw_n, dtype=torch.float64)
    g = 0.5 / math.sqrt(3.0)
    for k, roi in enumerate(rois.double().tolist()):
        if not _finite(roi):
            continue
        n = int(roi[0])
        x1, y1, x2, y2 = (v * s for v in roi[1:])
        bw, bh = max(x2 - x1, 0.0) / pw_n, max(y2 - y1, 0.0) / ph_n
        if bw * bh == 0:
            continue
        for ph in range(ph_n):
            for pw in range(pw_n):
                total = torch.zeros(c, dtype=torch.float64)
                for ya, yb in _pieces(y1 + ph * bh, y1 + (ph + 1) * bh):
                    for xa, xb in _pieces(x1 + pw * bw, x1 + (pw + 1) * bw):
                        weight = (yb - ya) * (xb - xa) / 4
                        for ty in (0.5 - g, 0.5 + g):
                            for tx in (0.5 - g, 0.5 + g):
                                total += weight * _f(feat[n], ya + ty * (yb - ya), xa + tx * (xb - xa))
                out[k, :, ph, pw] = total / (bh * bw)
    return out


def random_rois(
    generator: torch.Generator, batch: int, height: int, width: int, scale: float, dtype=torch.float64
) -> Tensor:
    """Boxes (image coordinates) covering the contract's corner cases, several images:

    ordinary boxes, zero width and/or height, partly outside (negative or beyond the map),
    wholly outside, and boxes smaller than one feature cell.
    """
    img_h, img_w = height / scale, width / scale
    cell = 1 / scale
    u = lambda: torch.rand((), generator=generator, dtype=torch.float64).item()  # noqa: E731
    rows = []
    for _ in range(6):  # ordinary
        x1, y1 = u() * img_w * 0.7, u() * img_h * 0.7
        rows.append([x1, y1, x1 + cell + u() * img_w * 0.5, y1 + cell + u() * img_h * 0.5])
    x1, y1 = u() * img_w, u() * img_h
    rows.append([x1, y1, x1, y1 + 2 * cell])  # zero width
    rows.append([x1, y1, x1 + 2 * cell, y1])  # zero height
    rows.append([x1, y1, x1, y1])  # zero size
    rows.append([-2.5 * cell, -1.5 * cell, 1.7 * cell, 2.2 * cell])  # partly outside, top-left
    rows.append([img_w - 1.3 * cell, img_h - 2.1 * cell, img_w + 2.4 * cell, img_h + 1.6 * cell])  # bottom-right
    rows.append([img_w + 3 * cell, 0.5 * cell, img_w + 6 * cell, 3 * cell])  # wholly outside (right)
    rows.append([-8 * cell, -9 * cell, -4.5 * cell, -3 * cell])  # wholly outside (top-left)
    for _ in range(3):  # sub-cell
        x1, y1 = u() * img_w * 0.9, u() * img_h * 0.9
        rows.append([x1, y1, x1 + u() * 0.9 * cell, y1 + u() * 0.9 * cell])
    boxes = torch.tensor([[float(v) for v in r] for r in rows], dtype=torch.float64)
    index = torch.randint(0, batch, (boxes.shape[0], 1), generator=generator).double()
    return torch.cat([index, boxes], 1).to(dtype)


def as_list(rois: Tensor, batch: int) -> list[Tensor]:
    """Tensor[K, 5] -> list[Tensor[L_i, 4]], one per image (the other box format)."""
    return [rois[rois[:, 0] == i, 1:] for i in range(batch)]


def list_order(rois: Tensor, batch: int) -> Tensor:
    """Row order of the K x 5 rows after a round trip through :func:`as_list`."""
    return torch.cat([torch.nonzero(rois[:, 0] == i).flatten() for i in range(batch)])
