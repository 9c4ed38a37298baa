"""DetectorConfig: validation names the field and the allowed values; defaults resolve sensibly."""

from __future__ import annotations

import dataclasses

import pytest

from detector.models import DetectorConfig

BAD_FIELDS = [
    ("backbone", "resnet101", "one of"),
    ("stride", 8, r"one of \(16, 32\)"),
    ("weights", "/nonexistent/file.pth", "existing local state-dict file"),
    ("norm", "layernorm", "one of"),
    ("trainable_layers", 6, r"in \[0, 5\]"),
    ("out_channels", 0, ">= 1"),
    ("num_classes", 1, ">= 2"),
    ("min_size", 0, "positive int"),
    ("min_size", (), "positive int"),
    ("max_size", 10, ">= 800"),
    ("anchor_sizes", (32, -1), "positive sizes"),
    ("aspect_ratios", (), "positive"),
    ("rpn_pre_nms_top_n_train", 0, ">= 1"),
    ("rpn_post_nms_top_n_test", 1.5, "an int"),
    ("rpn_nms_thresh", 1.5, r"\[0, 1\]"),
    ("rpn_bg_iou_thresh", 0.8, "<= rpn_fg_iou_thresh"),
    ("rpn_positive_fraction", 0.0, r"\(0, 1\]"),
    ("rpn_batch_size_per_image", True, "an int"),
    ("roi_op", "roi_magic", "roi_pool"),
    ("roi_options", {"sampling_ratio": 65}, "sampling_ratio=65 is invalid; expected an int <= 64"),
    ("roi_options", {"mode": "median"}, "mode='median' is invalid; expected 'avg' or 'max'"),
    ("roi_options", {"aligned": "yes"}, "aligned='yes' is invalid"),
    ("roi_options", {"samplingratio": 2}, "takes no option 'samplingratio'"),
    ("roi_options", [2], "dict"),
    ("roi_output_size", 0, ">= 1"),
    ("box_head", "fpn", "one of"),
    ("box_head", "res5", "ResNet at stride 16"),  # default backbone resnet18 at stride 32
    ("representation_size", 0, ">= 1"),
    ("box_batch_size_per_image", -1, ">= 1"),
    ("box_positive_fraction", 2.0, r"\(0, 1\]"),
    ("box_score_thresh", float("nan"), r"\[0, 1\]"),
    ("box_nms_thresh", -0.1, r"\[0, 1\]"),
    ("box_bg_iou_thresh", 0.6, "<= box_fg_iou_thresh"),
    ("box_detections_per_img", 0, ">= 1"),
    ("mask", "yes", "True or False"),
    ("mask_roi_op", "roi_magic", "roi_pool"),
    ("mask_roi_options", {"mode": "max"}, "'roi_pool' takes no option 'mode'"),  # with mask_roi_op=roi_pool below
    ("mask_roi_output_size", 0, ">= 1"),
    ("mask_head_layers", (), "non-empty"),
]


@pytest.mark.parametrize("field,value,allowed", BAD_FIELDS, ids=[f"{f}={v!r}" for f, v, _ in BAD_FIELDS])
def test_invalid_field_names_field_and_allowed_values(field, value, allowed):
    kwargs = {field: value}
    if field == "mask_roi_options":
        kwargs["mask_roi_op"] = "roi_pool"
    with pytest.raises(ValueError, match=rf"DetectorConfig\.{field}=.*{allowed}"):
        DetectorConfig(**kwargs)


def test_res5_combinations():
    with pytest.raises(ValueError, match=r"out_channels=.*res5"):
        DetectorConfig(backbone="resnet50", stride=16, out_channels=256)
    with pytest.raises(ValueError, match=r"roi_output_size=7.*even"):
        DetectorConfig(backbone="resnet50", stride=16, roi_output_size=7)
    with pytest.raises(ValueError, match="box_head='res5'"):
        DetectorConfig(backbone="vgg16", stride=16, box_head="res5")
    # The MLP head can still be chosen explicitly at stride 16, with a reduction.
    cfg = DetectorConfig(backbone="resnet50", stride=16, box_head="mlp", out_channels=256)
    assert cfg.resolved_box_head == "mlp" and cfg.resolved_roi_output_size == 7


def test_defaults_resolve_per_backbone_and_stride():
    c32 = DetectorConfig(backbone="resnet50", stride=32)
    c16 = DetectorConfig(backbone="resnet50", stride=16)
    v16 = DetectorConfig(backbone="vgg16", stride=16)
    assert (c32.resolved_box_head, c32.resolved_roi_output_size) == ("mlp", 7)
    assert (c16.resolved_box_head, c16.resolved_roi_output_size) == ("res5", 14)
    assert (v16.resolved_box_head, v16.resolved_roi_output_size) == ("mlp", 7)
    assert c32.spatial_scale == 1 / 32 and c16.spatial_scale == 1 / 16
    assert not any(f.name == "spatial_scale" for f in dataclasses.fields(DetectorConfig))  # derived, never configured
    # Random init trains everything with GroupNorm; pretrained fine-tunes 3 stages with frozen BN.
    assert (c32.resolved_trainable_layers, c32.resolved_norm) == (5, "gn")


def test_default_anchor_sizes_span_below_one_cell_to_image_size():
    cfg = DetectorConfig(min_size=800)
    sizes = cfg.resolved_anchor_sizes
    assert sizes == (16, 32, 64, 128, 256, 512)
    assert (
        min(sizes) < 32 and max(sizes) * 2 > cfg.min_size
    )  # below a stride-32 cell; the next size would exceed the short side
    assert DetectorConfig(min_size=(96, 128)).resolved_anchor_sizes == (16, 32, 64, 128)
    assert DetectorConfig(anchor_sizes=[24, 48]).resolved_anchor_sizes == (24, 48)


def test_roi_option_defaults_follow_the_op():
    assert DetectorConfig(roi_op="roi_align").resolved_roi_options == {"sampling_ratio": 2, "aligned": False, "mode": "avg"}
    assert DetectorConfig(roi_op="roi_pool").resolved_roi_options == {}
    cfg = DetectorConfig(roi_op="roi_align", roi_options={"sampling_ratio": 3, "mode": "max"}, mask=True)
    assert cfg.resolved_mask_roi_op == "roi_align" and cfg.resolved_mask_roi_options == {
        "sampling_ratio": 3,
        "aligned": False,
        "mode": "max",
    }
    cfg = DetectorConfig(roi_op="roi_pool", mask=True, mask_roi_op="roi_align")
    assert cfg.resolved_mask_roi_options == {"sampling_ratio": 2, "aligned": False, "mode": "avg"}


def test_yaml_style_lists_become_tuples_and_replace_revalidates():
    cfg = DetectorConfig(min_size=[96, 128], aspect_ratios=[1.0], mask_head_layers=[8, 8])
    assert cfg.min_size == (96, 128) and cfg.aspect_ratios == (1.0,) and cfg.mask_head_layers == (8, 8)
    with pytest.raises(ValueError, match="DetectorConfig.stride"):
        cfg.replace(stride=64)


def test_small_config_is_cpu_friendly_and_overridable():
    cfg = DetectorConfig.small()
    assert (cfg.backbone, cfg.stride) == ("resnet18", 32) and cfg.min_size <= 320
    assert DetectorConfig.small(roi_op="roi_pool", num_classes=7).num_classes == 7
    with pytest.raises(ValueError, match="DetectorConfig.roi_op"):
        DetectorConfig.small(roi_op="nope")
