"""ROI_OPS / build_roi_op: names, option checking, module call signature and repr."""

import pytest
import torch

from detector.ops import ROI_OPS, PrRoIPool, RoIAlign, RoIPool, RoIWarp, build_roi_op


def test_registry_names_are_the_contract():
    assert ROI_OPS == {"roi_pool": RoIPool, "roi_warp": RoIWarp, "roi_align": RoIAlign, "prroi_pool": PrRoIPool}


@pytest.mark.parametrize("name", sorted(ROI_OPS))
def test_every_op_builds_and_shares_the_call_signature(name, feat, rois):
    module = build_roi_op(name, (2, 3), 0.5)
    assert isinstance(module, ROI_OPS[name])
    assert module(feat, rois).shape == (rois.shape[0], feat.shape[1], 2, 3)
    assert module(feat, [rois[:4, 1:], rois[4:, 1:]]).shape == (rois.shape[0], feat.shape[1], 2, 3)


def test_options_reach_the_module():
    module = build_roi_op("roi_align", 7, 1 / 16, sampling_ratio=2, aligned=True, mode="max")
    assert (module.output_size, module.spatial_scale) == ((7, 7), 1 / 16)
    assert (module.sampling_ratio, module.aligned, module.mode) == (2, True, "max")
    assert (
        repr(module) == "RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=True, mode='max')"
    )
    warp = build_roi_op("roi_warp", (7, 5), 1 / 32, mode="max")
    assert (
        repr(warp) == "RoIWarp(output_size=(7, 5), spatial_scale=0.03125, sampling_ratio=-1, aligned=False, mode='max')"
    )


def test_unknown_name_lists_known_ones():
    with pytest.raises(
        ValueError, match="unknown ROI op 'roi_align_max'; known ops: prroi_pool, roi_align, roi_pool, roi_warp"
    ):
        build_roi_op("roi_align_max", 7, 1 / 16)


@pytest.mark.parametrize(
    "name, option, valid",
    [
        ("roi_pool", "sampling_ratio", "none"),
        ("prroi_pool", "mode", "none"),
        ("roi_align", "sampling", "sampling_ratio, aligned, mode"),
    ],
)
def test_option_the_op_does_not_take(name, option, valid):
    with pytest.raises(TypeError, match=f"ROI op '{name}' takes no option '{option}'; its options: {valid}"):
        build_roi_op(name, 7, 1 / 16, **{option: 2})


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(output_size=0), ValueError),
        (dict(spatial_scale=-1.0), ValueError),
        (dict(mode="median"), ValueError),
        (dict(sampling_ratio="2"), TypeError),
    ],
)
def test_bad_option_values_fail_at_construction(kwargs, error):
    args = dict(output_size=7, spatial_scale=1 / 16) | kwargs
    with pytest.raises(error):
        build_roi_op("roi_align", **args)


def test_modules_have_no_state(feat, rois):
    """No parameters or buffers: the ROI layer adds nothing to checkpoints."""
    for name in ROI_OPS:
        module = build_roi_op(name, 2, 0.5)
        assert list(module.parameters()) == [] and list(module.buffers()) == []
        assert module.to(torch.float64)(feat, rois).dtype == torch.float64
