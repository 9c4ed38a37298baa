"""FPN (issue 16 item 1): the multi-level pooler wraps any op of the table; with roi_align avg it is
torchvision's MultiScaleRoIAlign, forward and backward; the FPN detector trains with every op."""

from __future__ import annotations

import pytest
import torch
from model_helpers import scene, tiny_config
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

from detector.models import DetectorConfig, build_detector
from detector.models.backbones import FPN_FEATURE_NAMES, FPN_LEVELS
from detector.models.poolers import MultiLevelRoIPooler, assign_levels
from detector.ops import ROI_OPS, build_roi_op, get_roi_op

SIZE = (96, 128)  # (H, W) of the padded batch: a multiple of 32, so torchvision infers the same scales


def pyramid(channels: int = 3, images: int = 2, dtype=torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {name: torch.randn(images, channels, SIZE[0] // 2 ** k, SIZE[1] // 2 ** k, generator=g, dtype=dtype)
            for name, k in zip(FPN_FEATURE_NAMES, FPN_LEVELS)}


def proposals(dtype=torch.float64, degenerate: bool = True) -> list[torch.Tensor]:
    """Boxes for every level (sides 9 px .. 5x the image, odd aspect ratios, sub-pixel corners) and,
    with `degenerate`, a zero-size and an inverted box."""
    g = torch.Generator().manual_seed(1)
    out = []
    for sides in ((9, 40, 100, 130, 230, 470), (20, 115, 200, 300, 640)):
        side = torch.tensor(sides, dtype=dtype)[:, None] * torch.empty(len(sides), 2, dtype=dtype).uniform_(0.8, 1.25, generator=g)
        xy = torch.rand(len(sides), 2, generator=g, dtype=dtype) * 40 - 10
        out.append(torch.cat([xy, xy + side], 1))
    if degenerate:
        out[0] = torch.cat([out[0], torch.tensor([[10.0, 10, 10, 10], [50, 40, 20, 30]], dtype=dtype)])
    return out


def ours(op: str = "roi_align", output_size: int = 7, **options) -> MultiLevelRoIPooler:
    options = get_roi_op(op).resolve_options(options)
    return MultiLevelRoIPooler.build(lambda s: build_roi_op(op, output_size, s, **options), FPN_FEATURE_NAMES, FPN_LEVELS)


def test_roi_align_avg_equals_multiscale_roialign_forward_and_backward():
    feats, boxes = pyramid(), proposals(degenerate=False)  # torchvision's level of a degenerate box is undefined
    assert len(set(assign_levels(torch.cat(boxes), FPN_LEVELS).tolist())) == 4
    theirs = MultiScaleRoIAlign(list(FPN_FEATURE_NAMES), 7, 2)
    shapes = [SIZE, SIZE]
    results = []
    for pooler in (ours("roi_align", sampling_ratio=2), theirs):
        x = {k: f.clone().requires_grad_(True) for k, f in feats.items()}
        out = pooler(x, boxes, shapes)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        results.append((out, [x[k].grad for k in FPN_FEATURE_NAMES]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_levels_follow_fpn_eq1_like_torchvision():
    boxes = torch.cat(proposals(degenerate=False))  # torchvision's mapper is undefined for degenerate boxes
    expected = LevelMapper(2, 5)([boxes])
    assert torch.equal(assign_levels(boxes, FPN_LEVELS), expected)
    sides = torch.tensor([[0.0, 0, 111.9, 111.9], [0, 0, 112, 112], [0, 0, 224, 224], [0, 0, 448, 448], [0, 0, 2000, 2000]])
    assert assign_levels(sides, FPN_LEVELS).tolist() == [0, 1, 2, 3, 3]  # P2 < 112 px <= P3 < 224 <= P4 < 448 <= P5


def test_degenerate_boxes_go_to_a_valid_level():
    bad = torch.tensor([[10.0, 10, 10, 10], [50, 40, 20, 30], [float("nan"), 0, 5, 5], [0, 0, float("inf"), 5]])
    levels = assign_levels(bad, FPN_LEVELS)
    assert ((levels >= 0) & (levels < len(FPN_LEVELS))).all()
    assert levels[:3].tolist() == [0, 0, 0]


class BoxIndex(torch.nn.Module):
    """A stand-in op whose output is the x1 of each box it was given (to see the order)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def forward(self, features, rois):
        return torch.stack([rois[:, 1], torch.full_like(rois[:, 1], self.level)], 1)[:, :, None, None]


def test_rows_come_back_in_the_order_of_the_boxes():
    boxes = proposals()
    pooler = MultiLevelRoIPooler([BoxIndex(k) for k in FPN_LEVELS], FPN_FEATURE_NAMES, FPN_LEVELS)
    out = pooler(pyramid(), boxes)
    flat = torch.cat(boxes)
    assert torch.equal(out[:, 0, 0, 0], flat[:, 0])
    assert torch.equal(out[:, 1, 0, 0].long(), torch.tensor(FPN_LEVELS)[assign_levels(flat, FPN_LEVELS)])


@pytest.mark.parametrize("op", list(ROI_OPS))
def test_every_op_of_the_table_pools_every_level_with_gradients(op):
    feats, boxes = pyramid(), proposals()
    x = {k: f.clone().requires_grad_(True) for k, f in feats.items()}
    out = ours(op)(x, boxes)
    assert out.shape == (sum(len(b) for b in boxes), 3, 7, 7) and torch.isfinite(out).all()
    out.sum().backward()
    levels = set(assign_levels(torch.cat(boxes), FPN_LEVELS).tolist())
    assert len(levels) >= 3  # the test boxes reach several levels
    for i, k in enumerate(FPN_FEATURE_NAMES):
        assert (x[k].grad.abs().sum() > 0) == (i in levels), k


@pytest.mark.parametrize("op, options", [("roi_pool", {}), ("roi_align", {"mode": "max"}), ("prroi_pool", {})])
def test_fpn_detector_trains_and_predicts_with_masks(op, options):
    cfg = tiny_config(fpn=True, out_channels=16, roi_op=op, roi_options=options, mask=True)
    model = build_detector(cfg)
    assert isinstance(model.roi_heads.box_roi_pool, MultiLevelRoIPooler)
    assert isinstance(model.roi_heads.mask_roi_pool, MultiLevelRoIPooler)
    images, targets = scene(mask=True)
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    out = model.eval()(images)
    assert {"boxes", "labels", "scores", "masks"} <= out[0].keys()


@pytest.mark.parametrize("overrides, key", [
    (dict(fpn=True, backbone="vgg16"), "DetectorConfig.fpn"),
    (dict(fpn=True, stride=16), "DetectorConfig.stride"),
    (dict(fpn=True, anchor_sizes=(16, 32)), "DetectorConfig.anchor_sizes"),
    (dict(fpn="yes"), "DetectorConfig.fpn"),
])
def test_bad_fpn_settings_name_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        DetectorConfig(**overrides)
