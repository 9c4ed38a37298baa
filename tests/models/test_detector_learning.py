"""Learning, not just running: a tiny fixed scene is overfit within the test.

One 128 x 128 image, one red rectangle on dim noise, at stride 32 (a 4 x 4 feature map,
the slides' setting). After 80 SGD steps the total loss must have fallen at least 5x and
the top detection must be the object (right class, IoU >= 0.5), for the quantizing
RoIPool and for RoIAlign. About 80 ms a step on two idle CPU threads.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import require_roi_op
from torchvision.ops import box_iou

from detector.models import DetectorConfig, build_detector

STEPS, LR = 80, 0.02


def fixed_scene():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 128, 128, generator=g) * 0.3
    image[:, 40:96, 24:88] = torch.tensor([0.9, 0.2, 0.2])[:, None, None]
    box = torch.tensor([[24.0, 40.0, 88.0, 96.0]])  # not aligned to the 32 px grid
    return image, {"boxes": box, "labels": torch.tensor([1])}


@pytest.mark.parametrize("roi_op", ["roi_pool", "roi_align"])
def test_overfits_a_tiny_scene(roi_op):
    require_roi_op(roi_op, {})
    torch.manual_seed(0)
    cfg = DetectorConfig.small(
        roi_op=roi_op,
        num_classes=2,
        min_size=128,
        max_size=128,
        out_channels=64,
        representation_size=128,
        rpn_pre_nms_top_n_train=200,
        rpn_post_nms_top_n_train=100,
        rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=50,
        rpn_batch_size_per_image=64,
        box_batch_size_per_image=64,
    )
    model = build_detector(cfg).train()
    image, target = fixed_scene()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR, momentum=0.9)
    losses = []
    for step in range(STEPS):
        if step == 3 * STEPS // 4:  # one 10x decay: the sampled proposals change every step, this quiets the end
            for group in opt.param_groups:
                group["lr"] = LR / 10
        loss = sum(model([image], [target]).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    final = sum(losses[-5:]) / 5
    assert final * 5 <= losses[0], f"loss fell only {losses[0] / final:.1f}x: {losses[0]:.3f} -> {final:.3f}"

    model.eval()
    with torch.no_grad():
        det = model([image])[0]
    assert len(det["boxes"]) > 0, "nothing detected"
    iou = box_iou(det["boxes"][:1], target["boxes"]).item()
    assert det["labels"][0].item() == 1 and iou >= 0.5, f"top detection {det['boxes'][0].tolist()} IoU {iou:.2f}"
