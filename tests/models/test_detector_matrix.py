"""Every backbone x stride x ROI op builds, trains one step and predicts, with and without masks.

The full ROI-family sweep runs on ResNet-18 (both strides, both heads); the bigger
backbones run one op each, rotating through the family so every op meets a VGG and a
deeper ResNet somewhere, which keeps the suite within its time budget.
"""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import ROI_IDS, ROI_VARIANTS, require_roi_op, scene, tiny_config

from detector.models import build_detector


def first_conv(model) -> torch.Tensor:
    """The very first convolution of the backbone (conv1 / conv1_1)."""
    body = model.backbone.body
    return body[0][0].weight


def train_and_predict(cfg):
    model = build_detector(cfg)
    images, targets = scene(mask=cfg.mask)
    model.train()
    losses = model(images, targets)
    expected = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"} | (
        {"loss_mask"} if cfg.mask else set()
    )
    assert set(losses) == expected
    for name, value in losses.items():
        assert value.dim() == 0 and math.isfinite(value.item()), (name, value)
    sum(losses.values()).backward()
    grad = first_conv(model).grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, "no gradient reached the backbone"
    pooler_grads = [p.grad for p in model.roi_heads.box_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in pooler_grads)

    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for img, det in zip(images, out):
        n = det["boxes"].shape[0]
        assert det["boxes"].shape == (n, 4) and det["scores"].shape == (n,) and det["labels"].shape == (n,)
        assert det["labels"].dtype == torch.int64 and n <= cfg.box_detections_per_img
        if n:  # boxes come back in the original image's pixels
            h, w = img.shape[-2:]
            assert det["boxes"][:, 0::2].max() <= w + 1e-3 and det["boxes"][:, 1::2].max() <= h + 1e-3
            assert ((det["labels"] >= 1) & (det["labels"] < cfg.num_classes)).all()
        if cfg.mask:
            assert det["masks"].shape == (n, 1, *img.shape[-2:])
    return model


@pytest.mark.parametrize("mask", [False, True], ids=["box", "mask"])
@pytest.mark.parametrize("stride", [32, 16])
@pytest.mark.parametrize("variant", ROI_VARIANTS, ids=ROI_IDS)
def test_resnet18_every_roi_op(variant, stride, mask):
    name, options = variant
    require_roi_op(name, options)
    cfg = tiny_config(stride=stride, roi_op=name, roi_options=options, mask=mask)
    model = train_and_predict(cfg)
    assert model.roi_heads.box_roi_pool.roi_op.spatial_scale == 1 / stride


# One op per bigger backbone and stride, rotating through the family; the mask head on half.
BIG = [
    ("vgg16", 32, 0, True),
    ("vgg16", 16, 2, False),
    ("resnet34", 32, 1, False),
    ("resnet34", 16, 3, True),
    ("resnet50", 32, 4, True),
    ("resnet50", 16, 2, False),
]


@pytest.mark.parametrize(
    "backbone,stride,op_index,mask", BIG, ids=[f"{b}-s{s}-{ROI_IDS[i]}-{'mask' if m else 'box'}" for b, s, i, m in BIG]
)
def test_bigger_backbones(backbone, stride, op_index, mask):
    name, options = ROI_VARIANTS[op_index]
    require_roi_op(name, options)
    res5 = backbone != "vgg16" and stride == 16
    # 1x1 reduction keeps the MLP head small for 2048-channel C5 (not allowed with res5).
    cfg = tiny_config(
        backbone=backbone, stride=stride, roi_op=name, roi_options=options, mask=mask, out_channels=None if res5 else 64
    )
    model = train_and_predict(cfg)
    assert cfg.resolved_box_head == ("res5" if res5 else "mlp")
    assert model.roi_heads.box_roi_pool.roi_op.spatial_scale == 1 / stride
