"""Every ROI op on hostile inputs, run as a script in a subprocess by test_roi_limits.py.

``python tests/ops/roi_hostile.py cpp|torch|cuda`` runs each op of :data:`OPS` on each case of
:data:`CASES` (forward and backward) and prints one JSON line per run: first
``{"start": [op, case]}``, then the result. These inputs once segfaulted or hung the
process (issue 12), so the tests run them out of process: a regression then fails a test
(naming the case that was running) instead of killing pytest. The ``torch`` path is forced
with ``DETECTOR_OPS_NO_EXTENSION=1`` by the caller, ``cuda`` runs the torch path on the GPU;
the ``cpp`` path also calls the C++ kernels directly with inputs the Python side never lets
through (:func:`direct_kernel_calls`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, as tests/conftest.py does

from detector.ops import prroi_pool, roi_align, roi_pool, roi_warp  # noqa: E402

# Internal on purpose: direct_kernel_calls feeds the C++ kernels inputs the Python side never lets through.
from detector.ops._extension import load_extension  # noqa: E402

SCALE, SIZE = 0.5, (3, 2)
DEVICE = {"device": "cpu"}  # set by main()
NORMAL = [0.0, 1.0, 2.0, 9.0, 7.0]  # an ordinary box, inside a 6 x 6 map at SCALE

# name -> op(x, boxes, sampling_ratio); sampling_ratio None = the op's default (-1, adaptive)
OPS = {
    "roi_pool": lambda x, b, sr: roi_pool(x, b, SIZE, SCALE),
    "prroi_pool": lambda x, b, sr: prroi_pool(x, b, SIZE, SCALE),
    "roi_align_avg": lambda x, b, sr: roi_align(x, b, SIZE, SCALE, -1 if sr is None else sr, False, "avg"),
    "roi_align_max": lambda x, b, sr: roi_align(x, b, SIZE, SCALE, -1 if sr is None else sr, False, "max"),
    "roi_warp_avg": lambda x, b, sr: roi_warp(x, b, SIZE, SCALE, -1 if sr is None else sr, True, "avg"),
    "roi_warp_max": lambda x, b, sr: roi_warp(x, b, SIZE, SCALE, -1 if sr is None else sr, True, "max"),
}
SAMPLED = {"roi_align_avg", "roi_align_max", "roi_warp_avg", "roi_warp_max"}  # ops with a sampling_ratio

HUGE = [[0, 0.0, 0.0, 1e30, 1e30], [0, -1e30, -1e30, 1e30, 1e30], NORMAL]
LARGE = [[0, 0.0, 0.0, 1e7, 1e7], NORMAL]  # an adaptive grid of 1.7e6 per bin side: finite, but no end
OVERFLOW32 = [[0, -3e38, -3e38, 3e38, 3e38], [0, 0.0, 0.0, 3e38, 3e38], NORMAL]  # x * scale - x1 * scale = inf
OVERFLOW64 = [[0, -1.7e308, -1.7e308, 1.7e308, 1.7e308], [0, 0.0, 0.0, 1.7e308, 1.7e308], NORMAL]

# name -> (input shape, boxes, sampling_ratio, dtype); the last box of a "huge"/"overflow"
# case is NORMAL, whose row must equal the op on NORMAL alone.
CASES = {
    "empty_h": ((2, 3, 0, 6), [NORMAL, [1, 0.0, 0.0, 4.0, 4.0]], None, torch.float32),
    "empty_w": ((2, 3, 6, 0), [NORMAL, [1, 0.0, 0.0, 4.0, 4.0]], None, torch.float32),
    "empty_hw": ((2, 3, 0, 0), [NORMAL, [1, 0.0, 0.0, 4.0, 4.0]], None, torch.float32),
    "no_channels": ((1, 0, 6, 6), [NORMAL], None, torch.float32),
    "no_images": ((0, 3, 6, 6), [], None, torch.float32),
    "huge_box": ((1, 3, 6, 6), HUGE, None, torch.float32),
    "huge_box_sr2": ((1, 3, 6, 6), HUGE, 2, torch.float32),
    "large_box": ((1, 3, 6, 6), LARGE, None, torch.float32),
    "huge_box_f64": ((1, 3, 6, 6), HUGE, None, torch.float64),
    "overflow_box": ((1, 3, 6, 6), OVERFLOW32, None, torch.float32),
    "overflow_box_f64": ((1, 3, 6, 6), OVERFLOW64, None, torch.float64),
    "sampling_1e6": ((1, 3, 6, 6), [NORMAL], 10**6, torch.float32),
    "sampling_64": ((1, 3, 6, 6), [NORMAL], 64, torch.float32),
}
SAMPLING_CASES = {"huge_box_sr2", "sampling_1e6", "sampling_64"}  # only for ops with a sampling_ratio


def pairs() -> list[tuple[str, str]]:
    """Every (op, case) this script runs, in order."""
    return [(op, case) for op in OPS for case in CASES if op in SAMPLED or case not in SAMPLING_CASES]


def _forward_backward(op: str, shape, boxes, sr, dtype):
    x = torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))
    x = x.to(DEVICE["device"]).requires_grad_(True)
    rois = torch.tensor(boxes, dtype=dtype, device=DEVICE["device"]).reshape(-1, 5).requires_grad_(op == "prroi_pool")
    out = OPS[op](x, rois, sr)
    out.backward(torch.ones_like(out))
    return x, rois, out


def run_case(op: str, case: str) -> dict:
    shape, boxes, sr, dtype = CASES[case]
    result = {"op": op, "case": case}
    start = time.perf_counter()
    try:
        x, rois, out = _forward_backward(op, shape, boxes, sr, dtype)
    except Exception as error:  # reported, judged by the test
        result.update(seconds=time.perf_counter() - start, raised=type(error).__name__, message=str(error))
        return result
    result["seconds"] = time.perf_counter() - start
    result.update(
        shape=list(out.shape),
        finite=bool(torch.isfinite(out).all()),
        row_absmax=[float(r.abs().max()) if r.numel() else 0.0 for r in out.detach()],
        grad_shape=None if x.grad is None else list(x.grad.shape),
        grad_finite=x.grad is not None and bool(torch.isfinite(x.grad).all()),
        grad_absmax=0.0 if x.grad is None or x.grad.numel() == 0 else float(x.grad.abs().max()),
        box_grad_absmax=None if rois.grad is None else float(rois.grad.abs().max()) if rois.grad.numel() else 0.0,
    )
    if len(boxes) > 1 and boxes[-1] is NORMAL and shape[2] > 0 and shape[3] > 0:  # the NORMAL row, alone
        x1, _, alone = _forward_backward(op, shape, [NORMAL], sr, dtype)
        result["normal_row_diff"] = float((out[-1] - alone[0]).abs().max())
        result["grad_diff"] = float((x.grad - x1.grad).abs().max())  # what the other rows added
    return result


_X, _EMPTY, _ROIS = torch.randn(1, 3, 6, 6), torch.zeros(1, 3, 0, 6), torch.tensor([NORMAL])
# name -> (call on the Kernels object, a fragment of the error it must raise)
KERNEL_CALLS = {
    "align_avg_empty_map": (lambda k: k.align_avg_forward(_EMPTY, _ROIS, SCALE, 3, 2, 2, False), "empty feature map"),
    "align_max_empty_map": (lambda k: k.align_max_forward(_EMPTY, _ROIS, SCALE, 3, 2, 2, False), "empty feature map"),
    "prroi_empty_map": (lambda k: k.prroi_forward(_EMPTY, _ROIS, SCALE, 3, 2), "empty feature map"),
    "align_avg_sampling_65": (
        lambda k: k.align_avg_forward(_X, _ROIS, SCALE, 3, 2, 65, False),
        "sampling_ratio 65 is above the limit of 64",
    ),
    "align_max_sampling_65": (
        lambda k: k.align_max_forward(_X, _ROIS, SCALE, 3, 2, 65, False),
        "sampling_ratio 65 is above the limit of 64",
    ),
}


def direct_kernel_calls() -> None:
    """The C++ kernels called directly with what the Python side never passes: they must raise."""
    kernels = load_extension()
    for name, (call, _) in KERNEL_CALLS.items():
        print(json.dumps({"start": ["kernel", name]}), flush=True)
        result = {"op": "kernel", "case": name, "raised": None}
        try:
            call(kernels)
        except Exception as error:  # reported, judged by the test
            result.update(raised=type(error).__name__, message=str(error))
        print(json.dumps(result), flush=True)


def main(path: str) -> None:
    torch.set_num_threads(2)
    DEVICE["device"] = "cuda" if path == "cuda" else "cpu"
    has_cpp = load_extension() is not None
    if path != "cuda" and has_cpp != (path == "cpp"):
        raise SystemExit(f"asked for the {path} path but the extension is {'' if has_cpp else 'not '}loaded")
    for op in OPS:  # warm-up: first calls pay one-time costs (operator loading) that are no part of the op
        _forward_backward(op, (1, 3, 6, 6), [NORMAL], None, torch.float32)
    for op, case in pairs():
        print(json.dumps({"start": [op, case]}), flush=True)
        print(json.dumps(run_case(op, case), allow_nan=True), flush=True)
    if path == "cpp":
        direct_kernel_calls()
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
