"""CUDA: every op equals its CPU result (values and gradients); gradcheck on the GPU paths.

``OPS`` pins the GPU paths that matter (adaptive grids, sampling_ratio 3, aligned max);
:func:`test_cuda_every_table_variant_equals_cpu` adds every op and option combination of the
variant table (plugins and the toy op included), built by name.

All tests carry ``pytest.mark.cuda`` and are skipped where no GPU exists (tests/conftest.py).
"""

import math

import pytest
import torch
from roi_shapes import SCALE
from roi_variants import case_id, cases, registered

from detector.ops import build_roi_op, prroi_pool, roi_align, roi_pool, roi_warp

pytestmark = pytest.mark.cuda

OPS = {
    "roi_pool": lambda x, b: roi_pool(x, b, (3, 4), SCALE),
    "roi_align_avg": lambda x, b: roi_align(x, b, (3, 4), SCALE, 2, True),
    "roi_align_max": lambda x, b: roi_align(x, b, (3, 4), SCALE, -1, False, "max"),
    "roi_align_max_aligned": lambda x, b: roi_align(x, b, (3, 4), SCALE, 3, True, "max"),
    "roi_warp_avg": lambda x, b: roi_warp(x, b, (3, 4), SCALE, -1),
    "roi_warp_max": lambda x, b: roi_warp(x, b, (3, 4), SCALE, 2, False, "max"),
    "prroi_pool": lambda x, b: prroi_pool(x, b, (3, 4), SCALE),
}


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_equals_cpu(feat, rois, name, dtype):
    op = OPS[name]
    boxes = rois.to(dtype).clone()
    boxes[5, 2] = math.nan  # a non-finite row too
    results = []
    for device in ("cpu", "cuda"):
        x = feat.to(device, dtype).requires_grad_(True)
        out = op(x, boxes.to(device))
        out.backward(torch.ones_like(out))
        results.append((out.cpu(), x.grad.cpu()))
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(results[1][0], results[0][0], **tol)
    torch.testing.assert_close(results[1][1], results[0][1], **tol)


@pytest.mark.parametrize("name", ["roi_align_max", "roi_align_max_aligned", "roi_warp_max", "prroi_pool"])
def test_cuda_gradcheck(name):
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g).cuda().requires_grad_(True)
    boxes = torch.tensor([[0, 1.3, 0.7, 9.1, 8.2], [1, -2.0, 3.1, 5.2, 14.0]], dtype=torch.float64).cuda()
    assert torch.autograd.gradcheck(lambda t: OPS[name](t, boxes), (x,))


def test_cuda_prroi_box_gradcheck():
    g = torch.Generator().manual_seed(13)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g).cuda()
    index = torch.tensor([[0.0], [1.0]], dtype=torch.float64).cuda()
    coords = (
        torch.tensor([[1.3, 0.7, 9.1, 8.2], [-2.1, 3.1, 5.2, 14.0]], dtype=torch.float64).cuda().requires_grad_(True)
    )
    assert torch.autograd.gradcheck(lambda b: prroi_pool(x, torch.cat([index, b], 1), 2, 0.5), (coords,))


@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_half_types(feat, rois, name, dtype):
    x = feat.to("cuda", dtype).requires_grad_(True)
    out = OPS[name](x, rois.float().cuda())  # float32 boxes, as autocast gives them
    assert out.dtype == dtype and torch.isfinite(out.float()).all()
    out.float().sum().backward()
    assert x.grad.dtype == dtype


def test_cuda_device_mismatch(feat, rois):
    with pytest.raises(ValueError, match="boxes is on cpu but input is on cuda"):
        roi_align(feat.cuda(), rois, 2, SCALE)


TABLE_CASES = cases({"sampling_ratio": (2, -1), "aligned": (False, True)})


@pytest.mark.parametrize("name, options", TABLE_CASES, ids=[case_id(n, o) for n, o in TABLE_CASES])
def test_cuda_every_table_variant_equals_cpu(feat, rois, name, options):
    with registered(name):
        module = build_roi_op(name, (3, 4), SCALE, **options)
        results = []
        for device in ("cpu", "cuda"):
            x = feat.to(device).requires_grad_(True)
            out = module(x, rois.to(device))
            out.backward(torch.ones_like(out))
            results.append((out.cpu(), x.grad.cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-9, atol=1e-10)
