"""The ROI layer is injected, not hard-wired: any module with the ROI-op call signature works."""

from __future__ import annotations

import pytest
import torch
from model_helpers import scene, tiny_config
from torch import nn
from torchvision.ops import roi_align

from detector.models import Res5Head, SingleLevelRoIPooler, build_backbone, build_detector


class RecordingRoIOp(nn.Module):
    """A user-written ROI op: torchvision's roi_align plus a record of every call."""

    def __init__(self, output_size: int, spatial_scale: float) -> None:
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.calls: list[tuple[tuple[int, ...], int]] = []

    def forward(self, features: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        self.calls.append((tuple(features.shape), sum(len(b) for b in boxes)))
        return roi_align(features, boxes, self.output_size, self.spatial_scale, sampling_ratio=2)


@pytest.mark.parametrize("stride", [32, 16])
def test_injected_ops_serve_box_and_mask_branches(stride):
    cfg = tiny_config(stride=stride, mask=True)
    box_op = RecordingRoIOp(cfg.resolved_roi_output_size, cfg.spatial_scale)
    mask_op = RecordingRoIOp(cfg.mask_roi_output_size, cfg.spatial_scale)
    model = build_detector(cfg, box_roi_op=box_op, mask_roi_op=mask_op)
    assert model.roi_heads.box_roi_pool.roi_op is box_op and model.roi_heads.mask_roi_pool.roi_op is mask_op
    images, targets = scene(mask=True)
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    ((feature_shape, num_boxes),) = box_op.calls
    assert feature_shape[2:] == (64 // stride, 96 // stride)  # short side 64 -> 64x85 and 64x80, padded to 64x96
    # Sampled proposals: at most box_batch_size_per_image per image (plus nothing else).
    assert 0 < num_boxes <= 2 * cfg.box_batch_size_per_image
    assert len(mask_op.calls) == 1 and mask_op.calls[0][1] > 0  # positives only


def test_pooler_adapter_has_roiheads_signature():
    op = RecordingRoIOp(7, 1 / 16)
    pooler = SingleLevelRoIPooler(op)
    feats = {"0": torch.rand(2, 4, 8, 8)}
    boxes = [torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([[8.0, 8.0, 40.0, 100.0], [1.0, 2.0, 3.0, 4.0]])]
    out = pooler(feats, boxes, [(128, 128), (128, 128)])
    expected = roi_align(feats["0"], boxes, 7, 1 / 16, sampling_ratio=2)
    assert out.shape == (3, 4, 7, 7) and torch.equal(out, expected)


def test_res5_head_strides_14_to_7_and_pools():
    _, c5 = build_backbone("resnet18", 16, norm="gn")
    head = Res5Head(c5, 512)
    x = torch.rand(3, 256, 14, 14)
    y = head(x)
    assert y.shape == (3, 512)
    assert torch.allclose(y, c5(x).mean(dim=(2, 3)))
    assert c5(x).shape[-2:] == (7, 7)


def test_res5_model_uses_c5_as_box_head():
    model = build_detector(tiny_config(backbone="resnet18", stride=16))
    assert isinstance(model.roi_heads.box_head, Res5Head)
    assert model.roi_heads.box_roi_pool.roi_op.output_size in (14, (14, 14))
    assert model.roi_heads.box_predictor.cls_score.in_features == 512
    assert len(model.backbone.body) == 4  # stem + C2..C4: C5 lives in the head, not twice
