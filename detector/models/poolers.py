"""`MultiLevelRoIPooler`: any ROI op of the family, pooled from the FPN level each box belongs to.

With a feature pyramid (P2-P5, strides 4-32) a box is pooled from one level, chosen by its
size (FPN paper, Eq. 1): ``k = floor(k0 + log2(sqrt(w * h) / 224))`` with ``k0 = 4``
(a 224 px box, ImageNet's canonical size, is pooled from P4), clamped to the levels present.
Small boxes go to the fine levels, which is where the quantization of RoIPool should cost
less than at a single stride-32 map. torchvision's `MultiScaleRoIAlign` does this for
RoIAlign only; this pooler wraps one module per level of *any* op with the `detector.ops`
call signature, each built with its level's own ``spatial_scale``, so every variant of the
ablation runs under FPN the same way.

Contract (as `MultiScaleRoIAlign`, so `RoIHeads` takes it as its box or mask pooler):
``forward(features: dict[str, Tensor[N, C, H_l, W_l]], proposals: list[Tensor[L_i, 4]],
image_shapes) -> Tensor[K, C, PH, PW]``, ``K = sum(L_i)``, rows in the order of the boxes.
Level assignment matches torchvision's ``LevelMapper`` (same eps), except that a box with
zero or negative area, or non-finite coordinates, goes to the finest level instead of an
undefined one. The spatial scales are fixed by the pyramid's strides (``1 / 2**k``), not
guessed from feature and image sizes: they agree with torchvision's inferred scales whenever
the batch is padded to a multiple of 32, which `GeneralizedRCNNTransform` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

#: FPN Eq. 1: a box of `CANONICAL_SCALE` px (sqrt of its area) is pooled from level `CANONICAL_LEVEL`.
CANONICAL_SCALE = 224
CANONICAL_LEVEL = 4
_EPS = 1e-6  # torchvision's LevelMapper eps: a box of exactly 112 px goes to level 3, not 2


def assign_levels(boxes: torch.Tensor, levels: Sequence[int], canonical_scale: float = CANONICAL_SCALE,
                  canonical_level: int = CANONICAL_LEVEL) -> torch.Tensor:
    """Index into `levels` (ascending pyramid levels, e.g. ``(2, 3, 4, 5)``) for each box of ``Tensor[K, 4]``.

    Degenerate boxes (zero/negative area, NaN or inf coordinates) get index 0 (the finest level).
    """
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    scale = torch.sqrt(w * h)
    k = torch.floor(canonical_level + torch.log2(scale / canonical_scale) + torch.tensor(_EPS, dtype=scale.dtype))
    k = torch.nan_to_num(k, nan=float(levels[0]), posinf=float(levels[-1]), neginf=float(levels[0]))
    return (k.clamp(min=levels[0], max=levels[-1]) - levels[0]).to(torch.int64)


class MultiLevelRoIPooler(nn.Module):
    """Pools each box from its FPN level with that level's op (see the module doc).

    Args:
        ops: one module per level, finest first, each called as ``op(features, rois)`` with
            ``rois`` ``Tensor[K_l, 5]`` ``(batch_index, x1, y1, x2, y2)`` and built with its
            level's ``spatial_scale`` (``1 / 2**level``).
        featmap_names: the feature-dict keys of those levels (torchvision's FPN names P2-P5
            ``"0"``..``"3"``; its extra ``"pool"`` level is for the RPN only).
        levels: the pyramid levels of `featmap_names` (``(2, 3, 4, 5)``), ascending.

    Example:
        >>> pooler = MultiLevelRoIPooler.build(lambda scale: RoIAlign(7, scale, 2), ["0", "1", "2", "3"], (2, 3, 4, 5))
    """

    def __init__(self, ops: Sequence[nn.Module], featmap_names: Sequence[str], levels: Sequence[int]) -> None:
        super().__init__()
        if not (len(ops) == len(featmap_names) == len(levels)) or not ops:
            raise ValueError(f"need one op per level: {len(ops)} ops, {len(featmap_names)} names, {len(levels)} levels")
        if list(levels) != sorted(set(levels)):
            raise ValueError(f"levels must be ascending and distinct, got {list(levels)}")
        self.ops = nn.ModuleList(ops)
        self.featmap_names = list(featmap_names)
        self.levels = tuple(int(k) for k in levels)

    @classmethod
    def build(cls, make_op: Callable[[float], nn.Module], featmap_names: Sequence[str],
              levels: Sequence[int]) -> MultiLevelRoIPooler:
        """One op per level from ``make_op(spatial_scale)``."""
        return cls([make_op(1.0 / 2 ** k) for k in levels], featmap_names, levels)

    def forward(self, features: dict[str, torch.Tensor], proposals: list[torch.Tensor],
                image_shapes: list[tuple[int, int]] | None = None) -> torch.Tensor:
        """`image_shapes` is part of RoIHeads' pooler signature; the scales are the levels' strides."""
        maps = [features[name] for name in self.featmap_names]
        boxes = torch.cat(proposals)  # (K, 4), in the order of the images, then of their boxes
        batch_index = torch.cat([torch.full((len(p),), i, dtype=boxes.dtype, device=boxes.device)
                                 for i, p in enumerate(proposals)])
        rois = torch.cat([batch_index[:, None], boxes], dim=1)  # (K, 5)
        level = assign_levels(boxes, self.levels)
        first = maps[0]
        out: torch.Tensor | None = None
        for index, (op, feature) in enumerate(zip(self.ops, maps)):
            rows = torch.nonzero(level == index).squeeze(1)
            pooled = op(feature, rois[rows])  # (K_l, C, PH, PW)
            if out is None:
                out = torch.zeros((len(rois), *pooled.shape[1:]), dtype=pooled.dtype, device=first.device)
            out = out.index_copy(0, rows, pooled) if len(rows) else out
        assert out is not None
        return out
