"""A toy ROI op registered from outside ``detector/``: the proof that one call adds an op.

``toy_pool`` averages, per bin, the four bilinear samples at the centres of the bin's 2 x 2
sub-bins, with the half-cell pixel alignment (``aligned=True``). It is built only from
public torchvision/torch ops: ``torchvision.ops.roi_align`` with twice the output size and
one sample per sub-bin, then ``avg_pool2d`` over each 2 x 2 block. Mathematically that is
``roi_align(sampling_ratio=2, aligned=True, mode="avg")`` (equal up to float rounding);
the point is not a new quantization but that nothing inside ``detector/`` names it.

Use it as a plugin (``docs/roi_ops.md``, "Adding an op"):

    DETECTOR_PLUGINS=tests.plugins.toy_roi_op python train.py fit --config configs/quickstart.yaml \\
        --model.detector.roi_op toy_pool

Importing this module registers the op (once: Python imports a module once per process).
It has no options, no modes and no read region (the analysis skips it).
"""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor, nn

from detector.ops import RoiOpSpec, register_roi_op


def _pair(output_size) -> tuple[int, int]:
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if not (isinstance(ph, int) and isinstance(pw, int) and ph > 0 and pw > 0):
        raise ValueError(f"output_size must be a positive int or a pair of them, got {output_size!r}")
    return ph, pw


class ToyPool(nn.Module):
    """``ToyPool(output_size, spatial_scale)(input, boxes) -> Tensor[K, C, PH, PW]`` (module doc)."""

    def __init__(self, output_size, spatial_scale: float):
        super().__init__()
        self.output_size = _pair(output_size)
        if not spatial_scale > 0:
            raise ValueError(f"spatial_scale must be > 0 (1 / stride), got {spatial_scale!r}")
        self.spatial_scale = float(spatial_scale)

    def forward(self, input: Tensor, boxes) -> Tensor:
        ph, pw = self.output_size
        for b in [boxes] if isinstance(boxes, Tensor) else boxes:
            if b.device != input.device:
                raise ValueError(f"boxes is on {b.device} but input is on {input.device}")
            if b.dtype != input.dtype:
                raise TypeError(f"boxes has dtype {b.dtype} but input has {input.dtype}")
        if not isinstance(boxes, Tensor) and len(boxes) == 0:
            boxes = input.new_zeros((0, 5))
        fine = torchvision.ops.roi_align(
            input, boxes, (2 * ph, 2 * pw), self.spatial_scale, sampling_ratio=1, aligned=True
        )  # (K, C, 2*PH, 2*PW): one sample at the centre of each sub-bin
        return torch.nn.functional.avg_pool2d(fine, 2)  # (K, C, 2*PH, 2*PW) -> (K, C, PH, PW)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"


SPEC = register_roi_op(RoiOpSpec("toy_pool", ToyPool, "ToyPool", "tab:pink"))
