"""prroi_pool's two paths against an independent quadrature reference; gradients into features and boxes
(the public op against the reference: test_roi_variants.py).

Internals on purpose: ``prroi_cpp`` / ``prroi_torch`` are the two paths the public op picks between.
"""

import pytest
import torch
from roi_reference import prroi_ref, random_rois
from roi_shapes import SCALE

from detector.ops import PrRoIPool, prroi_pool
from detector.ops._extension import load_extension
from detector.ops.prroi_pool import prroi_cpp, prroi_torch

PATHS = {"cpp": prroi_cpp, "torch": prroi_torch}


def _path(name):
    if name == "cpp" and load_extension() is None:
        pytest.skip("C++ extension unavailable (fallback in use)")
    return PATHS[name]


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_each_path_matches_reference(feat, rois, path):
    expected = prroi_ref(feat, rois, 2, 3, SCALE)
    torch.testing.assert_close(_path(path)(feat, rois, 2, 3, SCALE), expected, rtol=1e-10, atol=1e-12)


def test_linear_map_gives_bin_centres():
    """f(y, x) = y inside the map (bilinear interpolation of a linear ramp): bin mean = bin centre."""
    x = torch.arange(8, dtype=torch.float64).view(1, 1, 8, 1).expand(1, 1, 8, 8).contiguous()
    out = prroi_pool(x, torch.tensor([[0, 1.0, 1.5, 6.0, 5.5]], dtype=torch.float64), (2, 1), 1.0)
    torch.testing.assert_close(out.flatten(), torch.tensor([2.5, 4.5], dtype=torch.float64))


def test_zero_area_and_reversed_boxes_give_zero(feat):
    boxes = torch.tensor(
        [[0, 3.0, 2.0, 3.0, 8.0], [1, 3.0, 2.0, 9.0, 2.0], [0, 9.0, 8.0, 3.0, 2.0]], dtype=torch.float64
    )
    assert prroi_pool(feat, boxes, 2, SCALE).abs().max() == 0


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_gradcheck_features_and_boxes(path):
    fn = _path(path)
    g = torch.Generator().manual_seed(9)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.tensor([[0.0], [1.0], [1.0], [0.0]], dtype=torch.float64)  # not perturbed by gradcheck
    coords = torch.tensor(
        [[1.3, 0.7, 9.1, 8.2], [-2.1, 3.1, 5.2, 14.0], [4.4, 4.1, 4.9, 4.3], [11.0, 9.0, 15.6, 13.9]],
        dtype=torch.float64,
        requires_grad=True,
    )
    assert torch.autograd.gradcheck(lambda t, b: fn(t, torch.cat([index, b], 1), 2, 3, 0.5), (x, coords))


def test_public_function_gradients_reach_boxes_in_both_formats():
    g = torch.Generator().manual_seed(10)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    first = torch.tensor([[1.3, 0.7, 9.1, 8.2]], dtype=torch.float64, requires_grad=True)
    second = torch.tensor([[-2.1, 3.1, 5.2, 11.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, a, b: prroi_pool(t, [a, b], 2, 0.5), (x, first, second))


def test_cpp_and_torch_paths_agree_with_box_gradients():
    if load_extension() is None:
        pytest.skip("C++ extension unavailable")
    g = torch.Generator().manual_seed(11)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 2e-4)):
        x = torch.randn(3, 16, 20, 24, generator=g, dtype=dtype)
        rois = torch.cat([random_rois(g, 3, 20, 24, 0.25, dtype) for _ in range(4)])
        out_grad = torch.randn(rois.shape[0], 16, 5, 4, generator=g, dtype=dtype)
        results = []
        for fn in (prroi_cpp, prroi_torch):
            xg, rg = x.clone().requires_grad_(True), rois.clone().requires_grad_(True)
            out = fn(xg, rg, 5, 4, 0.25)
            out.backward(out_grad)
            results.append((out, xg.grad, rg.grad))
        for a, b in zip(*results):
            torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_module_and_repr(feat, rois):
    module = PrRoIPool((2, 3), SCALE)
    torch.testing.assert_close(module(feat, rois), prroi_pool(feat, rois, (2, 3), SCALE))
    assert repr(module) == "PrRoIPool(output_size=(2, 3), spatial_scale=0.5)"
