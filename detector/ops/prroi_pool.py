"""Precise RoI Pooling (IoU-Net, Jiang et al. ECCV 2018): the exact integral, no sampling points.

The feature map is read as the continuous function
``f(y, x) = sum_ij F[i, j] * hat(y - i) * hat(x - j)`` with ``hat(t) = max(0, 1 - |t|)``
(zero beyond the map), and each bin's value is the integral of ``f`` over the bin divided
by the bin's area. There is no sampling ratio to tune and the output is a smooth function
of the box, so gradients reach the box coordinates too (IoU-Net refines boxes that way).
The box is ``x1*s .. x2*s`` by ``y1*s .. y2*s`` with no half-cell offset; a box with
``x2 < x1`` (or ``y2 < y1``) has zero width (as in the IoU-Net code), and a bin of zero area
gives 0 with zero gradient.

Why it is cheap: the integral separates. With ``Hint`` the antiderivative of ``hat``,
``Wy[ph, i] = Hint(y_hi - i) - Hint(y_lo - i)`` (and ``Wx`` likewise) are the exact
per-row / per-column weights of bin ``(ph, pw)``, and
``out[ph, pw] = sum_ij Wy[ph, i] F[i, j] Wx[pw, j] / area``: two small matrix products.

Two paths, chosen by measurement (``benchmarks/roi_ops.py``):

- CPU with the C++ extension: ``csrc/prroi_pool.cpp`` (sparse per-box weight tables,
  gradients for the features and the box, analytic).
- Otherwise (CUDA, no compiler): dense ``Wy`` ``(K, PH, H)`` and ``Wx`` ``(K, PW, W)``
  built with autograd (so the box gradient comes for free), and two ``matmul``s per chunk
  of boxes of one image in :class:`_SeparableIntegral`, which recomputes instead of saving
  its intermediates, keeping memory near the output's size.

Example:
    >>> import torch
    >>> x = torch.ones(1, 1, 6, 6)
    >>> prroi_pool(x, torch.tensor([[0, 1.0, 1.0, 4.0, 4.0]]), 2)[0, 0]
    tensor([[1., 1.],
            [1., 1.]])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import BoxesType, check_scale, pair, prepare, run
from ._extension import load_extension


class _PrRoIPoolFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, rois, ph, pw, scale):
        out = load_extension().prroi_forward(input, rois, scale, ph, pw)
        ctx.args = (scale, ph, pw)
        # The output is only needed for the box gradient (d out / d area).
        ctx.save_for_backward(input, rois, out if ctx.needs_input_grad[1] else None)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        input, rois, out = ctx.saved_tensors
        scale, ph, pw = ctx.args
        need_input, need_rois = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_input, grad_rois = load_extension().prroi_backward(
            grad, input, rois, out, scale, ph, pw, need_input, need_rois
        )
        return grad_input, grad_rois, None, None, None


def prroi_cpp(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float) -> Tensor:
    """C++ path (CPU tensors of one dtype, float32 or float64; extension must be loaded)."""
    return _PrRoIPoolFunction.apply(input, rois, ph, pw, scale)


def _hat_integral(u: Tensor) -> Tensor:
    """Antiderivative of ``max(0, 1 - |t|)`` from -inf: 0, (u+1)^2/2, 1-(1-u)^2/2, 1."""
    a = (u + 1).clamp(0, 1)
    b = u.clamp(0, 1)
    return 0.5 * a * a + b - 0.5 * b * b


def _axis_weights(start: Tensor, size: Tensor, bins: int, length: int) -> Tensor:
    """Exact weights ``(K, bins, length)`` of each cell for each bin of ``[start, start + size]``."""
    step = size / bins  # (K,)
    p = torch.arange(bins, device=start.device, dtype=start.dtype)
    lo = start[:, None] + p * step[:, None]  # (K, bins)
    hi = start[:, None] + (p + 1) * step[:, None]
    cells = torch.arange(length, device=start.device, dtype=start.dtype)
    return _hat_integral(hi[:, :, None] - cells) - _hat_integral(lo[:, :, None] - cells)


def _image_chunks(batch: Tensor, per_box: int, budget: int):
    """Yield ``(image, box indices)``: boxes of one image, chunked so that an intermediate of
    ``per_box`` elements per box stays below ``budget`` elements (at least one box)."""
    if batch.numel() == 0:
        return
    step = max(1, budget // max(1, per_box))
    for image in torch.unique(batch).tolist():
        idx = torch.nonzero(batch == image).flatten()
        for start in range(0, idx.numel(), step):
            yield image, idx[start : start + step]


class _SeparableIntegral(torch.autograd.Function):
    """``out[k, c, p, q] = sum_hw wy[k, p, h] * F[b_k, c, h, w] * wx[k, q, w]``, chunked.

    Two matrix products per chunk of boxes of one image; the ``(k, PH, C, W)`` intermediate
    is recomputed in backward instead of being saved, so memory stays near the output's
    size (autograd through plain matmuls would keep all of them). Gradients for ``F``,
    ``wy`` and ``wx`` (the box gradient flows on from ``wy``/``wx`` by autograd).
    """

    @staticmethod
    def forward(ctx, feat, wy, wx, batch, budget):
        _, c, h, w = feat.shape
        k, ph, pw = wy.shape[0], wy.shape[1], wx.shape[1]
        out = feat.new_zeros((k, c, ph, pw))
        for image, sub in _image_chunks(batch, ph * c * w, budget):
            flat = feat[image].permute(1, 0, 2).reshape(h, c * w)  # (C, H, W) -> (H, C*W)
            rows = (wy[sub].reshape(-1, h) @ flat).view(sub.numel(), ph * c, w)  # (k*PH, C*W) -> (k, PH*C, W)
            both = rows @ wx[sub].transpose(1, 2)  # (k, PH*C, PW)
            out.index_copy_(0, sub, both.view(sub.numel(), ph, c, pw).permute(0, 2, 1, 3))  # -> (k, C, PH, PW)
        ctx.save_for_backward(feat, wy, wx, batch)
        ctx.budget = budget
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        feat, wy, wx, batch = ctx.saved_tensors
        need_feat, need_wy, need_wx = ctx.needs_input_grad[:3]
        _, c, h, w = feat.shape
        ph, pw = wy.shape[1], wx.shape[1]
        grad_feat = torch.zeros_like(feat) if need_feat else None
        grad_wy = torch.zeros_like(wy) if need_wy else None
        grad_wx = torch.zeros_like(wx) if need_wx else None
        for image, sub in _image_chunks(batch, ph * c * w, ctx.budget):
            k = sub.numel()
            g = grad[sub]  # (k, C, PH, PW)
            flat = feat[image].permute(1, 0, 2).reshape(h, c * w)  # (H, C*W)
            if need_feat or need_wy:
                along_x = (g.reshape(k, c * ph, pw) @ wx[sub]).view(k, c, ph, w)  # sum_q g * wx
                along_x = along_x.permute(0, 2, 1, 3).reshape(k * ph, c * w)  # (k*PH, C*W)
                if need_feat:
                    spread = wy[sub].reshape(k * ph, h).t() @ along_x  # (H, C*W)
                    grad_feat[image] += spread.view(h, c, w).permute(1, 0, 2)
                if need_wy:
                    grad_wy.index_copy_(0, sub, (along_x @ flat.t()).view(k, ph, h))
            if need_wx:
                rows = (wy[sub].reshape(-1, h) @ flat).view(k, ph * c, w)  # (k, PH*C, W), index p*C + c
                grad_wx.index_copy_(0, sub, g.permute(0, 3, 2, 1).reshape(k, pw, ph * c) @ rows)  # (k, PW, W)
        return grad_feat, grad_wy, grad_wx, None, None


def prroi_torch(input: Tensor, rois: Tensor, ph: int, pw: int, scale: float) -> Tensor:
    """Pure-PyTorch path, any device, differentiable in ``input`` and ``rois`` (see module doc)."""
    _, c, h, w = input.shape
    k = rois.shape[0]
    coords = rois[:, 1:] * scale  # (K, 4) x1, y1, x2, y2 on the feature map
    height = (coords[:, 3] - coords[:, 1]).clamp(min=0)
    width = (coords[:, 2] - coords[:, 0]).clamp(min=0)
    # Dividing the weights by the bin size turns the integral into the bin average; a bin
    # of zero area gets zero weights, hence 0 and no gradient.
    bin_h, bin_w = height / ph, width / pw
    keep = ((bin_h > 0) & (bin_w > 0))[:, None, None]  # (K, 1, 1)
    wy = _axis_weights(coords[:, 1], height, ph, h) / torch.where(bin_h > 0, bin_h, 1)[:, None, None]  # (K, PH, H)
    wx = _axis_weights(coords[:, 0], width, pw, w) / torch.where(bin_w > 0, bin_w, 1)[:, None, None]  # (K, PW, W)
    wy, wx = torch.where(keep, wy, 0), torch.where(keep, wx, 0)
    budget = max(1 << 20, k * c * ph * pw // 4)
    return _SeparableIntegral.apply(input, wy, wx, rois[:, 0].detach().long(), budget)


def use_cpp(input: Tensor) -> bool:
    """The C++ kernel serves CPU float32/float64 when it is built; everything else uses torch."""
    return input.device.type == "cpu" and input.dtype in (torch.float32, torch.float64) and load_extension() is not None


def prroi_pool(input: Tensor, boxes: BoxesType, output_size, spatial_scale: float = 1.0) -> Tensor:
    """Exact average of the bilinearly interpolated feature over every bin.

    Args:
        input (Tensor[N, C, H, W]): feature map.
        boxes (Tensor[K, 5] or list[Tensor[L, 4]]): ``(batch_index, x1, y1, x2, y2)`` rows, or
            one ``(x1, y1, x2, y2)`` tensor per image, in image coordinates. Differentiable.
        output_size (int or (PH, PW)): bins per box.
        spatial_scale (float): image -> feature coordinates, ``1 / stride``.

    Returns:
        Tensor[K, C, PH, PW] in the input's dtype; rows of boxes with NaN/inf are 0, and
        so is every row on an empty map (``H`` or ``W == 0``).
    """
    ph, pw = pair(output_size)
    scale = check_scale(spatial_scale)
    p = prepare(input, boxes, scale)
    kernel = prroi_cpp if use_cpp(p.input) else prroi_torch
    return run(p, ph, pw, lambda x, r: kernel(x, r, ph, pw, scale))


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
