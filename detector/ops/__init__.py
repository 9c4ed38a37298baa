"""The ROI layer family: RoIPool, RoIWarp, RoIAlign (avg/max) and PrRoIPool.

Every operator maps a feature map ``Tensor[N, C, H, W]`` and boxes (``Tensor[K, 5]`` of
``(batch_index, x1, y1, x2, y2)`` or ``list[Tensor[L, 4]]``) to ``Tensor[K, C, PH, PW]``,
so proposals of any size reach the box head as vectors of one length. They differ only in
how they quantize, which is what this project ablates. Signatures are drop-in compatible
with ``torchvision.ops``; the exact semantics are in ``shared/ROI_OPS.md``.

Pick one by name with :func:`build_roi_op` (``ROI_OPS`` lists the names).
"""

from .prroi_pool import PrRoIPool, prroi_pool
from .registry import ROI_OPS, build_roi_op
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .roi_warp import RoIWarp, roi_warp

__all__ = [
    "ROI_OPS",
    "build_roi_op",
    "roi_pool",
    "roi_warp",
    "roi_align",
    "prroi_pool",
    "RoIPool",
    "RoIWarp",
    "RoIAlign",
    "PrRoIPool",
]
