"""RoIAlign avg mode: our C++ CPU kernel, torchvision's kernel everywhere else.

Both compute ``docs/roi_ops.md`` "RoIAlign, mode=avg", which *is*
``torchvision.ops.roi_align``. Which path runs (chosen by measurement):

- CPU float32/float64 with the extension built: ``csrc/align_avg.cpp`` wrapped in
  :class:`_AlignAvgFunction`. torchvision's CPU backward is a single-threaded scalar loop
  that recomputes every sample position per channel: in the quickstart's training step
  (ResNet-18 C4, 512 boxes x 128 channels x 7 x 7 bins x 4 samples) it took ~170 ms of a
  ~500 ms step. Ours computes a box's sample positions once for all channels, vectorizes
  over channels on channels-last buffers and splits the backward over channel blocks.
  The forward equals torchvision's exactly; the backward to rounding (tests/ops).
- Otherwise (CUDA, no compiler): ``torch.ops.torchvision.roi_align`` with its autograd
  (:func:`align_avg_torch`). torchvision does not cap the adaptive grid, so the rare boxes
  whose grid reaches ``options.MAX_SAMPLING_GRID`` (only absurd boxes: over 64 cells per
  bin) are computed on their capped grid instead, as the C++ kernel does: torchvision's
  RoIAlign with output ``(PH*gh, PW*gw)`` and one sample per cell gives every sample (the
  same trick as ``_align_max``), and a mean over each ``(gh, gw)`` window gives the bin.
  Whether any box can get there is known from ``Prepared.extent`` without another sync.

Memory: nothing is saved for the backward but the rois (as torchvision); the backward
returns its gradient in channels_last memory, the layout the model's convolutions use.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._common import adaptive_grid_capped, align_grids, grid_chunks
from ._extension import load_extension
from .options import MAX_SAMPLING_GRID


class _AlignAvgFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, ph, pw, scale, sampling_ratio, aligned):
        out, samples = load_extension().align_avg_forward(input, rois, scale, ph, pw, sampling_ratio, aligned)
        ctx.save_for_backward(rois)
        ctx.args = (scale, ph, pw, sampling_ratio, aligned, tuple(input.shape), samples)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (rois,) = ctx.saved_tensors
        scale, ph, pw, sampling_ratio, aligned, shape, samples = ctx.args
        if not ctx.needs_input_grad[0]:
            return (None,) * 7
        grad_input = load_extension().align_avg_backward(
            grad, rois, scale, ph, pw, sampling_ratio, aligned, shape, samples
        )
        return grad_input, None, None, None, None, None, None


def align_avg_cpp(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool):
    """C++ path (CPU tensors of one dtype, float32 or float64; extension must be loaded)."""
    return _AlignAvgFunction.apply(input, rois, ph, pw, scale, sampling_ratio, aligned)


def align_avg_torchvision(
    input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """torchvision's kernel as it is (any device, its own autograd; adaptive grid not capped)."""
    return torch.ops.torchvision.roi_align(input, rois, scale, ph, pw, sampling_ratio, aligned)


def align_avg_torch(
    input: Tensor,
    rois: Tensor,
    ph: int,
    pw: int,
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    extent: float = math.inf,
) -> Tensor:
    """Torch path: torchvision's kernel, with the adaptive grid capped as in C++ (module doc).

    ``extent`` bounds every box side in feature cells (``Prepared.extent``); the default,
    unknown, checks the boxes' grids (one sync).
    """
    if not adaptive_grid_capped(extent, ph, pw, sampling_ratio):
        return align_avg_torchvision(input, rois, ph, pw, scale, sampling_ratio, aligned)
    grids = align_grids(rois, ph, pw, scale, sampling_ratio, aligned)
    special = ((grids >= MAX_SAMPLING_GRID) | (grids == 0)).any(1)  # capped, or no sampling point
    usual = torch.nonzero(~special).flatten()
    out = input.new_zeros((rois.shape[0], input.shape[1], ph, pw))
    if usual.numel() > 0:
        out = out.index_copy(
            0, usual, align_avg_torchvision(input, rois[usual], ph, pw, scale, sampling_ratio, aligned)
        )
    rare = torch.nonzero(special).flatten()
    k, c = rois.shape[0], input.shape[1]
    for gh, gw, sub in grid_chunks(grids[rare], c * ph * pw, max(1 << 18, k * c * ph * pw // 8)):
        if gh == 0 or gw == 0:
            continue  # no sampling point: the bin reads 0
        sub = rare[sub]
        samples = torch.ops.torchvision.roi_align(input, rois[sub], scale, ph * gh, pw * gw, 1, aligned)
        # (m, C, PH*gh, PW*gw) -> (m, C, PH, gh, PW, gw) -> mean over each bin's gh x gw samples
        out = out.index_copy(0, sub, samples.view(sub.numel(), c, ph, gh, pw, gw).mean((3, 5)))
    return out


def use_cpp(input: Tensor) -> bool:
    """The C++ kernel serves CPU float32/float64 when it is built; everything else uses torchvision."""
    return input.device.type == "cpu" and input.dtype in (torch.float32, torch.float64) and load_extension() is not None


def roi_align_avg(
    input: Tensor,
    rois: Tensor,
    ph: int,
    pw: int,
    scale: float,
    sampling_ratio: int,
    aligned: bool,
    extent: float = math.inf,
) -> Tensor:
    """Dispatch between the C++ kernel and the torch path (inputs already checked)."""
    if use_cpp(input):
        return align_avg_cpp(input, rois, ph, pw, scale, sampling_ratio, aligned)
    return align_avg_torch(input, rois, ph, pw, scale, sampling_ratio, aligned, extent)


__all__ = ["roi_align_avg", "align_avg_cpp", "align_avg_torch", "align_avg_torchvision", "use_cpp"]
