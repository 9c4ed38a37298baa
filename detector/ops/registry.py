"""Pick a ROI operator by name: the ``ROI_OPS`` table and :func:`build_roi_op`.

Configs, the CLI and the ablation name the ROI layer with a string (``roi_op: roi_align``);
this is the one place that maps such a string to a module. A plain dict, filled at import
time of this file (no decorator registry that depends on import side effects elsewhere).
"""

from __future__ import annotations

import inspect

from torch import nn

from .prroi_pool import PrRoIPool
from .roi_align import RoIAlign
from .roi_pool import RoIPool
from .roi_warp import RoIWarp

ROI_OPS: dict[str, type[nn.Module]] = {
    "roi_pool": RoIPool,
    "roi_warp": RoIWarp,
    "roi_align": RoIAlign,
    "prroi_pool": PrRoIPool,
}


def build_roi_op(name: str, output_size, spatial_scale: float, **options) -> nn.Module:
    """Build the ROI module registered as ``name``.

    Args:
        name: one of ``ROI_OPS`` (``roi_pool``, ``roi_warp``, ``roi_align``, ``prroi_pool``).
        output_size: ``int`` or ``(PH, PW)``.
        spatial_scale: ``1 / stride`` of the feature map the op reads.
        **options: op-specific keywords (``sampling_ratio``, ``aligned``, ``mode`` for
            ``roi_align`` / ``roi_warp``; none for the others).

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
        TypeError: an option the op does not take (the message names it and lists the valid ones).

    Example:
        >>> build_roi_op("roi_align", 7, 1 / 16, sampling_ratio=2, mode="max")
        RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=False, mode='max')
    """
    if name not in ROI_OPS:
        raise ValueError(f"unknown ROI op {name!r}; known ops: {', '.join(sorted(ROI_OPS))}")
    cls = ROI_OPS[name]
    accepted = [
        p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "output_size", "spatial_scale")
    ]
    for key in options:
        if key not in accepted:
            valid = ", ".join(accepted) if accepted else "none"
            raise TypeError(f"ROI op {name!r} takes no option {key!r}; its options: {valid}")
    return cls(output_size, spatial_scale, **options)
