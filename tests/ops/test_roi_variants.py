"""The op-tester: every op of the variant table (and the toy plugin) built by name and held
to the contract of docs/roi_ops.md.

For each registered op and each combination of its options (``roi_variants.option_grid``):
forward against the slow reference in both box formats, float64 ``gradcheck``, no boxes,
dtype and device of the output, no parameters or buffers. What only one op has (RoIPool's
equality with torchvision, the max mode's tie rule, PrRoIPool's box gradients, the C++ and
PyTorch paths) stays in that op's own file.
"""

import pytest
import torch
from roi_reference import as_list, list_order
from roi_shapes import BATCH, SCALE
from roi_variants import (
    NAMES,
    REFERENCES,
    SPECS,
    case_id,
    cases,
    option_grid,
    registered,
)

from detector.ops import build_roi_op

FORWARD_CASES = cases()
GRADCHECK_CASES = cases({"sampling_ratio": (2, -1), "aligned": (False, True)})


@pytest.fixture
def op_name(request):
    with registered(request.param):
        yield request.param


def _ids(params):
    return [case_id(name, options) for name, options in params]


def _sizes(output_size):
    return output_size if isinstance(output_size, tuple) else (output_size, output_size)


@pytest.mark.parametrize("op_name, options", FORWARD_CASES, ids=_ids(FORWARD_CASES), indirect=["op_name"])
def test_forward_matches_reference_both_box_formats(op_name, options, feat, rois):
    if op_name not in REFERENCES:
        pytest.skip(f"no slow reference for {op_name!r} in roi_variants.REFERENCES")
    module = build_roi_op(op_name, (3, 4), SCALE, **options)
    expected = REFERENCES[op_name](feat, rois, 3, 4, SCALE, SPECS[op_name].resolve_options(options))
    torch.testing.assert_close(module(feat, rois), expected, rtol=1e-10, atol=1e-12)
    listed = module(feat, as_list(rois, BATCH))
    torch.testing.assert_close(listed, expected[list_order(rois, BATCH)], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("output_size", [1, (5, 2), (2, 3)])
@pytest.mark.parametrize("op_name", NAMES, indirect=True)
def test_output_sizes_at_the_detector_defaults(op_name, output_size, feat, rois):
    """Built as the detector builds it: the table's defaults (resolve_options(None))."""
    ph, pw = _sizes(output_size)
    options = SPECS[op_name].resolve_options(None)
    out = build_roi_op(op_name, output_size, SCALE, **options)(feat, rois)
    assert out.shape == (rois.shape[0], feat.shape[1], ph, pw) and out.dtype == feat.dtype
    if op_name in REFERENCES:
        expected = REFERENCES[op_name](feat, rois, ph, pw, SCALE, options)
        torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("op_name, options", GRADCHECK_CASES, ids=_ids(GRADCHECK_CASES), indirect=["op_name"])
def test_gradcheck_float64(op_name, options):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = torch.tensor(
        [[0, 1.3, 0.7, 9.1, 8.2], [1, -2.0, 3.1, 5.2, 14.0], [1, 4.4, 4.1, 4.9, 4.3], [0, 11.0, 9.0, 15.6, 13.9]],
        dtype=torch.float64,
    )
    module = build_roi_op(op_name, (2, 3), 0.5, **options)
    assert torch.autograd.gradcheck(lambda t: module(t, boxes), (x,))


@pytest.mark.parametrize("op_name", NAMES, indirect=True)
def test_no_boxes_give_empty_output_and_zero_gradient(op_name, no_boxes, feat):
    x = feat.clone().requires_grad_(True)
    boxes = no_boxes
    out = build_roi_op(op_name, (2, 3), SCALE)(x, boxes)
    assert out.shape == (0, feat.shape[1], 2, 3) and out.dtype == feat.dtype
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().max() == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op_name", NAMES, indirect=True)
def test_output_follows_input_dtype_and_device(op_name, dtype, feat, rois):
    module = build_roi_op(op_name, 2, SCALE).to(dtype)
    out = module(feat.to(dtype), rois.to(dtype))
    assert out.dtype == dtype and out.device == feat.device
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("op_name", NAMES, indirect=True)
def test_mismatched_box_dtype_or_device_is_refused(op_name, feat, rois):
    module = build_roi_op(op_name, 2, SCALE)
    with pytest.raises(TypeError, match="boxes has dtype torch.float32 but input has torch.float64"):
        module(feat, rois.float())
    with pytest.raises(ValueError, match="boxes is on meta but input is on cpu"):
        module(feat, rois.to("meta"))


@pytest.mark.parametrize("op_name", NAMES, indirect=True)
def test_module_has_no_state(op_name):
    """No parameters or buffers: the ROI layer adds nothing to checkpoints."""
    for options in option_grid(op_name):
        module = build_roi_op(op_name, 2, 0.5, **options)
        assert list(module.parameters()) == [] and list(module.buffers()) == []
