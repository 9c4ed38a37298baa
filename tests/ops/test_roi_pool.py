"""roi_pool against the slow reference and torchvision's kernel."""

import pytest
import torch
import torchvision
from conftest import BATCH, SCALE
from roi_reference import as_list, list_order, roi_pool_ref

from detector.ops import RoIPool, roi_pool


@pytest.mark.parametrize("output_size", [(3, 4), 1, (5, 2)])
def test_matches_reference_both_box_formats(feat, rois, output_size):
    ph, pw = output_size if isinstance(output_size, tuple) else (output_size, output_size)
    expected = roi_pool_ref(feat, rois, ph, pw, SCALE)
    torch.testing.assert_close(roi_pool(feat, rois, output_size, SCALE), expected, rtol=0, atol=0)
    listed = roi_pool(feat, as_list(rois, BATCH), output_size, SCALE)
    torch.testing.assert_close(listed, expected[list_order(rois, BATCH)], rtol=0, atol=0)


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


def test_gradcheck():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.tensor(
        [[0, 1.3, 0.7, 9.1, 8.2], [1, -2.0, 3.1, 5.2, 14.0], [1, 4.4, 4.1, 4.9, 4.3]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, boxes, (2, 3), 0.5), (x,))


def test_module_and_repr(feat, rois):
    module = RoIPool(3, 1 / 16)
    torch.testing.assert_close(module(feat, rois), roi_pool(feat, rois, 3, 1 / 16))
    assert repr(module) == "RoIPool(output_size=(3, 3), spatial_scale=0.0625)"
