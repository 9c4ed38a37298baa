"""The slides' worked example, value by value.

Image 800 x 576, stride 32 -> feature map 25 x 18 (W x H). The object at (x, y) = (300, 210)
with (w, h) = (230, 180) is the box (300, 210, 530, 390); on the map it starts at
(9.375, 6.5625) and measures 7.1875 x 5.625 cells; 3 x 3 bins are 2.3958 x 1.875 cells.
"""

import pytest
import torch
import torchvision

from detector.ops import roi_align, roi_pool

S = 1 / 32
H, W = 18, 25
BOX = torch.tensor([[0, 300.0, 210.0, 530.0, 390.0]], dtype=torch.float64)


def digits() -> torch.Tensor:
    """A map of one-decimal values like the slides' table: F[i, j] = ((3i + 7j) mod 10) / 10."""
    i = torch.arange(H, dtype=torch.float64)[:, None]
    j = torch.arange(W, dtype=torch.float64)[None, :]
    return (((3 * i + 7 * j) % 10) / 10).view(1, 1, H, W)


def test_feature_map_geometry():
    x1, y1, x2, y2 = (BOX[0, 1:] * S).tolist()
    assert (x1, y1) == (9.375, 6.5625)
    assert (x2 - x1, y2 - y1) == (7.1875, 5.625)
    assert (x2 - x1) / 3 == pytest.approx(2.3958, abs=1e-4) and (y2 - y1) / 3 == 1.875


def test_roi_pool_snaps_to_columns_9_to_17_rows_7_to_12():
    code = (100 * torch.arange(H)[:, None] + torch.arange(W)[None, :]).double().view(1, 1, H, W)  # 100*row + col
    cells = roi_pool(code, BOX, (6, 9), S)[0, 0]  # one cell per bin: the snapped region itself
    torch.testing.assert_close(cells, code[0, 0, 7:13, 9:18], rtol=0, atol=0)
    # 3 x 3: rows 7..12 in bins of 2, columns 9..17 in bins of 3; the max is each bin's last cell.
    expected = torch.tensor([[100 * (8 + 2 * ph) + 11 + 3 * pw for pw in range(3)] for ph in range(3)]).double()
    torch.testing.assert_close(roi_pool(code, BOX, 3, S)[0, 0], expected, rtol=0, atol=0)
    snapped = torch.tensor([[9 * 32, 7 * 32, 18 * 32, 13 * 32]], dtype=torch.float64)  # cells 9..17, 7..12
    assert snapped.tolist() == [[288.0, 224.0, 576.0, 416.0]]
    iou = torchvision.ops.box_iou(BOX[:, 1:], snapped).item()
    assert round(iou, 3) == 0.652  # a third of what the classifier sees is not the object


def test_roi_align_keeps_the_exact_start():
    columns = torch.arange(W, dtype=torch.float64).expand(1, 1, H, W).contiguous()  # F[i, j] = j
    rows = torch.arange(H, dtype=torch.float64)[:, None].expand(1, 1, H, W).contiguous()  # F[i, j] = i
    # One bin, one sample: its centre (9.375 + 7.1875/2, 6.5625 + 5.625/2), no snapping.
    assert roi_align(columns, BOX, 1, S, 1).item() == 9.375 + 7.1875 / 2
    assert roi_align(rows, BOX, 1, S, 1).item() == 6.5625 + 5.625 / 2


def lerp2(v00, v01, v10, v11, ly, lx):
    """Bilinear interpolation between the four neighbours (rows y0, y0+1; columns x0, x0+1)."""
    return (1 - ly) * (1 - lx) * v00 + (1 - ly) * lx * v01 + ly * (1 - lx) * v10 + ly * lx * v11


def test_bin_0_0_with_2x2_points_by_hand():
    # Bin (0, 0) spans x 9.375..11.7708, y 6.5625..8.4375; its 2 x 2 points sit at
    # x = 9.375 + 2.3958 * (1/4, 3/4) = 9.973958, 11.171875 and y = 6.5625 + 1.875 * (1/4, 3/4) = 7.03125, 7.96875.
    # Neighbours from F[i, j] = ((3i + 7j) mod 10) / 10:
    #   F[7, 9] = .4  F[7, 10] = .1  F[7, 11] = .8  F[7, 12] = .5
    #   F[8, 9] = .7  F[8, 10] = .4  F[8, 11] = .1  F[8, 12] = .8
    p1 = lerp2(0.4, 0.1, 0.7, 0.4, ly=0.03125, lx=0.973958333333333)  # (7.03125, 9.973958)
    p2 = lerp2(0.8, 0.5, 0.1, 0.8, ly=0.03125, lx=0.171875)  # (7.03125, 11.171875)
    p3 = lerp2(0.4, 0.1, 0.7, 0.4, ly=0.96875, lx=0.973958333333333)  # (7.96875, 9.973958)
    p4 = lerp2(0.8, 0.5, 0.1, 0.8, ly=0.96875, lx=0.171875)  # (7.96875, 11.171875)
    feat = digits()
    assert roi_align(feat, BOX, 3, S, 2, mode="avg")[0, 0, 0, 0].item() == pytest.approx((p1 + p2 + p3 + p4) / 4)
    assert roi_align(feat, BOX, 3, S, 2, mode="max")[0, 0, 0, 0].item() == pytest.approx(max(p1, p2, p3, p4))


# Sample coordinates of the 3 x 3 output, worked out from start + bin * (index + (k + 1/2) / points).
POINTS = {
    2: (
        [7.03125, 7.96875, 8.90625, 9.84375, 10.78125, 11.71875],
        [9.973958333, 11.171875, 12.369791667, 13.567708333, 14.765625, 15.963541667],
    ),
    3: (
        [6.875, 7.5, 8.125, 8.75, 9.375, 10.0, 10.625, 11.25, 11.875],
        [
            9.774305556,
            10.572916667,
            11.371527778,
            12.170138889,
            12.96875,
            13.767361111,
            14.565972222,
            15.364583333,
            16.163194444,
        ],
    ),
}


def _by_hand(feat: torch.Tensor, y: float, x: float) -> float:
    y0, x0 = int(y), int(x)  # all points are inside the map here, away from its last row/column
    f = feat[0, 0]
    return lerp2(f[y0, x0].item(), f[y0, x0 + 1].item(), f[y0 + 1, x0].item(), f[y0 + 1, x0 + 1].item(), y - y0, x - x0)


@pytest.mark.parametrize("points", [2, 3])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_3x3_roi_align_value_by_value(points, mode):
    feat = digits()
    ys, xs = POINTS[points]
    out = roi_align(feat, BOX, 3, S, points, mode=mode)[0, 0]
    for ph in range(3):
        for pw in range(3):
            values = [
                _by_hand(feat, y, x)
                for y in ys[ph * points : (ph + 1) * points]
                for x in xs[pw * points : (pw + 1) * points]
            ]
            expected = sum(values) / len(values) if mode == "avg" else max(values)
            assert out[ph, pw].item() == pytest.approx(expected, abs=1e-8), (ph, pw)
