"""Images without objects train; malformed targets fail before the forward, naming the image."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import scene, tiny_config

from detector.models import build_detector, validate_targets


@pytest.mark.parametrize("mask", [False, True], ids=["box", "mask"])
def test_batch_of_only_empty_images_trains(mask):
    model = build_detector(tiny_config(mask=mask)).train()
    images = [torch.rand(3, 64, 80), torch.rand(3, 70, 64)]
    targets = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.int64)} for _ in images]
    if mask:
        for img, t in zip(images, targets):
            t["masks"] = torch.zeros((0, *img.shape[-2:]), dtype=torch.uint8)
    losses = model(images, targets)
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_box_reg"].item() == 0.0 and losses["loss_rpn_box_reg"].item() == 0.0
    if mask:
        assert losses["loss_mask"].item() == 0.0
    sum(losses.values()).backward()  # the empty mask loss must still be part of the graph


@pytest.mark.parametrize("mask", [False, True], ids=["box", "mask"])
def test_mixed_empty_and_full_images_train(mask):
    model = build_detector(tiny_config(mask=mask)).train()
    images, targets = scene(mask=mask, empty_second=True)
    losses = model(images, targets)
    assert losses["loss_classifier"].item() > 0
    sum(losses.values()).backward()


def _good():
    images, targets = scene(mask=True, empty_second=False)
    return images, targets


BAD_CASES = {
    "boxes_shape": (
        lambda t: t.update(boxes=torch.tensor([10.0, 10.0, 20.0, 20.0])),
        r"\['boxes'\] must be a Tensor\[L, 4\]",
    ),
    "boxes_int": (lambda t: t.update(boxes=t["boxes"].long()), r"must be float"),
    "labels_len": (lambda t: t.update(labels=torch.tensor([1, 1])), r"\['labels'\] must be a Tensor\[1\]"),
    "labels_dtype": (lambda t: t.update(labels=t["labels"].int()), r"must be int64"),
    "label_zero": (
        lambda t: t.update(labels=torch.tensor([0])),
        r"\['labels'\]\[0\] = 0 is outside \[1, 3\).*background",
    ),
    "label_too_big": (lambda t: t.update(labels=torch.tensor([3])), r"= 3 is outside \[1, 3\).*num_classes"),
    "box_nan": (lambda t: t.update(boxes=torch.tensor([[5.0, float("nan"), 60.0, 50.0]])), r"not finite"),
    "box_inf": (lambda t: t.update(boxes=torch.tensor([[5.0, 5.0, float("inf"), 50.0]])), r"not finite"),
    "box_x2_le_x1": (lambda t: t.update(boxes=torch.tensor([[30.0, 5.0, 30.0, 50.0]])), r"degenerate.*x2 > x1"),
    "box_xywh": (lambda t: t.update(boxes=torch.tensor([[30.0, 20.0, 10.0, 10.0]])), r"degenerate.*\(x, y, w, h\)"),
    "mask_missing": (lambda t: t.pop("masks"), r"\['masks'\] must be a Tensor\[1, 64, 80\]"),
    "mask_shape": (lambda t: t.update(masks=torch.zeros((1, 32, 32), dtype=torch.uint8)), r"\['masks'\] must be"),
    "missing_labels": (lambda t: t.pop("labels"), r"must be a dict with 'boxes' and 'labels'"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_target_names_the_image(case):
    """The second image is the bad one: the error must say index 1, through the model."""
    model = build_detector(tiny_config(mask=True)).train()
    images, targets = _good()
    corrupt, pattern = BAD_CASES[case]
    corrupt(targets[1])
    with pytest.raises(ValueError, match=pattern) as info:
        model(images, targets)
    assert "targets[1] (image 1 of the batch)" in str(info.value)


def test_bad_inputs_to_forward():
    model = build_detector(tiny_config()).train()
    images, targets = _good()
    with pytest.raises(ValueError, match="one dict per image: 2 images, got 1"):
        model(images, targets[:1])
    with pytest.raises(ValueError, match="training needs targets"):
        model(images)
    with pytest.raises(ValueError, match=r"images\[1\] must be a Tensor\[3, H, W\]"):
        model([images[0], images[1][:1]], targets)
    with pytest.raises(ValueError, match=r"images\[0\] must be float"):
        model([(images[0] * 255).byte(), images[1]], targets)


def test_masks_not_required_without_mask_head():
    images, targets = _good()
    for t in targets:
        t.pop("masks")
    validate_targets(images, targets, num_classes=3, need_masks=False)  # no error
