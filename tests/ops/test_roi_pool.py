"""roi_pool: equal to torchvision's kernel, C rounding, module repr (reference and gradcheck:
test_roi_variants.py, for every op of the table)."""

import torch
import torchvision
from roi_shapes import SCALE

from detector.ops import RoIPool, roi_pool


def test_equals_torchvision(feat, rois):
    x = feat.float()
    expected = torchvision.ops.roi_pool(x, rois.float(), (3, 4), SCALE)
    torch.testing.assert_close(roi_pool(x, rois.float(), (3, 4), SCALE), expected, rtol=0, atol=0)


def test_half_coordinates_round_away_from_zero():
    """x1*s = 0.5 must snap to cell 1 (C round), not 0 (torch.round, half to even)."""
    x = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_pool(x, torch.tensor([[0, 0.5, 0.5, 2.5, 2.5]]), 1, 1.0)  # cells 1..3
    assert out.item() == 15.0
    out = roi_pool(x, torch.tensor([[0, 0.4, 0.4, 1.4, 1.4]]), 1, 1.0)  # cells 0..1
    assert out.item() == 5.0


def test_module_and_repr(feat, rois):
    module = RoIPool(3, 1 / 16)
    torch.testing.assert_close(module(feat, rois), roi_pool(feat, rois, 3, 1 / 16))
    assert repr(module) == "RoIPool(output_size=(3, 3), spatial_scale=0.0625)"
