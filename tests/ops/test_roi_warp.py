"""roi_warp = roi_align on boxes snapped to the feature grid (half away from zero)."""

import pytest
import torch
from conftest import BATCH, SCALE
from roi_reference import as_list, list_order, roi_warp_ref

from detector.ops import RoIWarp, roi_align, roi_warp
from detector.ops._common import round_half_away


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_half_away_from_zero(dtype):
    below_half = 0.49999997 if dtype == torch.float32 else 0.49999999999999994  # largest value < 0.5
    v = torch.tensor([below_half, 0.5, 1.5, 2.5, -0.5, -2.5, -below_half, 3.2, -3.7, 0.0], dtype=dtype)
    expected = torch.tensor([0.0, 1, 2, 3, -1, -3, 0, 3, -4, 0], dtype=dtype)
    assert torch.equal(round_half_away(v), expected)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
def test_matches_reference(feat, rois, mode, aligned, sampling_ratio):
    expected = roi_warp_ref(feat, rois, 3, 4, SCALE, sampling_ratio, aligned, mode)
    out = roi_warp(feat, rois, (3, 4), SCALE, sampling_ratio, aligned, mode)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)
    listed = roi_warp(feat, as_list(rois, BATCH), (3, 4), SCALE, sampling_ratio, aligned, mode)
    torch.testing.assert_close(listed, expected[list_order(rois, BATCH)], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_snapping_is_half_away_from_zero(feat, mode):
    """At s = 0.5: 5 -> 2.5 -> 3 (torch.round would give 2), -1 -> -0.5 -> -1 (not 0), 7 -> 3.5 -> 4."""
    boxes = torch.tensor([[0, 5.0, -1.0, 7.0, 9.0]], dtype=torch.float64)
    snapped = torch.tensor([[0, 6.0, -2.0, 8.0, 10.0]], dtype=torch.float64)  # 3/s, -1/s, 4/s, 5/s
    out = roi_warp(feat, boxes, 2, 0.5, 2, False, mode)
    torch.testing.assert_close(out, roi_align(feat, snapped, 2, 0.5, 2, False, mode), rtol=0, atol=0)
    assert not torch.allclose(out, roi_align(feat, boxes, 2, 0.5, 2, False, mode))


@pytest.mark.parametrize("mode", ["avg", "max"])
def test_gradcheck(mode):
    g = torch.Generator().manual_seed(8)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.tensor([[0, 1.3, 0.7, 9.1, 8.2], [1, -2.0, 3.1, 5.2, 14.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: roi_warp(t, boxes, (2, 3), 0.5, 2, False, mode), (x,))


def test_module_and_repr(feat, rois):
    module = RoIWarp(2, SCALE, sampling_ratio=-1, mode="max")
    torch.testing.assert_close(module(feat, rois), roi_warp(feat, rois, 2, SCALE, -1, False, "max"))
    assert (
        repr(module) == "RoIWarp(output_size=(2, 2), spatial_scale=0.5, sampling_ratio=-1, aligned=False, mode='max')"
    )
