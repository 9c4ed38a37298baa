"""The variant table: ROI_OPS, RoiOpSpec / RoiOption, register_roi_op, get_roi_op, build_roi_op.

Every spec is checked for what the rest of the project relies on (its module builds with
its defaults, its options validate with messages naming the key and the expected value,
the option rules are the ops' own); the built-in rows are pinned to the contract.
"""

import re

import pytest
import torch

import detector.ops.registry as registry  # internal on purpose: _SPECS, to undo test registrations
from detector.ops import (
    MAX_SAMPLING_GRID,
    ROI_OPS,
    PrRoIPool,
    RoIAlign,
    RoiOpSpec,
    RoiOption,
    RoIPool,
    RoIWarp,
    build_roi_op,
    get_roi_op,
    register_roi_op,
    roi_align,
)
from detector.ops.options import is_aligned, is_mode, is_sampling_ratio

BUILTIN = ["roi_pool", "roi_warp", "roi_align", "prroi_pool"]


@pytest.fixture
def scratch_registry():
    """Registrations made by a test are removed afterwards."""
    before = dict(registry._SPECS)
    yield
    registry._SPECS.clear()
    registry._SPECS.update(before)


class _Bad:
    """A value no rule accepts, with a fixed repr."""

    def __repr__(self):
        return "<bad>"


def test_builtin_rows_are_the_contract():
    assert list(ROI_OPS)[:4] == BUILTIN  # registration order: built-ins first, plugins after
    rows = {name: (s.module, s.label, s.color, s.modes, [o.name for o in s.options]) for name, s in ROI_OPS.items()}
    sampling = ["sampling_ratio", "aligned", "mode"]
    assert rows["roi_pool"] == (RoIPool, "RoIPool", "tab:red", (), [])
    assert rows["roi_warp"] == (RoIWarp, "RoIWarp", "tab:orange", ("avg", "max"), sampling)
    assert rows["roi_align"] == (RoIAlign, "RoIAlign", "tab:blue", ("avg", "max"), sampling)
    assert rows["prroi_pool"] == (PrRoIPool, "PrRoIPool", "tab:green", (), [])
    assert [n for n in BUILTIN if ROI_OPS[n].region is not None] == ["roi_pool", "roi_warp", "roi_align"]
    assert all(ROI_OPS[n].ablate for n in BUILTIN)


def test_detector_defaults():
    """The detector's defaults (Mask R-CNN's sampling_ratio=2) differ from the modules' (torchvision's -1)."""
    assert get_roi_op("roi_align").resolve_options(None) == {"sampling_ratio": 2, "aligned": False, "mode": "avg"}
    assert get_roi_op("roi_warp").resolve_options({}) == {"sampling_ratio": 2, "aligned": False, "mode": "avg"}
    assert get_roi_op("roi_pool").resolve_options(None) == {} == get_roi_op("prroi_pool").resolve_options({})
    assert RoIAlign(7, 1 / 16).sampling_ratio == -1


def test_option_rules_are_the_ops_own():
    """RoiOption.check is the predicate the op applies to its own arguments (detector.ops.options)."""
    for name in ("roi_warp", "roi_align"):
        checks = {o.name: o.check for o in get_roi_op(name).options}
        assert checks == {"sampling_ratio": is_sampling_ratio, "aligned": is_aligned, "mode": is_mode}


@pytest.mark.parametrize(
    "value, valid",
    [(2, True), (1, True), (MAX_SAMPLING_GRID, True), (-1, True), (0, True), (-5, True),
     (MAX_SAMPLING_GRID + 1, False), (2.0, False), ("2", False), (True, False), (None, False)],
)
def test_sampling_ratio_one_rule_for_config_and_op(value, valid, feat):
    """0 and -5 are adaptive for the op, so for configs too; above 64 or not an int: refused by both."""
    assert get_roi_op("roi_align").option("sampling_ratio").check(value) is valid
    box = torch.tensor([[0, 1.0, 2.0, 9.0, 7.0]], dtype=torch.float64)
    if valid:
        assert roi_align(feat, box, 2, 0.5, value).shape == (1, feat.shape[1], 2, 2)
        assert get_roi_op("roi_align").resolve_options({"sampling_ratio": value})["sampling_ratio"] == value
    else:
        with pytest.raises((TypeError, ValueError), match="sampling_ratio"):
            roi_align(feat, box, 2, 0.5, value)
        with pytest.raises(ValueError, match=r"'roi_align': option sampling_ratio=.* is invalid; expected an int <= 64"):
            get_roi_op("roi_align").resolve_options({"sampling_ratio": value})


@pytest.mark.parametrize("value, valid", [(True, True), (False, True), (1, True), (0, True), ("false", False),
                                          (2, False), (None, False)])
def test_aligned_one_rule_for_config_and_op(value, valid):
    assert get_roi_op("roi_warp").option("aligned").check(value) is valid
    if valid:
        assert RoIWarp(2, 0.5, aligned=value).aligned is bool(value)
    else:
        with pytest.raises(TypeError, match="aligned must be True or False"):
            RoIWarp(2, 0.5, aligned=value)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_spec_builds_with_its_defaults_and_validates_its_options(name, feat, rois):
    spec = get_roi_op(name)
    module = build_roi_op(name, (2, 3), 0.5, **spec.resolve_options(None))
    assert isinstance(module, spec.module)
    assert module(feat, rois).shape == (rois.shape[0], feat.shape[1], 2, 3)
    for option in spec.options:
        assert option.check(option.default)
        message = f"ROI op '{name}': option {option.name}=<bad> is invalid; expected {option.expected}"
        with pytest.raises(ValueError, match=re.escape(message)):
            spec.resolve_options({option.name: _Bad()})
    with pytest.raises(ValueError, match=rf"ROI op '{name}' takes no option 'colour'; its options: "):
        spec.resolve_options({"colour": 1})


