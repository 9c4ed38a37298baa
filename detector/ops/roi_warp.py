"""RoIWarp: snap the box to the feature grid, then sample bilinearly (Mask R-CNN Table 2c).

Each coordinate becomes ``round(v * s) / s`` (half away from zero, like C's ``round``;
``torch.round`` would round halves to even), then everything is :func:`roi_align` with the
same ``sampling_ratio``, ``aligned`` and ``mode``. The kernel gets the snapped box in
feature coordinates, ``round(v * s)`` with scale 1: the same box without a round trip
through ``/ s``, which could overflow for a tiny ``s``. Comparing RoIWarp with RoIAlign isolates
the effect of *alignment*; comparing it with RoIPool isolates *bilinear sampling*.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> box = torch.tensor([[0, 0.2, 0.2, 2.2, 2.2]])
    >>> roi_warp(x, box, 1, sampling_ratio=2)  # snapped to (0, 0, 2, 2) first
    tensor([[[[5.]]]])
    >>> roi_align(x, box, 1, sampling_ratio=2)  # the same box, unquantized
    tensor([[[[6.]]]])
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import BoxesType, check_scale, pair, prepare, round_half_away, run
from .options import check_aligned, check_mode, check_sampling_ratio
from .roi_align import RoIAlign, _align_checked, roi_align  # noqa: F401  (roi_align: docstring example)


def roi_warp(
    input: Tensor,
    boxes: BoxesType,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """RoIAlign on boxes snapped to the feature grid. Arguments as :func:`roi_align`
    (``sampling_ratio`` at most 64, adaptive grid capped at 64 per bin side).

    Returns:
        Tensor[K, C, PH, PW] in the input's dtype; rows of boxes with NaN/inf are 0, and
        so is every row on an empty map (``H`` or ``W == 0``).
    """
    ph, pw = pair(output_size)
    scale = check_scale(spatial_scale)
    sampling_ratio = check_sampling_ratio(sampling_ratio)
    aligned = check_aligned(aligned)
    check_mode(mode)
    p = prepare(input, boxes, scale)
    snapped = round_half_away(p.rois[:, 1:] * scale)  # (K, 4) grid lines, in feature cells
    p.rois = torch.cat([p.rois[:, :1], snapped], 1)
    extent = p.extent + 1  # snapping moves each side by at most one cell
    return run(p, ph, pw, lambda x, r: _align_checked(x, r, ph, pw, 1.0, sampling_ratio, aligned, mode, extent))


class RoIWarp(RoIAlign):
    """Module form of :func:`roi_warp`: ``RoIWarp(7, 1 / 16, sampling_ratio=2)(features, boxes)``.

    Same options (and validation) as :class:`RoIAlign`, because RoIWarp *is* RoIAlign on the
    snapped box; only the forward differs.
    """

    def forward(self, input: Tensor, boxes: BoxesType) -> Tensor:
        return roi_warp(
            input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.mode
        )
