"""The read-region model of detector.analysis.regions against the slides, a brute-force loop,
and the real RoIPool kernel (which cells does it actually read?)."""

import math

import numpy as np
import pytest
import torch

from detector.analysis.plots import op_color
from detector.analysis.regions import (
    feature_sizes,
    paired_iou,
    read_region,
    region_ops,
    roi_pool_bin_iou,
    roi_pool_cells,
    round_half_away,
)
from detector.ops import ROI_OPS
from detector.ops import round_half_away as ops_round_half_away

SLIDES_BOX = np.array([[300.0, 210.0, 530.0, 390.0]])
SLIDES_IMAGE = np.array([[800.0, 576.0]])


def c_round(v: float) -> float:
    """C's round(): half away from zero."""
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def brute_force(box, stride, out, img):
    """Literal per-box transcription of the RoIPool rule of docs/roi_ops.md (slow, obvious)."""
    x1, y1, x2, y2 = box
    s = 1.0 / stride
    W, H = math.ceil(img[0] / stride), math.ceil(img[1] / stride)
    sw, sh, ew, eh = (c_round(v * s) for v in box)
    rw, rh = max(ew - sw + 1, 1), max(eh - sh + 1, 1)
    # union of bins = cells [sw, sw + rw) x [sh, sh + rh), clipped to the map
    cx0, cx1 = min(max(sw, 0), W - 1), min(max(sw + rw - 1, 0), W - 1)
    cy0, cy1 = min(max(sh, 0), H - 1), min(max(sh + rh - 1, 0), H - 1)
    region = (cx0 * stride, cy0 * stride, (cx1 + 1) * stride, (cy1 + 1) * stride)

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0

    bin_ious = []
    bw, bh = rw / out, rh / out
    for ph in range(out):
        for pw in range(out):
            ys = min(max(math.floor(ph * bh) + sh, 0), H)
            ye = min(max(math.ceil((ph + 1) * bh) + sh, 0), H)
            xs = min(max(math.floor(pw * bw) + sw, 0), W)
            xe = min(max(math.ceil((pw + 1) * bw) + sw, 0), W)
            q = (xs * stride, ys * stride, xe * stride, ye * stride)
            tw, th = (x2 - x1) / out, (y2 - y1) / out
            t = (x1 + pw * tw, y1 + ph * th, x1 + (pw + 1) * tw, y1 + (ph + 1) * th)
            bin_ious.append(iou(q, t))
    return region, iou(box, region), sum(bin_ious) / len(bin_ious)


def test_round_half_away_from_zero():
    np.testing.assert_array_equal(round_half_away(np.array([0.5, 1.5, 2.5, -0.5, -2.5, 2.4])),
                                  [1, 2, 3, -1, -3, 2])


def test_rounding_is_the_ops_own():
    """The largest double below 0.5 stays 0: floor(|v| + 0.5), the analysis's old copy, gave 1
    (the sum rounds to 1.0); now it is detector.ops.round_half_away itself."""
    below_half = 0.49999999999999994
    v = np.array([below_half, -below_half, 7.5, -7.5])
    np.testing.assert_array_equal(round_half_away(v), [0, 0, 8, -8])
    np.testing.assert_array_equal(round_half_away(v), ops_round_half_away(torch.from_numpy(v)).numpy())


def test_region_ops_and_colours_come_from_the_variant_table():
    assert region_ops() == tuple(n for n, s in ROI_OPS.items() if s.region is not None)
    assert region_ops()[:3] == ("roi_pool", "roi_warp", "roi_align") and "prroi_pool" not in region_ops()
    assert all(op_color(n) == s.color for n, s in ROI_OPS.items()) and op_color("no_such_op") == "tab:gray"
    for name in region_ops():  # read_region runs each op's own region function
        np.testing.assert_array_equal(read_region(SLIDES_BOX, 32, name), ROI_OPS[name].region(SLIDES_BOX, 32.0))


def test_slides_box_snaps_to_cols_9_17_rows_7_12_iou_0652():
    np.testing.assert_array_equal(feature_sizes(SLIDES_IMAGE, 32), [[25, 18]])
    np.testing.assert_array_equal(roi_pool_cells(SLIDES_BOX, 32, SLIDES_IMAGE), [[9, 7, 17, 12]])
    region = read_region(SLIDES_BOX, 32, "roi_pool", SLIDES_IMAGE)
    np.testing.assert_array_equal(region, [[288, 224, 576, 416]])
    assert paired_iou(SLIDES_BOX, region)[0] == pytest.approx(0.652, abs=5e-4)
    # the exact value: 230*166 / (230*180 + 288*192 - 230*166)
    assert paired_iou(SLIDES_BOX, region)[0] == pytest.approx(38180 / 58516, rel=1e-12)


