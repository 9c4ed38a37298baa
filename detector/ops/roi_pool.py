"""RoIPool: Fast R-CNN's quantized max pooling (Girshick, ICCV 2015).

The box is quantized twice, as the slides show: its origin is rounded to the feature grid
(``round(x1 * s)``, half away from zero), then its size is counted in whole cells and cut
into ``PH x PW`` bins whose edges are floored/ceiled to cells. Each bin takes the
per-channel maximum; the gradient goes to the arg-max cell. Both quantizations shift and
crop what the classifier sees (the slides' boy loses a strip and gains some of his
father), which is what RoIAlign removes.

The semantics are exactly ``torchvision.ops.roi_pool``, so this dispatches to its kernel
(CPU and CUDA, with autograd) after the checks and NaN handling in ``_common``.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> roi_pool(x, torch.tensor([[0, 0.0, 0.0, 3.0, 3.0]]), output_size=2)[0, 0]
    tensor([[ 5.,  7.],
            [13., 15.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import BoxesType, check_scale, pair, prepare, run


def roi_pool(input: Tensor, boxes: BoxesType, output_size, spatial_scale: float = 1.0) -> Tensor:
    """Quantized max pooling of every box to ``output_size``.

    Args:
        input (Tensor[N, C, H, W]): feature map.
        boxes (Tensor[K, 5] or list[Tensor[L, 4]]): ``(batch_index, x1, y1, x2, y2)`` rows, or
            one ``(x1, y1, x2, y2)`` tensor per image, in image coordinates.
        output_size (int or (PH, PW)): bins per box.
        spatial_scale (float): image -> feature coordinates, ``1 / stride``.

    Returns:
        Tensor[K, C, PH, PW] in the input's dtype; rows of boxes with NaN/inf are 0, and
        so is every row on an empty map (``H`` or ``W == 0``).
    """
    ph, pw = pair(output_size)
    scale = check_scale(spatial_scale)
    p = prepare(input, boxes, scale)
    return run(p, ph, pw, lambda x, r: torch.ops.torchvision.roi_pool(x, r, scale, ph, pw)[0])


class RoIPool(nn.Module):
    """Module form of :func:`roi_pool`: ``RoIPool(7, 1 / 16)(features, boxes)``."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale = check_scale(spatial_scale)

    def forward(self, input: Tensor, boxes: BoxesType) -> Tensor:
        return roi_pool(input, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
