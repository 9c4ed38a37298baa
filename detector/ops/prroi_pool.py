"""Precise RoI Pooling (IoU-Net, Jiang et al. ECCV 2018): the exact integral, no sampling points.

The feature map is read as the continuous function
``f(y, x) = sum_ij F[i, j] * hat(y - i) * hat(x - j)`` with ``hat(t) = max(0, 1 - |t|)``
(zero beyond the map), and each bin's value is the integral of ``f`` over the bin divided
by the bin's area. There is no sampling ratio to tune and the output is a smooth function
of the box, so gradients reach the box coordinates too (IoU-Net refines boxes that way).
"""

from __future__ import annotations

from torch import Tensor, nn

from ._common import BoxesType, check_scale, finish, pair, prepare


def prroi_pool(input: Tensor, boxes: BoxesType, output_size, spatial_scale: float = 1.0) -> Tensor:
    """Exact average of the bilinearly interpolated feature over every bin."""
    ph, pw = pair(output_size)
    scale = check_scale(spatial_scale)
    p = prepare(input, boxes)
    raise NotImplementedError("prroi_pool is being implemented (issue 2)")
    return finish(p.input, p)


class PrRoIPool(nn.Module):
    """Module form of :func:`prroi_pool`: ``PrRoIPool(7, 1 / 16)(features, boxes)``."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale = check_scale(spatial_scale)

    def forward(self, input: Tensor, boxes: BoxesType) -> Tensor:
        return prroi_pool(input, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
