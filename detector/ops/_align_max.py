"""RoIAlign max mode: the C++ CPU kernel and a vectorized pure-PyTorch path.

Both compute ``shared/ROI_OPS.md`` "RoIAlign, mode=max" on checked inputs (see
``_common.prepare``): the maximum of each bin's ``gh x gw`` bilinear samples, the gradient
to the four neighbours of the arg-max sample, ties to the first sample in row-major order.

Which path runs (chosen by measurement, ``benchmarks/roi_ops.py``):

- CPU with the extension built: the C++ kernel (``csrc/align_max.cpp``) wrapped in
  :class:`_AlignMaxFunction`. Its only extra memory is an arg-max map of the output's
  shape in int8 (int16/int32 only for grids beyond 127 samples per bin).
- Otherwise (CUDA, or no compiler): :func:`align_max_torch`. Its idea: the sample points
  of bin ``(ph, pw)`` are exactly the bin centres of ``torchvision.ops.roi_align`` with
  output size ``(PH*gh, PW*gw)`` and ``sampling_ratio=1`` (same start, bin size
  ``rh / (PH*gh)``), so torchvision's kernel (with autograd) produces every sample value and
  ``max_pool2d`` over ``(gh, gw)`` windows takes the max; max_pool2d routes the gradient to
  the first maximum, as the contract asks. With adaptive sampling the grid differs per box,
  so boxes are grouped by distinct ``(gh, gw)`` (a loop over groups, not boxes) and chunked
  so the sample tensor stays below ``_CHUNK_ELEMENTS``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ._extension import load_extension

# Upper bound on elements of one (chunk, C, PH*gh, PW*gw) sample tensor in the torch path.
_CHUNK_ELEMENTS = 1 << 24


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
        grad_input = load_extension().align_max_backward(grad, rois, argmax, scale, ph, pw, sampling_ratio, aligned, shape)
        return grad_input, None, None, None, None, None, None


def align_max_cpp(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool):
    """C++ path (CPU tensors of one dtype, float32 or float64; extension must be loaded)."""
    return _AlignMaxFunction.apply(input, rois, ph, pw, scale, sampling_ratio, aligned)


def _grid_sizes(rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """Per-box ``(gh, gw)`` as ``Tensor[K, 2]`` (int64), computed as torchvision computes them."""
    k = rois.shape[0]
    if sampling_ratio > 0:
        return torch.full((k, 2), sampling_ratio, dtype=torch.long, device=rois.device)
    offset = 0.5 if aligned else 0.0
    coords = rois[:, 1:].detach() * scale - offset  # (K, 4) in the compute dtype, like the kernel
    size = torch.stack([coords[:, 3] - coords[:, 1], coords[:, 2] - coords[:, 0]], 1)  # (K, 2): rh, rw
    if not aligned:
        size = size.clamp(min=1.0)
    bins = torch.tensor([ph, pw], dtype=size.dtype, device=size.device)
    # Cap like the C++ kernel: only absurd finite boxes get there.
    return torch.ceil(size / bins).clamp(min=0, max=1 << 16).long()


def align_max_torch(
    input: Tensor, rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool
) -> Tensor:
    """Pure-PyTorch path, any device, differentiable by autograd (see module doc)."""
    k, c = rois.shape[0], input.shape[1]
    grids = _grid_sizes(rois, ph, pw, scale, sampling_ratio, aligned)
    distinct = torch.unique(grids, dim=0).tolist() if k > 0 else []
    pieces, order = [], []
    for gh, gw in distinct:
        idx = torch.nonzero((grids[:, 0] == gh) & (grids[:, 1] == gw)).flatten()
        if gh == 0 or gw == 0:  # no sampling point: the bin reads 0
            pieces.append(input.new_zeros((idx.numel(), c, ph, pw)))
            order.append(idx)
            continue
        per_box = c * ph * gh * pw * gw
        step = max(1, _CHUNK_ELEMENTS // per_box)
        for start in range(0, idx.numel(), step):
            sub = idx[start : start + step]
            samples = torch.ops.torchvision.roi_align(input, rois[sub], scale, ph * gh, pw * gw, 1, aligned)
            pieces.append(F.max_pool2d(samples, (gh, gw)))  # (k, C, PH*gh, PW*gw) -> (k, C, PH, PW)
            order.append(sub)
    if not pieces:
        return input.new_zeros((0, c, ph, pw)) + input.sum() * 0  # keeps the graph for K == 0
    out = torch.cat(pieces, 0)
    perm = torch.cat(order, 0)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    return out[inverse]


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
