"""Argument checking and box preparation shared by every ROI operator.

Every operator in :mod:`detector.ops` starts the same way: check the feature map, turn
``boxes`` (``Tensor[K, 5]`` or ``list[Tensor[L, 4]]``) into one ``Tensor[K, 5]`` of
``(batch_index, x1, y1, x2, y2)`` rows, check the batch indices, pick the dtype the
kernels compute in, and neutralize rows whose coordinates are NaN or infinite; then
:func:`run` calls the kernel, unless the feature map is empty.

Why neutralize: a NaN that reaches a C/C++ kernel is cast to ``int`` there, which is
undefined behaviour (crash, garbage, or an endless loop). The contract
(``docs/roi_ops.md``) says such samples read 0, so :func:`prepare` swaps every
non-finite row for a harmless finite dummy box and hands back a mask; :func:`finish`
writes 0 into those rows with ``torch.where`` so they also get no gradient. A row with
any non-finite coordinate reads 0 in every bin (every one of its samples is affected).
"Non-finite" is judged on the feature map: a coordinate whose ``x * spatial_scale`` lies
beyond ``finfo(dtype).max / 4`` (8.5e37 in float32) counts as infinite, because the
kernels' sums of such coordinates (box size, sample positions) overflow to inf and then
to NaN (``0 * inf``); below that bound every sum stays finite.

Two more inputs that crashed or hung before (issue 12) are stopped here, where every op
shares the rule:

- An empty feature map (``H == 0`` or ``W == 0``) holds no value, so every bin reads 0:
  :func:`run` returns zero rows ``(K, C, PH, PW)`` (zero gradient) without calling a
  kernel, whose bilinear rule would index row ``H - 1 = -1`` (torchvision's RoIAlign
  segfaults there; its RoIPool returns 0, which this matches).
- Sampling grids (RoIAlign / RoIWarp) are bounded by :data:`.options.MAX_SAMPLING_GRID` points per
  bin side: an explicit ``sampling_ratio`` above it is refused, and the adaptive grid
  ``ceil(bin size)`` is capped at it (:func:`align_grids`), so a box of 1e30 costs at
  most ``PH*PW*64*64`` samples instead of looping for ever.

Half types (float16 / bfloat16) are computed in float32 and cast back, because the
kernels accumulate sums and float16 sums of a few hundred samples lose digits. Boxes in
float32 with half features are accepted (that is what autocast produces).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.roi_align / roi_pool)
from torch import Tensor

from .options import MAX_SAMPLING_GRID

BoxesType = Tensor | Sequence[Tensor]

FLOAT_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF_DTYPES = (torch.float16, torch.bfloat16)


def pair(output_size, name: str = "output_size") -> tuple[int, int]:
    """``int`` or ``(PH, PW)`` -> ``(PH, PW)``; both must be positive ints."""
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"{name} must be an int or a pair (PH, PW), got {output_size!r}")
        values = tuple(output_size)
    else:
        values = (output_size, output_size)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"{name} must hold ints, got {output_size!r}")
        if v <= 0:
            raise ValueError(f"{name} must be positive, got {output_size!r}")
    return values  # type: ignore[return-value]


def check_scale(spatial_scale) -> float:
    """``spatial_scale`` must be a finite positive number (``1 / stride``)."""
    if isinstance(spatial_scale, bool) or not isinstance(spatial_scale, (int, float)):
        raise TypeError(f"spatial_scale must be a float such as 1/16, got {spatial_scale!r}")
    scale = float(spatial_scale)
    if not (scale > 0 and scale < float("inf")):
        raise ValueError(f"spatial_scale must be finite and > 0 (1 / stride), got {spatial_scale!r}")
    return scale


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype kernels run in: float32 for half types, the dtype itself otherwise."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def _check_input(input: Tensor) -> None:
    if not isinstance(input, Tensor):
        raise TypeError(f"input must be a Tensor[N, C, H, W], got {type(input).__name__}")
    if input.dim() != 4:
        raise ValueError(f"input must be a Tensor[N, C, H, W], got shape {tuple(input.shape)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"input must be float32/float64/float16/bfloat16, got {input.dtype}")


def _check_box_tensor(t: Tensor, input: Tensor, what: str, width: int) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{what} must be a Tensor, got {type(t).__name__}")
    if t.dim() != 2 or t.shape[1] != width:
        raise ValueError(f"{what} must have shape [K, {width}], got {tuple(t.shape)}")
    if t.device != input.device:
        raise ValueError(f"{what} is on {t.device} but input is on {input.device}; move them to one device")
    ok_dtype = t.dtype == input.dtype or (input.dtype in HALF_DTYPES and t.dtype == torch.float32)
    if not ok_dtype:
        raise TypeError(
            f"{what} has dtype {t.dtype} but input has {input.dtype}; use the input's dtype"
            " (float32 boxes are also accepted with half-precision input)"
        )


def boxes_to_rois(boxes: BoxesType, input: Tensor) -> Tensor:
    """``Tensor[K, 5]`` or ``list[Tensor[L_i, 4]]`` -> ``Tensor[K, 5]`` (checked, not cast)."""
    if isinstance(boxes, Tensor):
        _check_box_tensor(boxes, input, "boxes", 5)
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(f"boxes must be a Tensor[K, 5] or a list of Tensor[L, 4], got {type(boxes).__name__}")
    if len(boxes) == 0:
        return input.new_zeros((0, 5), dtype=compute_dtype(input.dtype))
    for i, b in enumerate(boxes):
        _check_box_tensor(b, input, f"boxes[{i}]", 4)
    dtype = boxes[0].dtype
    if any(b.dtype != dtype for b in boxes):
        raise TypeError(f"boxes must all share one dtype, got {sorted({str(b.dtype) for b in boxes})}")
    counts = torch.tensor([b.shape[0] for b in boxes], device=input.device)
    ids = torch.repeat_interleave(torch.arange(len(boxes), device=input.device, dtype=dtype), counts)
    return torch.cat([ids[:, None], torch.cat(list(boxes), 0)], 1)  # (K, 1) + (K, 4) -> (K, 5)


@dataclass
class Prepared:
    """What a kernel needs: the input and rois in the compute dtype, and the NaN mask."""

    input: Tensor  # (N, C, H, W), compute dtype
    rois: Tensor  # (K, 5), compute dtype, every coordinate finite (and finite times the scale)
    finite: Tensor | None  # (K,) bool, None when every row was finite
    out_dtype: torch.dtype
    extent: float = 0.0  # longest side of a finite box, in feature cells (bounds the adaptive grid)


def prepare(input: Tensor, boxes: BoxesType, spatial_scale: float) -> Prepared:
    """Check ``input`` and ``boxes`` and return them ready for a kernel (see module doc)."""
    _check_input(input)
    rois = boxes_to_rois(boxes, input)
    cdtype = compute_dtype(input.dtype)
    x = input.to(cdtype)
    rois = rois.to(cdtype)
    finite, extent = None, 0.0
    if rois.shape[0] > 0:
        batch = rois[:, 0]
        bad_batch = ~((batch == torch.floor(batch)) & (batch >= 0) & (batch < input.shape[0]))
        scaled = rois[:, 1:].detach() * spatial_scale  # (K, 4) on the feature map
        # False for NaN, +-inf and coordinates whose sums in a kernel would overflow (module doc).
        finite_rows = (scaled.abs() <= torch.finfo(cdtype).max / 4).all(1)
        sides = (scaled[:, 2:] - scaled[:, :2]).abs().amax(1)  # (K,) longest side of each box
        longest = torch.where(finite_rows, sides, torch.zeros_like(sides)).max()
        flags = torch.stack([bad_batch.any().to(cdtype), finite_rows.all().to(cdtype), longest])
        any_bad, all_finite, extent = flags.tolist()  # one sync for all three
        if any_bad:
            value = batch[bad_batch][0].item()
            raise ValueError(
                f"boxes: batch index {value!r} is not an integer in [0, {input.shape[0]}) "
                f"(input has N={input.shape[0]} images)"
            )
        if not all_finite:
            finite = finite_rows
            coords = torch.where(finite_rows[:, None], rois[:, 1:], torch.zeros_like(rois[:, 1:]))
            rois = torch.cat([rois[:, :1], coords], 1)  # dummy box (0, 0, 0, 0) on bad rows
    return Prepared(x, rois, finite, input.dtype, extent)


def finish(out: Tensor, prepared: Prepared) -> Tensor:
    """Zero the rows of non-finite boxes (no gradient either) and cast back to the input dtype."""
    if prepared.finite is not None:
        out = torch.where(prepared.finite[:, None, None, None], out, torch.zeros_like(out))
    return out.to(prepared.out_dtype)


class _EmptyMap(torch.autograd.Function):
    """Zero rows ``(K, C, PH, PW)`` for a map with ``H == 0`` or ``W == 0``; zero gradients."""

    @staticmethod
    def forward(ctx, input, rois, ph, pw):
        ctx.shapes = (input.shape, rois.shape)
        return input.new_zeros((rois.shape[0], input.shape[1], ph, pw))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        input_shape, rois_shape = ctx.shapes
        return grad.new_zeros(input_shape), grad.new_zeros(rois_shape), None, None


def run(prepared: Prepared, ph: int, pw: int, kernel: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``finish(kernel(input, rois), prepared)``; an empty map (``H`` or ``W == 0``) reads 0 and
    never reaches the kernel (module doc)."""
    x, rois = prepared.input, prepared.rois
    if x.shape[2] == 0 or x.shape[3] == 0:
        return finish(_EmptyMap.apply(x, rois, ph, pw), prepared)
    return finish(kernel(x, rois), prepared)


