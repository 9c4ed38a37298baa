"""The detector: torchvision's GeneralizedRCNN assembled around a swappable ROI layer.

Everything except the ROI layer, the backbone cut and the C5 head is torchvision's:
`GeneralizedRCNNTransform` (resize to `min_size`/`max_size`, normalize, batch with
padding to a multiple of 32, map detections back to the original image size),
`AnchorGenerator`, `RPNHead`, `RegionProposalNetwork`, and `RoIHeads` (proposal
sampling, box coding, Fast R-CNN and mask losses, post-processing, mask pasting).
torchvision's `FasterRCNN`/`MaskRCNN` classes would reject a pooler other than
`MultiScaleRoIAlign`, so `build_detector` assembles `GeneralizedRCNN` + `RoIHeads`
itself and hands RoIHeads a `SingleLevelRoIPooler` around the configured op.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from detector.ops import build_roi_op

from .backbones import BODY_CHANNELS, FPN_FEATURE_NAMES, FPN_LEVELS, build_backbone, build_fpn_backbone
from .config import DetectorConfig
from .heads import FastRCNNPredictor, MaskRCNNHeads, MaskRCNNPredictor, Res5Head, SingleLevelRoIPooler, TwoMLPHead
from .poolers import MultiLevelRoIPooler
from .targets import validate_images, validate_targets

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TwoStageDetector(GeneralizedRCNN):
    """GeneralizedRCNN that checks its inputs first (see `targets.validate_targets`).

    Args:
        backbone: module with `out_channels`, `Tensor[N, 3, H, W] -> Tensor[N, C, h, w]`.
        rpn, roi_heads, transform: torchvision's detection parts, already built.
        num_classes: classes including the background, to check target labels.

    I/O (torchvision's detection convention):
        train: `model(images: list[Tensor[3, H, W]] in [0, 1], targets: list[dict])` ->
            `dict[str, Tensor]` of losses (loss_objectness, loss_rpn_box_reg,
            loss_classifier, loss_box_reg [, loss_mask]).
        eval: `model(images)` -> `list[dict]` with `boxes` `Tensor[D, 4]` (x1, y1, x2, y2,
            original image pixels), `labels` int64 `Tensor[D]`, `scores` `Tensor[D]`
            [, `masks` `Tensor[D, 1, H, W]` probabilities].
    """

    def __init__(
        self, backbone: nn.Module, rpn: nn.Module, roi_heads: RoIHeads, transform: nn.Module, num_classes: int
    ) -> None:
        super().__init__(backbone, rpn, roi_heads, transform)
        self.num_classes = num_classes

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        validate_images(images)
        if self.training:
            validate_targets(images, targets, self.num_classes, need_masks=self.roi_heads.has_mask())
        return super().forward(images, targets)


def build_roi_layer(name: str, output_size: int, spatial_scale: float, options: dict[str, Any]) -> nn.Module:
    """The ROI variant table's op `name` (`detector.ops.build_roi_op`) with its resolved `options`."""
    return build_roi_op(name, output_size, spatial_scale, **options)


def build_detector(
    cfg: DetectorConfig, *, box_roi_op: nn.Module | None = None, mask_roi_op: nn.Module | None = None
) -> TwoStageDetector:
    """Build the detector `cfg` describes (random init unless `cfg.weights` says otherwise).

    Args:
        cfg: the configuration.
        box_roi_op, mask_roi_op: inject any module with the ROI-op call signature
            (`op(features, boxes) -> Tensor[K, C, PH, PW]`) instead of building
            `cfg.roi_op` / `cfg.mask_roi_op` from `detector.ops`. It must use
            `spatial_scale = cfg.spatial_scale` and produce `cfg.resolved_roi_output_size`
            (box) or `cfg.mask_roi_output_size` (mask) bins.

    Example:
        >>> model = build_detector(DetectorConfig.small(roi_op="roi_pool")).eval()
        >>> out = model([torch.rand(3, 120, 160)])  # [{"boxes", "labels", "scores"}]
    """
    if cfg.fpn:
        return _build_fpn_detector(cfg, box_roi_op, mask_roi_op)
    backbone, c5 = build_backbone(
        cfg.backbone,
        cfg.stride,
        weights=cfg.weights,
        norm=cfg.resolved_norm,
        trainable_layers=cfg.resolved_trainable_layers,
        out_channels=cfg.out_channels,
    )
    channels, size = backbone.out_channels, cfg.resolved_roi_output_size

    anchors = AnchorGenerator(sizes=(tuple(cfg.resolved_anchor_sizes),), aspect_ratios=(tuple(cfg.aspect_ratios),))
    rpn = _rpn(cfg, anchors, channels)

    if box_roi_op is None:
        box_roi_op = build_roi_layer(cfg.roi_op, size, cfg.spatial_scale, cfg.resolved_roi_options)
    if cfg.resolved_box_head == "res5":
        if c5 is None:  # DetectorConfig validation already rules this out
            raise ValueError(f"box_head='res5' needs a ResNet at stride 16, got {cfg.backbone} at stride {cfg.stride}")
        box_head: nn.Module = Res5Head(c5, BODY_CHANNELS[(cfg.backbone, 32)])
        width = box_head.out_channels
    else:
        box_head = TwoMLPHead(channels * size * size, cfg.representation_size)
        width = cfg.representation_size

    mask_pool = None
    if cfg.mask:
        if mask_roi_op is None:
            mask_roi_op = build_roi_layer(
                cfg.resolved_mask_roi_op, cfg.mask_roi_output_size, cfg.spatial_scale, cfg.resolved_mask_roi_options
            )
        mask_pool = SingleLevelRoIPooler(mask_roi_op)
    roi_heads = _roi_heads(cfg, SingleLevelRoIPooler(box_roi_op), box_head, width, channels, mask_pool)
    return _assemble(cfg, backbone, rpn, roi_heads)


def _roi_heads(cfg: DetectorConfig, box_pool: nn.Module, box_head: nn.Module, width: int, channels: int,
               mask_pool: nn.Module | None) -> RoIHeads:
    """torchvision's RoIHeads around our poolers and heads (the mask branch when `mask_pool` is given)."""
    mask_parts: dict[str, nn.Module] = {}
    if mask_pool is not None:
        mask_parts = dict(
            mask_roi_pool=mask_pool,
            mask_head=MaskRCNNHeads(channels, list(cfg.mask_head_layers), dilation=1),
            mask_predictor=MaskRCNNPredictor(cfg.mask_head_layers[-1], cfg.mask_dim_reduced, cfg.num_classes),
        )
    return RoIHeads(
        box_pool,
        box_head,
        FastRCNNPredictor(width, cfg.num_classes),
        cfg.box_fg_iou_thresh,
        cfg.box_bg_iou_thresh,
        cfg.box_batch_size_per_image,
        cfg.box_positive_fraction,
        None,
        cfg.box_score_thresh,
        cfg.box_nms_thresh,
        cfg.box_detections_per_img,
        **mask_parts,
    )


def _assemble(cfg: DetectorConfig, backbone: nn.Module, rpn: nn.Module, roi_heads: RoIHeads) -> TwoStageDetector:
    transform = GeneralizedRCNNTransform(cfg.min_size, cfg.max_size, list(IMAGENET_MEAN), list(IMAGENET_STD))
    return TwoStageDetector(backbone, rpn, roi_heads, transform, cfg.num_classes)


def _rpn(cfg: DetectorConfig, anchors: AnchorGenerator, channels: int) -> RegionProposalNetwork:
    return RegionProposalNetwork(
        anchors,
        RPNHead(channels, anchors.num_anchors_per_location()[0]),
        cfg.rpn_fg_iou_thresh,
        cfg.rpn_bg_iou_thresh,
        cfg.rpn_batch_size_per_image,
        cfg.rpn_positive_fraction,
        dict(training=cfg.rpn_pre_nms_top_n_train, testing=cfg.rpn_pre_nms_top_n_test),
        dict(training=cfg.rpn_post_nms_top_n_train, testing=cfg.rpn_post_nms_top_n_test),
        cfg.rpn_nms_thresh,
        score_thresh=cfg.rpn_score_thresh,
    )


def _build_fpn_detector(cfg: DetectorConfig, box_roi_op: nn.Module | None,
                        mask_roi_op: nn.Module | None) -> TwoStageDetector:
    """`build_detector` with a feature pyramid: the same RPN, heads and transform as
    torchvision's ``fasterrcnn_resnet50_fpn``, the ROI layer any op of the table, one module
    per level P2-P5 (`MultiLevelRoIPooler`). An injected `box_roi_op` / `mask_roi_op` must be
    a pooler with RoIHeads' signature (it sees the whole feature dict)."""
    backbone = build_fpn_backbone(cfg.backbone, weights=cfg.weights, norm=cfg.resolved_norm,
                                  trainable_layers=cfg.resolved_trainable_layers, out_channels=cfg.out_channels)
    channels, size = backbone.out_channels, cfg.resolved_roi_output_size
    anchors = AnchorGenerator(sizes=tuple((s,) for s in cfg.resolved_anchor_sizes),
                              aspect_ratios=(tuple(cfg.aspect_ratios),) * len(cfg.resolved_anchor_sizes))

    def pooler(op: str, output_size: int, options: dict[str, Any]) -> MultiLevelRoIPooler:
        return MultiLevelRoIPooler.build(lambda scale: build_roi_layer(op, output_size, scale, options),
                                         FPN_FEATURE_NAMES, FPN_LEVELS)

    box_pool = box_roi_op if box_roi_op is not None else pooler(cfg.roi_op, size, cfg.resolved_roi_options)
    mask_pool = None
    if cfg.mask:
        mask_pool = mask_roi_op if mask_roi_op is not None else pooler(
            cfg.resolved_mask_roi_op, cfg.mask_roi_output_size, cfg.resolved_mask_roi_options)
    box_head = TwoMLPHead(channels * size * size, cfg.representation_size)
    roi_heads = _roi_heads(cfg, box_pool, box_head, cfg.representation_size, channels, mask_pool)
    return _assemble(cfg, backbone, _rpn(cfg, anchors, channels), roi_heads)
