"""The ROI layer family: RoIPool, RoIWarp, RoIAlign (avg/max) and PrRoIPool.

Every operator maps a feature map ``Tensor[N, C, H, W]`` and boxes (``Tensor[K, 5]`` of
``(batch_index, x1, y1, x2, y2)`` or ``list[Tensor[L, 4]]``) to ``Tensor[K, C, PH, PW]``,
so proposals of any size reach the box head as vectors of one length. They differ only in
how they quantize, which is what this project ablates. Signatures are drop-in compatible
with ``torchvision.ops``; the exact semantics are in ``docs/roi_ops.md``.

The variant table :data:`ROI_OPS` (name -> :class:`RoiOpSpec`, :mod:`.registry`) is the
one place that says which ops exist and what options they take; pick one by name with
:func:`build_roi_op` or :func:`get_roi_op`, add one with :func:`register_roi_op`. Plugin
modules (``DETECTOR_PLUGINS``, entry points ``detector.roi_ops``; :mod:`.plugins`) are
imported at the end of this file, so they can import these names.
"""

from ._common import round_half_away
from .options import MAX_SAMPLING_GRID, MODES
from .prroi_pool import PrRoIPool, prroi_pool
from .registry import (
    ROI_OPS,
    RoiOpSpec,
    RoiOption,
    build_roi_op,
    get_roi_op,
    register_roi_op,
)
from .roi_align import RoIAlign, roi_align
from .roi_pool import RoIPool, roi_pool
from .roi_warp import RoIWarp, roi_warp

__all__ = [
    "ROI_OPS",
    "RoiOpSpec",
    "RoiOption",
    "register_roi_op",
    "get_roi_op",
    "build_roi_op",
    "roi_pool",
    "roi_warp",
    "roi_align",
    "prroi_pool",
    "RoIPool",
    "RoIWarp",
    "RoIAlign",
    "PrRoIPool",
    "MAX_SAMPLING_GRID",
    "MODES",
    "round_half_away",
]

from .plugins import load_plugins as _load_plugins  # noqa: E402  (last: plugins import the names above)

_load_plugins()