def test_resolve_options_fills_defaults_and_keeps_given_values():
    spec = get_roi_op("roi_warp")
    assert spec.resolve_options({"mode": "max", "aligned": True}) == {"sampling_ratio": 2, "aligned": True,
                                                                     "mode": "max"}
    with pytest.raises(ValueError, match="must be a mapping"):
        spec.resolve_options(["mode", "max"])
    with pytest.raises(ValueError, match=r"'roi_warp': option mode='median' is invalid; expected 'avg' or 'max'"):
        spec.resolve_options({"mode": "median"})


def test_tags_name_non_default_values_for_run_folders():
    tags = {o.name: o.tag for o in get_roi_op("roi_align").options}
    assert (tags["sampling_ratio"](4), tags["aligned"](True), tags["mode"]("max")) == ("sr4", "aligned", "max")


def test_options_reach_the_module():
    module = build_roi_op("roi_align", 7, 1 / 16, sampling_ratio=2, aligned=True, mode="max")
    assert (module.output_size, module.spatial_scale) == ((7, 7), 1 / 16)
    assert (module.sampling_ratio, module.aligned, module.mode) == (2, True, "max")
    assert (
        repr(module) == "RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=True, mode='max')"
    )
    warp = build_roi_op("roi_warp", (7, 5), 1 / 32, mode="max")  # left out: the module's own default
    assert (
        repr(warp) == "RoIWarp(output_size=(7, 5), spatial_scale=0.03125, sampling_ratio=-1, aligned=False, mode='max')"
    )


def test_unknown_name_lists_known_ones():
    known = ", ".join(sorted(ROI_OPS))
    with pytest.raises(ValueError, match=f"unknown ROI op 'roi_align_max'; known ops: {known}"):
        build_roi_op("roi_align_max", 7, 1 / 16)
    with pytest.raises(ValueError, match=f"unknown ROI op 'roi_magic'; known ops: {known}"):
        get_roi_op("roi_magic")
    with pytest.raises(ValueError, match="unknown ROI op"):
        get_roi_op(["roi_pool"])


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
    "kwargs, error, message",
    [
        (dict(output_size=0), ValueError, "output_size must be positive"),
        (dict(spatial_scale=-1.0), ValueError, "spatial_scale"),
        (dict(mode="median"), ValueError, "option mode='median' is invalid; expected 'avg' or 'max'"),
        (dict(sampling_ratio="2"), ValueError, "option sampling_ratio='2' is invalid; expected an int"),
        (dict(aligned="yes"), ValueError, "option aligned='yes' is invalid; expected True or False"),
    ],
)
def test_bad_option_values_fail_at_construction(kwargs, error, message):
    args = dict(output_size=7, spatial_scale=1 / 16) | kwargs
    with pytest.raises(error, match=message):
        build_roi_op("roi_align", **args)


def test_register_roi_op_refuses_a_duplicate_name(scratch_registry):
    with pytest.raises(ValueError, match=r"ROI op 'roi_align' is registered already \(by detector.ops.roi_align\)"):
        register_roi_op(RoiOpSpec("roi_align", RoIPool, "Again", "tab:gray"))
    assert get_roi_op("roi_align").module is RoIAlign


def test_register_roi_op_adds_a_row_that_build_roi_op_builds(scratch_registry, feat, rois):
    spec = register_roi_op(RoiOpSpec("my_pool", RoIPool, "MyPool", "tab:brown", ablate=False))
    assert list(ROI_OPS)[-1] == "my_pool" and get_roi_op("my_pool") is spec
    torch.testing.assert_close(build_roi_op("my_pool", 2, 0.5)(feat, rois), RoIPool(2, 0.5)(feat, rois))


@pytest.mark.parametrize(
    "spec, message",
    [
        (RoiOpSpec("My Pool", RoIPool, "x", "tab:gray"), "lower case letters, digits and '_'"),
        (RoiOpSpec("p2", "RoIPool", "x", "tab:gray"), "module must be an nn.Module class"),
        (RoiOpSpec("p2", RoIAlign, "x", "tab:gray", (RoiOption("a", 1, bool, "x"), RoiOption("a", 1, bool, "x"))),
         "option names repeat"),
        (RoiOpSpec("p2", RoIAlign, "x", "tab:gray", (RoiOption("mode", "min", is_mode, "avg"),)),
         "the default mode='min' fails its own check"),
        (RoiOpSpec("p2", RoIPool, "x", "tab:gray", modes=("avg",)), "need an option called 'mode'"),
        (RoiOpSpec("p2", RoIAlign, "x", "tab:gray", (RoiOption("mode", "avg", is_mode, "avg"),), ("avg", "min")),
         r"modes \['min'\] fail"),
    ],
)
def test_register_roi_op_refuses_a_malformed_spec(scratch_registry, spec, message):
    with pytest.raises(ValueError, match=message):
        register_roi_op(spec)
    assert "p2" not in ROI_OPS


def test_register_roi_op_takes_only_a_spec():
    with pytest.raises(ValueError, match="takes a detector.ops.RoiOpSpec"):
        register_roi_op({"name": "x"})


def test_table_is_read_only():
    with pytest.raises(TypeError):
        ROI_OPS["x"] = None
