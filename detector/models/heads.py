"""ROI heads: the adapter that lets any ROI op serve torchvision's RoIHeads, and box heads.

torchvision's `RoIHeads` calls its pooler as
`box_roi_pool(features: dict[str, Tensor], proposals: list[Tensor[L_i, 4]], image_shapes)`,
the signature of `MultiScaleRoIAlign`, and torchvision's `FasterRCNN` refuses any other
pooler type. `SingleLevelRoIPooler` adapts an op with the `detector.ops` call signature
`op(features Tensor[N, C, H, W], boxes list[Tensor[L_i, 4]]) -> Tensor[K, C, PH, PW]` to it,
so RoIPool, RoIWarp, RoIAlign (avg/max), PrRoIPool, or any user module with that
signature, can be swapped in. The op carries its own `spatial_scale` (`1 / stride`).

Box heads map the pooled `Tensor[K, C, P, P]` to one vector per box:
- `TwoMLPHead` (torchvision's fc6/fc7, `representation_size` wide), any backbone;
- `Res5Head`: the ResNet C5 stage + global average pooling (Faster R-CNN C4 at stride 16),
  which strides a 14 x 14 ROI to 7 x 7 before pooling.
The class scores and class-specific box deltas come from torchvision's `FastRCNNPredictor`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

__all__ = ["FastRCNNPredictor", "MaskRCNNHeads", "MaskRCNNPredictor", "Res5Head", "SingleLevelRoIPooler", "TwoMLPHead"]


class SingleLevelRoIPooler(nn.Module):
    """Calls a single-level ROI op with RoIHeads' pooler signature.

    Args:
        roi_op: a module called as `roi_op(features, boxes)` with `features`
            `Tensor[N, C, H, W]` and `boxes` `list[Tensor[L_i, 4]]` (x1, y1, x2, y2) in
            the coordinates of the resized, batched images; returns `Tensor[K, C, PH, PW]`,
            `K = sum(L_i)`, in the order of the boxes.
        feature_key: which entry of the backbone's feature dict to pool from
            (GeneralizedRCNN names a single tensor "0").
    """

    def __init__(self, roi_op: nn.Module, feature_key: str = "0") -> None:
        super().__init__()
        self.roi_op = roi_op
        self.feature_key = feature_key

    def forward(
        self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor], image_shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """`image_shapes` is part of the pooler signature but unused: the op's
        `spatial_scale` is fixed by the backbone stride, not guessed from sizes."""
        return self.roi_op(features[self.feature_key], proposals)


class Res5Head(nn.Module):
    """ResNet C5 stage as the ROI box head: `Tensor[K, C4, 14, 14]` -> `Tensor[K, C5]`.

    Args:
        c5: torchvision's `layer4` (its first block has stride 2).
        out_channels: channels `c5` produces (512 for ResNet-18/34, 2048 for ResNet-50);
            the predictor is built with this width.
    """

    def __init__(self, c5: nn.Module, out_channels: int) -> None:
        super().__init__()
        self.c5 = c5
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c5(x)  # (K, C4, P, P) -> (K, C5, P/2, P/2)
        return x.mean(dim=(2, 3))  # (K, C5, P/2, P/2) -> (K, C5)