def align_grids(rois: Tensor, ph: int, pw: int, scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """Per-box RoIAlign sampling grid ``(gh, gw)`` as ``Tensor[K, 2]`` (int64), as the C++ kernels
    compute it: ``sampling_ratio`` if positive, else ``ceil(bin size)`` (torchvision's rule)
    clamped to ``[0, MAX_SAMPLING_GRID]``; a NaN size gives 0 (no sampling point)."""
    k = rois.shape[0]
    if sampling_ratio > 0:
        return torch.full((k, 2), sampling_ratio, dtype=torch.long, device=rois.device)
    offset = 0.5 if aligned else 0.0
    coords = rois[:, 1:].detach() * scale - offset  # (K, 4) in the compute dtype, like the kernel
    size = torch.stack([coords[:, 3] - coords[:, 1], coords[:, 2] - coords[:, 0]], 1)  # (K, 2): rh, rw
    if not aligned:
        size = size.clamp(min=1.0)
    bins = torch.tensor([ph, pw], dtype=size.dtype, device=size.device)
    return torch.ceil(size / bins).nan_to_num(nan=0.0).clamp(min=0, max=MAX_SAMPLING_GRID).long()


def adaptive_grid_capped(extent: float, ph: int, pw: int, sampling_ratio: int) -> bool:
    """Whether some box may reach the adaptive grid's cap (``extent``: longest box side in cells)."""
    return sampling_ratio <= 0 and not extent < MAX_SAMPLING_GRID * min(ph, pw)


def grid_chunks(grids: Tensor, per_sample: int, budget: int) -> Iterator[tuple[int, int, Tensor]]:
    """Yield ``(gh, gw, box indices)``: boxes grouped by grid, chunked so a chunk's sample
    tensor ``(k, C, PH*gh, PW*gw)`` has at most ``budget`` elements (at least one box)."""
    if grids.shape[0] == 0:
        return
    for gh, gw in torch.unique(grids, dim=0).tolist():
        idx = torch.nonzero((grids[:, 0] == gh) & (grids[:, 1] == gw)).flatten()
        step = max(1, budget // max(1, per_sample * gh * gw))
        for start in range(0, idx.numel(), step):
            yield gh, gw, idx[start : start + step]


def round_half_away(v: Tensor) -> Tensor:
    """C's ``round``: halves go away from zero (``torch.round`` rounds half to even).

    The project's one rounding rule (RoIPool's and RoIWarp's snapping, and the read regions
    of :mod:`.regions`); public as ``detector.ops.round_half_away``.

    ``trunc`` plus the sign when the exact fraction ``v - trunc(v)`` is at least 1/2;
    ``floor(|v| + 0.5)`` would round 0.49999997 up, because the sum rounds to 1.0.
    """
    whole = torch.trunc(v)
    return whole + torch.where((v - whole).abs() >= 0.5, torch.sign(v), torch.zeros_like(v))
