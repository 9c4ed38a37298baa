"""roi_align (avg and max) against torchvision and across the paths of each mode (the slow reference and
gradcheck for every option: test_roi_variants.py).

Internals on purpose: the C++ and PyTorch paths of each mode (``_align_avg``, ``_align_max``) are
tested against each other, which the public function (one path per device) cannot show.
"""

import pytest
import torch
import torchvision
from roi_reference import bilinear, random_rois, roi_align_ref
from roi_shapes import SCALE

from detector.ops import RoIAlign, roi_align
from detector.ops._align_avg import align_avg_cpp, align_avg_torchvision
from detector.ops._align_max import align_max_cpp, align_max_torch
from detector.ops._extension import load_extension

needs_cpp = pytest.mark.skipif(load_extension() is None, reason="C++ extension unavailable (fallback in use)")


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, 3, -1])
def test_avg_equals_torchvision_and_reference_does_too(feat, rois, aligned, sampling_ratio):
    """The reference is written from the contract; torchvision agreeing validates both."""
    x = feat.float()
    tv = torchvision.ops.roi_align(x, rois.float(), (3, 4), SCALE, sampling_ratio, aligned)
    torch.testing.assert_close(roi_align(x, rois.float(), (3, 4), SCALE, sampling_ratio, aligned), tv, rtol=0, atol=0)
    tv64 = torchvision.ops.roi_align(feat, rois, (3, 4), SCALE, sampling_ratio, aligned)
    ref = roi_align_ref(feat, rois, 3, 4, SCALE, sampling_ratio, aligned, "avg")
    torch.testing.assert_close(tv64, ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_max_is_at_least_avg_and_at_most_max_of_neighbours(feat, rois, aligned, sampling_ratio):
    avg = roi_align(feat, rois, 3, SCALE, sampling_ratio, aligned, "avg")
    mx = roi_align(feat, rois, 3, SCALE, sampling_ratio, aligned, "max")
    assert (mx >= avg - 1e-12).all()
    assert (mx <= feat.max() + 1e-12).all()


def _gradcheck_inputs():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.tensor(
        [[0, 1.3, 0.7, 9.1, 8.2], [1, -2.0, 3.1, 5.2, 14.0], [1, 4.4, 4.1, 4.9, 4.3], [0, 11.0, 9.0, 15.6, 13.9]],
        dtype=torch.float64,
    )
    return x, boxes


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_gradcheck_max_paths(path):
    if path == "cpp" and load_extension() is None:
        pytest.skip("C++ extension unavailable")
    fn = align_max_cpp if path == "cpp" else align_max_torch
    x, boxes = _gradcheck_inputs()
    assert torch.autograd.gradcheck(lambda t: fn(t, boxes, 2, 3, 0.5, 3, False), (x,))


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
def test_max_cpp_and_torch_paths_agree(dtype, aligned, sampling_ratio):
    """The C++ kernel (CPU) and the vectorized PyTorch path (CUDA, no compiler) are one function."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 16, 20, 24, generator=g, dtype=dtype)
    rois = torch.cat([random_rois(g, 3, 20, 24, 0.25, dtype) for _ in range(4)])
    out_grad = torch.randn(rois.shape[0], 16, 5, 4, generator=g, dtype=dtype)
    results = []
    for fn in (align_max_cpp, align_max_torch):
        xg = x.clone().requires_grad_(True)
        out = fn(xg, rois, 5, 4, 0.25, sampling_ratio, aligned)
        out.backward(out_grad)
        results.append((out, xg.grad))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[0][0], results[1][0], **tol)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_max_tie_goes_to_first_sample(path):
    """Constant map: every sample ties, so the gradient must reach only the first sample's neighbours."""
    if path == "cpp" and load_extension() is None:
        pytest.skip("C++ extension unavailable")
    fn = align_max_cpp if path == "cpp" else align_max_torch
    x = torch.ones(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    box = torch.tensor([[0, 1.2, 1.4, 4.2, 4.6]], dtype=torch.float64)
    fn(x, box, 1, 1, 1.0, 2, False).sum().backward()
    # First sample (iy=0, ix=0): y = 1.4 + 0.5 * 3.2 / 2 = 2.2, x = 1.2 + 0.5 * 3.0 / 2 = 1.95.
    expected = torch.zeros(6, 6, dtype=torch.float64)
    expected[2, 1], expected[2, 2] = 0.8 * 0.05, 0.8 * 0.95
    expected[3, 1], expected[3, 2] = 0.2 * 0.05, 0.2 * 0.95
    torch.testing.assert_close(x.grad[0, 0], expected)


def test_max_gradient_goes_to_argmax_sample_neighbours():
    """Distinct values: gradient = bilinear weights of the arg-max sample (reference computed here)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, generator=g, requires_grad=True)
    box = torch.tensor([[0, 0.3, 0.6, 3.9, 4.1]], dtype=torch.float64)
    roi_align(x, box, 1, 1.0, 3, False, "max").sum().backward()
    best, best_grad = None, None
    for iy in range(3):
        for ix in range(3):
            y, xx = 0.6 + (iy + 0.5) * 3.5 / 3, 0.3 + (ix + 0.5) * 3.6 / 3
            probe = torch.zeros(1, 5, 5, dtype=torch.float64, requires_grad=True)
            value = bilinear(x.detach()[0], y, xx)
            if best is None or value.item() > best:
                best = value.item()
                bilinear(probe, y, xx).sum().backward()
                best_grad = probe.grad
    torch.testing.assert_close(x.grad[0], best_grad)


def test_module_matches_function_and_repr(feat, rois):
    module = RoIAlign((3, 4), SCALE, sampling_ratio=2, aligned=True, mode="max")
    torch.testing.assert_close(module(feat, rois), roi_align(feat, rois, (3, 4), SCALE, 2, True, "max"))
    assert repr(module) == "RoIAlign(output_size=(3, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True, mode='max')"


@needs_cpp
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [1, 2, -1])
@pytest.mark.parametrize("channels_last", [False, True])
def test_avg_cpp_kernel_equals_torchvision(dtype, aligned, sampling_ratio, channels_last):
    """Our CPU avg kernel replaces torchvision's there: forward bit for bit, backward to rounding,
    on boxes that leave the map, zero-size boxes and both memory layouts."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(3, 20, 20, 24, generator=g, dtype=dtype)  # 20 channels: one full block of 16 and a tail
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = torch.cat([random_rois(g, 3, 20, 24, 0.25, dtype) for _ in range(4)])
    rois[0, 3], rois[1, 4] = rois[0, 1], rois[1, 2]  # zero width, zero height
    out_grad = torch.randn(rois.shape[0], 20, 5, 4, generator=g, dtype=dtype)
    results = []
    for fn in (align_avg_cpp, align_avg_torchvision):
        xg = x.clone().requires_grad_(True)
        out = fn(xg, rois, 5, 4, 0.25, sampling_ratio, aligned)
        out.backward(out_grad)
        results.append((out, xg.grad))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(results[0][1], results[1][1], **tol)


@needs_cpp
def test_avg_cpp_gradcheck_and_empty():
    x, boxes = _gradcheck_inputs()
    assert torch.autograd.gradcheck(lambda t: align_avg_cpp(t, boxes, 2, 3, 0.5, 3, False), (x,))
    out = align_avg_cpp(x, boxes[:0], 2, 3, 0.5, 2, False)
    assert out.shape == (0, 2, 2, 3)
    out.sum().backward()
    assert x.grad.abs().max() == 0


def test_avg_uses_the_cpp_kernel_on_cpu_when_built(monkeypatch, feat, rois):
    """The dispatch really runs our kernel on the CPU (and torchvision's without the extension)."""
    import detector.ops._align_avg as avg_module

    calls = []
    real = avg_module.align_avg_cpp
    monkeypatch.setattr(avg_module, "align_avg_cpp", lambda *a: calls.append("cpp") or real(*a))
    roi_align(feat, rois, 2, SCALE, 2, False, "avg")
    assert calls == (["cpp"] if load_extension() is not None else [])
    monkeypatch.setattr(avg_module, "load_extension", lambda: None)
    out = roi_align(feat, rois, 2, SCALE, 2, False, "avg")
    assert calls == (["cpp"] if load_extension() is not None else [])
    torch.testing.assert_close(out, roi_align_ref(feat, rois, 2, 2, SCALE, 2, False, "avg"), rtol=1e-10, atol=1e-12)
