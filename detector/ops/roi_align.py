"""RoIAlign (Mask R-CNN, He et al. ICCV 2017): no quantization, bilinear sampling points.

The box keeps its real-valued position on the feature map (the slides' ``(9.375, 6.5625)``),
is cut into ``PH x PW`` equal bins, and each bin reads ``gh x gw`` regularly spaced points by
bilinear interpolation (``sampling_ratio=2`` is the slides' 2x2 = 4 points per cell).
``mode`` says how a bin combines its points:

- ``"avg"``: their mean. This is exactly ``torchvision.ops.roi_align``: on CUDA it runs
  torchvision's kernel; on the CPU our kernel (:mod:`._align_avg`), whose backward is
  several times faster than torchvision's single-threaded one and gives the same values.
- ``"max"``: their maximum (the slides' "calculate the sampling values, then max-pool";
  Mask R-CNN Table 2c). torchvision has no such mode, so :mod:`._align_max` provides it
  (a C++ kernel on CPU, a vectorized PyTorch path elsewhere). The gradient goes to the four
  bilinear neighbours of the arg-max point; ties go to the first point in row-major order.

``aligned=True`` shifts the box by half a cell (``-0.5``) so that pixel centres line up,
which is what detectron2 uses; ``aligned=False`` is the original Mask R-CNN behaviour and
clamps tiny boxes to one cell. Exact rules: ``docs/roi_ops.md``.

Example:
    >>> import torch
    >>> x = torch.arange(16.0).view(1, 1, 4, 4)
    >>> roi_align(x, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 1, sampling_ratio=2)  # points (0.5|1.5, 0.5|1.5)
    tensor([[[[5.]]]])
    >>> roi_align(x, [torch.tensor([[0.0, 0.0, 2.0, 2.0]])], 1, sampling_ratio=2, mode="max")
    tensor([[[[7.5000]]]])
"""

from __future__ import annotations

from torch import Tensor, nn

from ._common import BoxesType, check_scale, pair, prepare, run
from .options import check_aligned, check_mode, check_sampling_ratio


def _align_checked(
    x: Tensor,
    rois: Tensor,
    ph: int,
    pw: int,
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    mode: str,
    extent: float,
) -> Tensor:
    """RoIAlign on already checked input/rois (shared with :func:`roi_warp`); ``extent``
    bounds every box side in feature cells (``Prepared.extent``)."""
    if mode == "avg":
        from ._align_avg import roi_align_avg

        return roi_align_avg(x, rois, ph, pw, scale, sampling_ratio, aligned, extent)
    from ._align_max import roi_align_max

    return roi_align_max(x, rois, ph, pw, scale, sampling_ratio, aligned)


def roi_align(
    input: Tensor,
    boxes: BoxesType,
    output_size,
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
    mode: str = "avg",
) -> Tensor:
    """Bilinear-sampling ROI pooling without quantization.

    Args:
        input (Tensor[N, C, H, W]): feature map.
        boxes (Tensor[K, 5] or list[Tensor[L, 4]]): ``(batch_index, x1, y1, x2, y2)`` rows, or
            one ``(x1, y1, x2, y2)`` tensor per image, in image coordinates.
        output_size (int or (PH, PW)): bins per box.
        spatial_scale (float): image -> feature coordinates, ``1 / stride``.
        sampling_ratio (int): points per bin along each axis, at most 64 (``ValueError`` above);
            ``<= 0`` means adaptive, ``ceil(bin_size)`` per box, capped at 64. The cap
            (``detector.ops.MAX_SAMPLING_GRID``) only touches bins over 64 feature cells (with a
            7 x 7 output, boxes over 448 cells: 7168 px at stride 16), where 4096 points per
            bin still average it finely; torchvision has no cap and never finishes on a box
            of 1e30.
        aligned (bool): shift the box by -0.5 cell (pixel-centre alignment); a bool (or 0 / 1),
            ``TypeError`` otherwise.
        mode (str): ``"avg"`` or ``"max"`` over a bin's points.

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
    return run(
        p, ph, pw, lambda x, r: _align_checked(x, r, ph, pw, scale, sampling_ratio, aligned, mode, p.extent)
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`: ``RoIAlign(7, 1 / 16, sampling_ratio=2)(features, boxes)``."""

    def __init__(
        self, output_size, spatial_scale: float, sampling_ratio: int = -1, aligned: bool = False, mode: str = "avg"
    ):
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale = check_scale(spatial_scale)
        self.sampling_ratio = check_sampling_ratio(sampling_ratio)
        self.aligned = check_aligned(aligned)
        self.mode = check_mode(mode)

    def forward(self, input: Tensor, boxes: BoxesType) -> Tensor:
        return roi_align(
            input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned, self.mode
        )

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}, mode={self.mode!r}"
        )
