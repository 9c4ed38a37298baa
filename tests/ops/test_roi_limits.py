"""Issue 12: no input crashes or hangs an op; every op returns or raises in under a second.

An empty feature map (``H`` or ``W == 0``) reads 0; a ``sampling_ratio`` above 64 is
refused; the adaptive grid is capped at 64 points per bin side; boxes of 1e30, or whose
feature-map coordinates overflow, return at once. These inputs once segfaulted or hung, so
they run in one subprocess per path (``roi_hostile.py``): a regression fails the test of
the case that was running instead of killing pytest. The cap's values run in process.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from roi_hostile import CASES, KERNEL_CALLS, SIZE, pairs
from roi_reference import roi_align_ref, roi_warp_ref

# Internals on purpose: the device fixture switches the avg/max dispatch to the pure-PyTorch path,
# and the hostile cases call the C++ kernels directly.
import detector.ops._align_avg as avg_module
import detector.ops._align_max as max_module
from detector.ops import (
    MAX_SAMPLING_GRID,
    RoIAlign,
    RoIWarp,
    build_roi_op,
    roi_align,
    roi_warp,
)
from detector.ops._extension import load_extension

HOSTILE = Path(__file__).with_name("roi_hostile.py")
TIME_LIMIT = 1.0  # seconds for one forward + backward (issue 12)
PROCESS_TIMEOUT = 180  # the whole script takes a few seconds; this only stops a hang
PATHS = ["cpp", "torch", pytest.param("cuda", marks=pytest.mark.cuda)]  # cuda: the torch path on the GPU


def _run_hostile(path: str) -> dict:
    """Run roi_hostile.py on one path -> {"results": {(op, case): dict}, "running", "ended", "stderr"}."""
    env = dict(os.environ, DETECTOR_OPS_NO_EXTENSION="1" if path == "torch" else "0")
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            code = subprocess.run(
                [sys.executable, str(HOSTILE), path],
                stdout=out,
                stderr=err,
                env=env,
                timeout=PROCESS_TIMEOUT,
                check=False,
            ).returncode
            ended = f"exit code {code}" + (" (killed by a signal: a crash)" if code < 0 else "")
        except subprocess.TimeoutExpired:
            ended = f"killed after {PROCESS_TIMEOUT} s (a hang)"
        out.seek(0)
        err.seek(0)
        lines = [json.loads(line) for line in out if line.strip()]
        stderr = err.read()[-2000:]
    results, running = {}, None
    for line in lines:
        if "start" in line:
            running = tuple(line["start"])
        elif "op" in line:
            results[(line["op"], line["case"])] = line
            running = None
    return {"results": results, "running": running, "ended": ended, "stderr": stderr}


@pytest.fixture(scope="module")
def hostile():
    """path -> the outcome of roi_hostile.py on that path (each path run once, on first use)."""
    runs = {}

    def get(path: str) -> dict:
        if path == "cpp" and load_extension() is None:
            pytest.skip("C++ extension unavailable")
        if path not in runs:
            runs[path] = _run_hostile(path)
        return runs[path]

    return get


def _result(run: dict, key: tuple) -> dict:
    if key not in run["results"]:
        where = f"while running {run['running']}" if run["running"] else "before reaching it"
        pytest.fail(f"{key}: the process ended ({run['ended']}) {where}; stderr: {run['stderr']}")
    return run["results"][key]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("op,case", pairs())
def test_hostile_input_returns_in_time(hostile, path, op, case):
    r = _result(hostile(path), (op, case))
    assert r["seconds"] < TIME_LIMIT, f"{op} on {case} took {r['seconds']:.2f} s"
    shape, boxes, _, dtype = CASES[case]
    if case == "sampling_1e6":
        assert r.get("raised") == "ValueError", r
        assert "sampling_ratio 1000000 is above the limit of 64" in r["message"]
        return
    assert "raised" not in r, f"{op} on {case} raised {r['raised']}: {r['message']}"
    assert r["shape"] == [len(boxes), shape[1], *SIZE]
    assert r["finite"] and r["grad_finite"] and r["grad_shape"] == list(shape)
    if case.startswith("empty"):  # an empty map reads 0, with zero gradients (box gradient too)
        assert max(r["row_absmax"]) == 0 and r["grad_absmax"] == 0
        assert r["box_grad_absmax"] in (None, 0.0)
    if "normal_row_diff" in r:  # huge / overflowing boxes beside an ordinary one
        tol = 1e-6 if dtype == torch.float32 else 1e-12
        assert r["normal_row_diff"] <= tol, "the ordinary box's row changed"
        if op != "roi_pool" or case.startswith("overflow"):
            # Every sample of these boxes is off the map (or its coordinates overflow): 0, no gradient
            # (PrRoIPool: the map's integral over a bin of area 1e58, ~1e-58). RoIPool's bins of a
            # 1e30 box come from torchvision's integer arithmetic: finite, otherwise unspecified.
            assert max(r["row_absmax"][:-1]) <= tol
            assert r["grad_diff"] <= tol


@pytest.mark.parametrize("name", sorted(KERNEL_CALLS))
def test_cpp_kernels_refuse_what_python_never_passes(hostile, name):
    r = _result(hostile("cpp"), ("kernel", name))
    assert r["raised"] == "RuntimeError", r
    assert KERNEL_CALLS[name][1] in r["message"]


def test_cpp_and_python_share_the_grid_limit():
    kernels = load_extension()
    if kernels is None:
        pytest.skip("C++ extension unavailable")
    assert kernels.lib.detector_align_grid_limit() == MAX_SAMPLING_GRID == 64


@pytest.mark.parametrize("op", [roi_align, roi_warp])
@pytest.mark.parametrize("mode", ["avg", "max"])
def test_sampling_ratio_limit(feat, op, mode):
    box = torch.tensor([[0, 1.0, 2.0, 9.0, 7.0]], dtype=torch.float64)
    assert torch.isfinite(op(feat, box, 2, 0.5, MAX_SAMPLING_GRID, False, mode)).all()  # the limit itself is fine
    with pytest.raises(ValueError, match="sampling_ratio 65 is above the limit of 64 points per bin side"):
        op(feat, box, 2, 0.5, MAX_SAMPLING_GRID + 1, False, mode)


def test_modules_refuse_sampling_ratio_above_the_limit():
    for make in (
        lambda: RoIAlign(7, 1 / 16, sampling_ratio=10**6),
        lambda: RoIWarp(7, 1 / 16, sampling_ratio=10**6),
    ):
        with pytest.raises(ValueError, match="sampling_ratio 1000000 is above the limit of 64"):
            make()
    # build_roi_op checks with the table's rule (the same predicate) and names op, key and rule
    with pytest.raises(ValueError, match=r"'roi_align': option sampling_ratio=1000000 is invalid; expected an int <= 64"):
        build_roi_op("roi_align", 7, 1 / 16, sampling_ratio=10**6, mode="max")


@pytest.fixture(params=PATHS)
def device(request, monkeypatch):
    """Run the test on the C++ path, on the pure-PyTorch path, and on the GPU; -> the device."""
    if request.param == "cpp" and load_extension() is None:
        pytest.skip("C++ extension unavailable")
    if request.param == "torch":
        monkeypatch.setattr(avg_module, "load_extension", lambda: None)
        monkeypatch.setattr(max_module, "load_extension", lambda: None)
    return "cuda" if request.param == "cuda" else "cpu"


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("warp", [False, True])
def test_adaptive_grid_is_capped_at_64(device, mode, aligned, warp):
    """Boxes whose adaptive grid exceeds 64 on one or both axes read their capped grid, on both
    paths (the torch path splits them from the ordinary boxes); ordinary boxes are unchanged."""
    g = torch.Generator().manual_seed(12)
    x = torch.randn(2, 2, 16, 12, dtype=torch.float64, generator=g)
    boxes = torch.tensor(
        [
            [0, -0.5, -0.5, 199.5, 299.5],  # grid (300, 200) -> (64, 64): equals sampling_ratio 64
            [1, 2.0, -3.0, 5.0, 396.5],  # grid (400, 3) -> (64, 3)
            [0, 1.0, 2.0, 9.0, 7.0],  # ordinary: (5, 8)
            [1, 3.0, 3.0, 3.0, 3.0],  # zero size: (1, 1), or no point when aligned
        ],
        dtype=torch.float64,
    )
    op, ref = (roi_warp, roi_warp_ref) if warp else (roi_align, roi_align_ref)
    expected = ref(x, boxes, 1, 1, 1.0, -1, aligned, mode)
    x, boxes = x.to(device), boxes.to(device)
    xg = x.clone().requires_grad_(True)
    out = op(xg, boxes, 1, 1.0, -1, aligned, mode)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-12)
    assert out[0].abs().max() > 0  # the capped samples still land on the map
    fixed = op(x, boxes[:1], 1, 1.0, MAX_SAMPLING_GRID, aligned, mode)
    torch.testing.assert_close(out[:1].detach(), fixed, rtol=1e-12, atol=1e-14)
    for k in (2, 3):  # ordinary rows: as without the capped boxes
        torch.testing.assert_close(out[k : k + 1].detach(), op(x, boxes[k : k + 1], 1, 1.0, -1, aligned, mode))
    out.sum().backward()  # the gradient of the capped boxes flows too
    assert torch.isfinite(xg.grad).all() and xg.grad.abs().max() > 0
