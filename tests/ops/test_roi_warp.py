"""roi_warp = roi_align on boxes snapped to the feature grid (half away from zero); reference and
gradcheck: test_roi_variants.py."""

import pytest
import torch
from roi_shapes import SCALE

from detector.ops import RoIWarp, roi_align, roi_warp, round_half_away


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_half_away_from_zero(dtype):
    below_half = 0.49999997 if dtype == torch.float32 else 0.49999999999999994  # largest value < 0.5
    v = torch.tensor([below_half, 0.5, 1.5, 2.5, -0.5, -2.5, -below_half, 3.2, -3.7, 0.0], dtype=dtype)
    expected = torch.tensor([0.0, 1, 2, 3, -1, -3, 0, 3, -4, 0], dtype=dtype)
    assert torch.equal(round_half_away(v), expected)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_snapping_is_half_away_from_zero(feat, mode):
    """At s = 0.5: 5 -> 2.5 -> 3 (torch.round would give 2), -1 -> -0.5 -> -1 (not 0), 7 -> 3.5 -> 4."""
    boxes = torch.tensor([[0, 5.0, -1.0, 7.0, 9.0]], dtype=torch.float64)
    snapped = torch.tensor([[0, 6.0, -2.0, 8.0, 10.0]], dtype=torch.float64)  # 3/s, -1/s, 4/s, 5/s
    out = roi_warp(feat, boxes, 2, 0.5, 2, False, mode)
    torch.testing.assert_close(out, roi_align(feat, snapped, 2, 0.5, 2, False, mode), rtol=0, atol=0)
    assert not torch.allclose(out, roi_align(feat, boxes, 2, 0.5, 2, False, mode))


def test_module_and_repr(feat, rois):
    module = RoIWarp(2, SCALE, sampling_ratio=-1, mode="max")
    torch.testing.assert_close(module(feat, rois), roi_warp(feat, rois, 2, SCALE, -1, False, "max"))
    assert (
        repr(module) == "RoIWarp(output_size=(2, 2), spatial_scale=0.5, sampling_ratio=-1, aligned=False, mode='max')"
    )
