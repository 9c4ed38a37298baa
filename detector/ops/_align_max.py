"""RoIAlign max mode: the C++ CPU kernel and a vectorized pure-PyTorch path.

Both compute ``docs/roi_ops.md`` "RoIAlign, mode=max" on checked inputs (see
``_common.prepare``): the maximum of each bin's ``gh x gw`` bilinear samples, the gradient
to the four neighbours of the arg-max sample, ties to the first sample in row-major order.

Which path runs (chosen by measurement, ``benchmarks/roi_ops.py``):

- CPU with the extension built: the C++ kernel (``csrc/align_max.cpp``) wrapped in
  :class:`_AlignMaxFunction`. Its only extra memory is an arg-max map of the output's
  shape in int8 (int16/int32 only for grids beyond 127 samples per bin).
- Otherwise (CUDA, or no compiler): :func:`align_max_torch`. Its idea: the sample points
  of bin ``(ph, pw)`` are exactly the bin centres of ``torchvision.ops.roi_align`` with
  output size ``(PH*gh, PW*gw)`` and ``sampling_ratio=1`` (same start, bin size
  ``rh / (PH*gh)``), so torchvision's kernel produces every sample value and a max over
  each ``(gh, gw)`` window takes the bin's value (its index is the first maximum, as the
  contract asks). With adaptive sampling the grid differs per box, so boxes are grouped by
  distinct ``(gh, gw)`` (a loop over groups, not boxes) and chunked to bound memory; the
  backward reuses torchvision's RoIAlign backward (see :class:`_AlignMaxTorchFunction`).

Both paths cap the adaptive grid at ``options.MAX_SAMPLING_GRID`` points per bin side
(``_common.align_grids``, ``kMaxGrid`` in C++), so a box of 1e30 costs at most 64 x 64
samples per bin.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._common import align_grids, grid_chunks
from ._extension import load_extension


class _AlignMaxFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, ph, pw, scale, sampling_ratio, aligned):
        out, argmax = load_extension().align_max_forward(input, rois, scale, ph, pw, sampling_ratio, aligned)
        ctx.save_for_backward(rois, argmax)
        ctx.args = (scale, ph, pw, sampling_ratio, aligned, tuple(input.shape))
        ctx.mark_non_differentiable(argmax)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rois, argmax = ctx.saved_tensors
        scale, ph, pw, sampling_ratio, aligned, shape = ctx.args
        grad_input = load_extension().align_max_backward(
            grad, rois, argmax, scale, ph, pw, sampling_ratio, aligned, shape
        )
        return grad_input, None, None, None, None, None, None


def align_max_cpp(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool):
    """C++ path (CPU tensors of one dtype, float32 or float64; extension must be loaded)."""
    return _AlignMaxFunction.apply(input, rois, ph, pw, scale, sampling_ratio, aligned)


def _index_dtype(grids: Tensor) -> torch.dtype:
    most = int((grids[:, 0] * grids[:, 1]).max()) if grids.shape[0] else 0
    return torch.int8 if most <= 127 else (torch.int16 if most <= 32767 else torch.int32)


class _AlignMaxTorchFunction(torch.autograd.Function):
    """Torch path with the C++ kernel's memory profile: no sample tensor is kept for backward.

    Forward: per chunk, torchvision's RoIAlign with output ``(PH*gh, PW*gw)`` and one sample
    per cell gives every sample value; regrouped per bin, ``max`` over the last axis gives the
    value and the sample index ``iy*gw + ix`` (first maximum on ties), kept in int8 like the
    C++ kernel. Backward: per chunk, the output gradient is scattered onto that sample of a
    zero sample grid and torchvision's RoIAlign backward spreads it onto the four bilinear
    neighbours. Chunks hold at most an eighth of an output's worth of samples, so the peak
    stays well below twice the output.
    """

    @staticmethod
    def forward(ctx, input, rois, ph, pw, scale, sampling_ratio, aligned):
        k, c = rois.shape[0], input.shape[1]
        grids = align_grids(rois, ph, pw, scale, sampling_ratio, aligned)
        budget = max(1 << 18, k * c * ph * pw // 8)  # samples per chunk: 1/8 of the output
        out = input.new_zeros((k, c, ph, pw))
        arg = torch.full((k, c, ph, pw), -1, dtype=_index_dtype(grids), device=input.device)
        for gh, gw, sub in grid_chunks(grids, c * ph * pw, budget):
            if gh == 0 or gw == 0:
                continue  # no sampling point: the bin reads 0
            samples = torch.ops.torchvision.roi_align(input, rois[sub], scale, ph * gh, pw * gw, 1, aligned)
            m = sub.numel()
            # (m, C, PH*gh, PW*gw) -> (m, C, PH, PW, gh*gw): each bin's samples in row-major order
            binned = samples.view(m, c, ph, gh, pw, gw).permute(0, 1, 2, 4, 3, 5).reshape(m, c, ph, pw, gh * gw)
            del samples
            values, index = binned.max(dim=-1)  # first maximum on ties; NaN propagates
            out.index_copy_(0, sub, values)  # row copies: much faster than out[sub] = values
            arg.index_copy_(0, sub, index.to(arg.dtype))  # sample index iy*gw + ix inside the bin
        ctx.save_for_backward(rois, arg, grids)
        ctx.args = (ph, pw, scale, aligned, tuple(input.shape), budget)
        ctx.mark_non_differentiable(arg)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        rois, arg, grids = ctx.saved_tensors
        ph, pw, scale, aligned, (n, c, h, w), budget = ctx.args
        grad_input = grad.new_zeros((n, c, h, w))
        for gh, gw, sub in grid_chunks(grids, c * ph * pw, budget):
            if gh == 0 or gw == 0:
                continue
            m = sub.numel()
            binned = grad.new_zeros((m, c, ph, pw, gh * gw))
            binned.scatter_(4, arg[sub].long().unsqueeze(4), grad[sub].unsqueeze(4))  # onto the arg-max sample
            # (m, C, PH, PW, gh*gw) -> (m, C, PH*gh, PW*gw): the sample grid torchvision's backward reads
            grad_samples = binned.view(m, c, ph, pw, gh, gw).permute(0, 1, 2, 4, 3, 5).reshape(m, c, ph * gh, pw * gw)
            del binned
            grad_input += torch.ops.torchvision._roi_align_backward(
                grad_samples, rois[sub], scale, ph * gh, pw * gw, n, c, h, w, 1, aligned
            )
        return grad_input, None, None, None, None, None, None


def align_max_torch(
    input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """Pure-PyTorch path, any device (see :class:`_AlignMaxTorchFunction`)."""
    return _AlignMaxTorchFunction.apply(input, rois, ph, pw, scale, sampling_ratio, aligned)


def use_cpp(input: Tensor) -> bool:
    """The C++ kernel serves CPU float32/float64 when it is built; everything else uses torch."""
    return input.device.type == "cpu" and input.dtype in (torch.float32, torch.float64) and load_extension() is not None


def roi_align_max(
    input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """Dispatch between the C++ and the torch path (inputs already checked)."""
    if use_cpp(input):
        return align_max_cpp(input, rois, ph, pw, scale, sampling_ratio, aligned)
    return align_max_torch(input, rois, ph, pw, scale, sampling_ratio, aligned)


__all__ = ["roi_align_max", "align_max_cpp", "align_max_torch", "use_cpp"]
