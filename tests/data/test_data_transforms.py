"""Transforms keep image, boxes and masks consistent."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from detector.data.transforms import TransformConfig, build_transforms


def sample(h=30, w=40):
    image = tv_tensors.Image(torch.randint(0, 256, (3, h, w), dtype=torch.uint8))
    boxes = torch.tensor([[2.0, 3.0, 12.0, 11.0], [20.0, 5.0, 40.0, 30.0]])
    masks = torch.zeros(2, h, w, dtype=torch.uint8)
    for k, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
        masks[k, y1:y2, x1:x2] = 1
    target = {"boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
              "masks": tv_tensors.Mask(masks), "labels": torch.tensor([1, 2]), "image_id": 7}
    return image, target


def test_flip_twice_is_identity():
    image, target = sample()
    flip = v2.RandomHorizontalFlip(p=1.0)
    once_image, once = flip(image, target)
    assert not torch.equal(once["boxes"], target["boxes"])
    assert once["boxes"][0].tolist() == [28.0, 3.0, 38.0, 11.0]  # x -> W - x
    twice_image, twice = flip(once_image, once)
    assert torch.equal(twice_image, image)
    assert torch.equal(twice["boxes"], target["boxes"]) and torch.equal(twice["masks"], target["masks"])


def test_flipped_boxes_still_frame_their_masks():
    cfg = TransformConfig(hflip_prob=1.0, brightness=0, contrast=0, saturation=0)
    _, out = build_transforms(True, cfg)(*sample())
    for box, mask in zip(out["boxes"], out["masks"]):
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]


def test_resize_scales_boxes_and_masks_by_the_shorter_side():
    image, target = sample(30, 40)
    out_image, out = build_transforms(False, TransformConfig(min_size=60))(image, target)
    assert out_image.shape == (3, 60, 80) and out_image.dtype == torch.float32
    torch.testing.assert_close(out["boxes"], target["boxes"] * 2)
    assert out["masks"].shape == (2, 60, 80)
    assert out["masks"].sum().item() == target["masks"].sum().item() * 4  # nearest: every pixel becomes 2x2
    assert out["labels"].tolist() == [1, 2] and out["image_id"] == 7


def test_max_size_caps_the_longer_side():
    image, target = sample(30, 40)
    out_image, out = build_transforms(False, TransformConfig(min_size=60, max_size=70))(image, target)
    assert out_image.shape == (3, 52, 70)  # shorter side 60 would make the longer 80 > 70
    torch.testing.assert_close(out["boxes"], target["boxes"] * torch.tensor([70 / 40, 52 / 30, 70 / 40, 52 / 30]))


def test_resize_removes_boxes_that_become_degenerate():
    image, target = sample(30, 40)
    target["boxes"] = tv_tensors.BoundingBoxes(torch.tensor([[2.0, 3.0, 12.0, 11.0], [20.0, 5.0, 21.5, 30.0]]),
                                               format="XYXY", canvas_size=(30, 40))
    _, out = build_transforms(False, TransformConfig(min_size=15))(image, target)
    assert out["labels"].tolist() == [1] and out["masks"].shape[0] == 1


def test_eval_transforms_do_not_flip_or_jitter():
    image, target = sample()
    out_image, out = build_transforms(False, TransformConfig(hflip_prob=1.0, brightness=0.9))(image, target)
    torch.testing.assert_close(out_image, image.float() / 255)
    assert torch.equal(out["boxes"], target["boxes"])


def test_jitter_changes_pixels_not_geometry():
    torch.manual_seed(0)
    image, target = sample()
    out_image, out = build_transforms(True, TransformConfig(hflip_prob=0.0, brightness=0.5))(image, target)
    assert not torch.allclose(out_image, image.float() / 255)
    assert torch.equal(out["boxes"], target["boxes"])


@pytest.mark.parametrize("kwargs,name", [({"hflip_prob": 1.5}, "hflip_prob"), ({"brightness": -1}, "brightness"),
                                         ({"min_size": 0}, "min_size"), ({"min_size": 800, "max_size": 800}, "max_size"),
                                         ({"hue": 0.7}, "hue")])
def test_bad_options_name_the_option(kwargs, name):
    with pytest.raises(ValueError, match=name):
        TransformConfig(**kwargs)