def test_roi_align_aligned_reads_the_box_and_warp_snaps_corners():
    np.testing.assert_allclose(read_region(SLIDES_BOX, 32, "roi_align", aligned=True), SLIDES_BOX)
    # aligned=False: half a cell to the right/bottom under the footprint model
    np.testing.assert_allclose(read_region(SLIDES_BOX, 32, "roi_align"), SLIDES_BOX + 16)
    # roi_warp: 9.375->9, 6.5625->7, 16.5625->17, 12.1875->12 cells
    np.testing.assert_allclose(read_region(SLIDES_BOX, 32, "roi_warp", aligned=True),
                               [[288, 224, 544, 384]])
    # a box thinner than a cell is widened to one cell when not aligned
    thin = np.array([[100.0, 100.0, 104.0, 200.0]])
    r = read_region(thin, 32, "roi_align")
    assert r[0, 2] - r[0, 0] == pytest.approx(32.0)


@pytest.mark.parametrize("stride,out", [(32, 7), (16, 3), (32, 2)])
def test_vectorized_agrees_with_brute_force_loop(stride, out):
    rng = np.random.default_rng(stride * 10 + out)
    K = 400
    img = rng.uniform(100, 900, size=(K, 2))
    xy = rng.uniform(0, 1, size=(K, 2)) * img * 0.9
    wh = np.exp(rng.uniform(np.log(2), np.log(600), size=(K, 2)))
    boxes = np.concatenate([xy, np.minimum(xy + wh, img + 40)], axis=1)  # some spill past the image
    boxes[:10] = np.round(boxes[:10] / (stride / 2)) * (stride / 2)  # exact half-cell ties
    region = read_region(boxes, stride, "roi_pool", img)
    iou = paired_iou(boxes, region)
    bin_iou = roi_pool_bin_iou(boxes, stride, out, img)
    for k in range(K):
        r, i, b = brute_force(tuple(boxes[k]), stride, out, tuple(img[k]))
        np.testing.assert_allclose(region[k], r, err_msg=f"box {boxes[k]}")
        assert iou[k] == pytest.approx(i, abs=1e-12), boxes[k]
        assert bin_iou[k] == pytest.approx(b, abs=1e-12), boxes[k]


def test_cells_match_what_the_roi_pool_kernel_reads():
    """One channel per feature cell, one-hot: output channel c is 1 in a bin iff cell c is in it.

    torchvision's kernel is the reference docs/roi_ops.md says detector.ops.roi_pool equals.
    """
    from torchvision.ops import roi_pool

    stride, H, W, out = 32, 9, 11, 3
    img = np.array([[W * stride, H * stride]], dtype=np.float64)
    feats = torch.eye(H * W).reshape(1, H * W, H, W)  # (1, C=H*W, H, W)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1, (60, 2)) * img * 0.8
    boxes = np.concatenate([xy, xy + rng.uniform(4, 200, (60, 2))], axis=1)
    boxes[0] = [300, 210, 352, 270]
    rois = torch.cat([torch.zeros(60, 1), torch.from_numpy(boxes).float()], dim=1)
    pooled = roi_pool(feats, rois, out, 1.0 / stride)  # (K, H*W, out, out)
    read = pooled.amax(dim=(2, 3)).reshape(-1, H, W) > 0  # (K, H, W) cells read by any bin
    cells = roi_pool_cells(boxes, stride, img)
    for k in range(len(boxes)):
        rows = torch.nonzero(read[k].any(dim=1)).flatten()
        cols = torch.nonzero(read[k].any(dim=0)).flatten()
        got = [cols.min().item(), rows.min().item(), cols.max().item(), rows.max().item()]
        np.testing.assert_array_equal(cells[k], got, err_msg=f"box {boxes[k]}")
        assert read[k].sum().item() == (got[2] - got[0] + 1) * (got[3] - got[1] + 1)  # a full rectangle


def test_bad_input_raises_value_error_naming_it():
    with pytest.raises(ValueError, match="shape"):
        read_region(np.zeros((3, 5)), 32)
    with pytest.raises(ValueError, match="stride"):
        read_region(SLIDES_BOX, 0)
    with pytest.raises(ValueError, match="op must be one of"):
        read_region(SLIDES_BOX, 32, "roi_magic")
    with pytest.raises(ValueError, match="output_size"):
        roi_pool_bin_iou(SLIDES_BOX, 32, 0)
