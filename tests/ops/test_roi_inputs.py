"""Every bad-input rule of docs/roi_ops.md, NaN/inf boxes, half types and K == 0, for every op of
detector.ops in the variant table (each mode, at two option settings: roi_variants.contract_variants)."""

import math

import pytest
import torch
from roi_shapes import SCALE
from roi_variants import REFERENCES, contract_variants

import detector.ops as ops
from detector.ops import get_roi_op, prroi_pool, roi_align, roi_warp


def _function(name: str, options: dict):
    """The op's function with ``options`` bound, and its slow reference (output size 2 x 2)."""
    resolved = get_roi_op(name).resolve_options(options)

    def op(x, b, size=2, s=SCALE):
        return getattr(ops, name)(x, b, size, s, **resolved)

    return op, lambda x, b: REFERENCES[name](x, b, 2, 2, SCALE, resolved)


# variant id -> (function with the op's options bound, loop reference), from the variant table
OPS = {vid: _function(name, options) for vid, (name, options) in contract_variants().items()}
NAMES = list(OPS)


def _box(index=0.0, dtype=torch.float64):
    return torch.tensor([[index, 1.0, 2.0, 9.0, 7.0]], dtype=dtype)


# ---------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("name", NAMES)
def test_wrong_box_shapes(feat, name):
    op = OPS[name][0]
    with pytest.raises(ValueError, match=r"boxes must have shape \[K, 5\]"):
        op(feat, torch.zeros(3, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"boxes must have shape \[K, 5\]"):
        op(feat, torch.zeros(5, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"boxes\[1\] must have shape \[K, 4\]"):
        op(feat, [torch.zeros(2, 4, dtype=torch.float64), torch.zeros(2, 5, dtype=torch.float64)])
    with pytest.raises(TypeError, match="boxes must be a Tensor"):
        op(feat, "boxes")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("index", [2.0, -1.0, 0.5, math.nan, math.inf])
def test_batch_index_outside_or_not_integral(feat, name, index):
    with pytest.raises(ValueError, match=r"boxes: batch index .* not an integer in \[0, 2\)"):
        OPS[name][0](feat, _box(index))


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [0, -3, (2, 0), (0, 2)])
def test_non_positive_output_size(feat, name, size):
    with pytest.raises(ValueError, match="output_size must be positive"):
        OPS[name][0](feat, _box(), size=size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [2.5, (2, 2, 2), "7", True])
def test_malformed_output_size(feat, name, size):
    with pytest.raises((TypeError, ValueError), match="output_size"):
        OPS[name][0](feat, _box(), size=size)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [0.0, -0.5, math.inf, math.nan])
def test_bad_spatial_scale(feat, name, scale):
    with pytest.raises(ValueError, match="spatial_scale"):
        OPS[name][0](feat, _box(), s=scale)


@pytest.mark.parametrize("name", NAMES)
def test_dtype_mismatch(feat, name):
    op = OPS[name][0]
    with pytest.raises(TypeError, match="boxes has dtype torch.float32 but input has torch.float64"):
        op(feat, _box(dtype=torch.float32))
    with pytest.raises(TypeError, match="boxes has dtype torch.int64"):
        op(feat, _box().long())
    with pytest.raises(TypeError, match="input must be float32/float64/float16/bfloat16"):
        op(feat.long(), _box())
    with pytest.raises(TypeError, match="boxes must all share one dtype"):
        op(feat.half(), [_box(dtype=torch.float16)[:, 1:], _box(dtype=torch.float32)[:, 1:]])


@pytest.mark.parametrize("name", NAMES)
def test_device_mismatch(feat, name):
    with pytest.raises(ValueError, match="boxes is on meta but input is on cpu"):
        OPS[name][0](feat, _box().to("meta"))


@pytest.mark.parametrize("name", NAMES)
def test_input_must_be_4d(feat, name):
    with pytest.raises(ValueError, match=r"input must be a Tensor\[N, C, H, W\]"):
        OPS[name][0](feat[0], _box())
    with pytest.raises(TypeError, match=r"input must be a Tensor\[N, C, H, W\]"):
        OPS[name][0](feat.numpy(), _box())


def test_align_options_checked(feat):
    with pytest.raises(ValueError, match="mode must be 'avg' or 'max'"):
        roi_align(feat, _box(), 2, mode="min")
    with pytest.raises(TypeError, match="sampling_ratio must be an int"):
        roi_warp(feat, _box(), 2, sampling_ratio=1.5)


# ---------------------------------------------------------------- NaN / inf coordinates


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("column", [1, 2, 3, 4])
def test_non_finite_coordinates_read_zero_and_get_no_gradient(feat, rois, name, bad, column):
    op, ref = OPS[name]
    poisoned = rois.clone()
    poisoned[3, column] = bad
    poisoned[10, 5 - column] = bad
    x = feat.clone().requires_grad_(True)
    out = op(x, poisoned)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref(feat, poisoned), rtol=1e-10, atol=1e-12)  # the reference's semantics
    assert out[[3, 10]].abs().max() == 0
    grad_out = torch.randn_like(out)
    out.backward(grad_out)
    # The poisoned rows contribute nothing: same input gradient as without them.
    keep = [i for i in range(rois.shape[0]) if i not in (3, 10)]
    x_clean = feat.clone().requires_grad_(True)
    op(x_clean, rois[keep]).backward(grad_out[keep])
    torch.testing.assert_close(x.grad, x_clean.grad, rtol=1e-10, atol=1e-12)


def test_prroi_box_gradient_of_non_finite_rows_is_zero(feat, rois):
    poisoned = rois.clone()
    poisoned[2, 3] = math.nan
    poisoned = poisoned.requires_grad_(True)
    prroi_pool(feat, poisoned, 2, SCALE).sum().backward()
    assert torch.isfinite(poisoned.grad).all()
    assert poisoned.grad[2].abs().max() == 0
    assert poisoned.grad[0].abs().max() > 0


# ---------------------------------------------------------------- half types


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("box_dtype", ["same", "float32"])
def test_half_types_compute_in_float32(feat, rois, name, dtype, box_dtype):
    op = OPS[name][0]
    x = feat.to(dtype).requires_grad_(True)
    boxes = rois.to(dtype if box_dtype == "same" else torch.float32)
    out = op(x, boxes)
    assert out.dtype == dtype
    expected = op(x.detach().float(), boxes.float())  # float32 on the same (rounded) values
    torch.testing.assert_close(out.float(), expected.to(dtype).float(), rtol=0, atol=0)
    out.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


# ---------------------------------------------------------------- K == 0


@pytest.mark.parametrize("name", NAMES)
def test_no_boxes(feat, name, no_boxes):
    x = feat.clone().requires_grad_(True)
    boxes = no_boxes
    out = OPS[name][0](x, boxes, size=(2, 3))
    assert out.shape == (0, feat.shape[1], 2, 3) and out.dtype == feat.dtype
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0
