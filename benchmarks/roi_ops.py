"""Benchmark every ROI operator of the variant table against ``torchvision.ops.roi_align`` (avg).

The ops come from ``detector.ops.ROI_OPS`` (one row per op, or per mode for ops with modes;
plugins named in ``DETECTOR_PLUGINS`` included), each built by name with ``build_roi_op``.

For two reference shapes -- features ``(2, 256, 50, 50)`` at scale 1/16 and
``(2, 512, 25, 25)`` at 1/32 -- and 512 realistic proposals (16-600 px boxes, log-uniform
sizes, aspect 1:2..2:1, inside an 800 x 800 image), 7 x 7 output, ``sampling_ratio`` 2 and
-1, it measures in one process:

- forward time (``torch.no_grad``), forward+backward time (features require grad, a fixed
  random output gradient), as medians over ``--repeats`` rounds; every round runs all ops
  one after the other (interleaved), so load from other processes hits all ops alike;
- peak memory of forward+backward *on top of* the inputs: on CUDA
  ``torch.cuda.max_memory_allocated`` minus the allocation before the call; on CPU the
  process's resident high-water mark (``VmHWM`` in ``/proc/self/status``), reset before
  each call by writing ``5`` to ``/proc/self/clear_refs``, minus ``VmRSS`` before the call.
  glibc's dynamic mmap threshold is pinned to 64 KiB with ``mallopt`` so that freed tensors
  go back to the OS and the high-water mark tracks live memory. Unlike allocator
  statistics this also counts the C++ kernels' private scratch (``std::vector`` tables).

Every number is also given as a ratio to torchvision's avg RoIAlign with the same sampling
ratio (PrRoIPool has no sampling ratio: it is compared with both). On CPU the rows marked
``[torch path]`` time the pure-PyTorch implementations that CUDA and compiler-less installs
use, which is how the CPU dispatch (C++ kernel) was chosen.

Usage::

    python benchmarks/roi_ops.py                      # CPU, 2 threads
    python benchmarks/roi_ops.py --device cuda --json runs/roi_ops_cuda.json
    python benchmarks/roi_ops.py --quick              # a few seconds: does it still run?
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from detector.io import write_json
from detector.ops import ROI_OPS, build_roi_op  # noqa: E402

# Internals on purpose (as in tests/ops): the pure-PyTorch fallbacks that CUDA and compiler-less
# installs run (the public ops pick their path by device, so a CPU run must call them directly),
# the wrapper's prepare/finish (timed alone for the "dispatch overhead only" claim), and whether
# the C++ extension built.
from detector.ops._align_max import align_max_torch  # noqa: E402
from detector.ops._common import finish, prepare  # noqa: E402
from detector.ops._extension import load_extension  # noqa: E402
from detector.ops.prroi_pool import prroi_torch  # noqa: E402

SHAPES = [((2, 256, 50, 50), 1 / 16), ((2, 512, 25, 25), 1 / 32)]
SAMPLING = [2, -1]
NUM_BOXES = 512
QUICK = dict(shapes=[((1, 32, 25, 25), 1 / 32)], sampling=[2], num_boxes=32, repeats=1, warmup=0)  # --quick
OUTPUT = 7
IMAGE = 800.0
REFERENCE = "tv roi_align avg"
TWINS = {"roi_pool": "tv roi_pool"}  # ops whose closest torchvision kernel is not REFERENCE


def proposals(num: int, batch: int, seed: int = 0) -> torch.Tensor:
    """``Tensor[num, 5]``: boxes 16-600 px (log-uniform), aspect 1:2..2:1, inside the image."""
    g = torch.Generator().manual_seed(seed)
    u = lambda: torch.rand(num, generator=g, dtype=torch.float64)  # noqa: E731
    width = torch.exp(math.log(16) + u() * (math.log(600) - math.log(16)))
    height = (width * torch.exp((u() * 2 - 1) * math.log(2))).clamp(16, 600)
    x1 = u() * (IMAGE - width)
    y1 = u() * (IMAGE - height)
    index = torch.randint(0, batch, (num,), generator=g).double()
    return torch.stack([index, x1, y1, x1 + width, y1 + height], 1).float()


def table_ops(scale: float, sampling: int) -> dict[str, Callable]:
    """``"name"`` or ``"name mode"`` -> module, for every op of the variant table: the
    detector's default options, with this ``sampling_ratio`` where the op takes one."""
    built = {}
    for name, spec in ROI_OPS.items():
        takes = {option.name for option in spec.options}
        for mode in spec.modes or (None,):
            options = {"sampling_ratio": sampling} if "sampling_ratio" in takes else {}
            if mode is not None:
                options["mode"] = mode
            label = name if mode is None else f"{name} {mode}"
            built[label] = build_roi_op(name, OUTPUT, scale, **spec.resolve_options(options))
    return built


def ops(scale: float, sampling: int, with_torch_paths: bool) -> dict[str, Callable]:
    size = (OUTPUT, OUTPUT)
    table = {
        REFERENCE: lambda x, b: torchvision.ops.roi_align(x, b, size, scale, sampling),
        "tv roi_pool": lambda x, b: torchvision.ops.roi_pool(x, b, size, scale),
        **table_ops(scale, sampling),
    }
    if with_torch_paths:
        table["roi_align max [torch path]"] = lambda x, b: align_max_torch(x, b, OUTPUT, OUTPUT, scale, sampling, False)
        table["prroi_pool [torch path]"] = lambda x, b: prroi_torch(x, b, OUTPUT, OUTPUT, scale)
    return table


class PeakMemory:
    """Peak bytes allocated during a call, above what was live before it (see module doc)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.libc = None
        if device.type == "cpu":
            self.libc = ctypes.CDLL("libc.so.6")
            self.libc.mallopt(-3, 1 << 16)  # M_MMAP_THRESHOLD: fixed, no dynamic growth

    @staticmethod
    def _status(key: str) -> int:
        text = Path("/proc/self/status").read_text()
        return int(re.search(rf"{key}:\s+(\d+) kB", text).group(1)) * 1024

    def measure(self, fn: Callable[[], None]) -> int:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn()
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() - base
        self.libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = self._status("VmRSS")
        fn()
        return self._status("VmHWM") - base


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_config(shape, scale, sampling, device, repeats, warmup, with_torch_paths, num_boxes=NUM_BOXES) -> list[dict]:
    torch.manual_seed(0)
    x = torch.randn(shape, device=device)
    boxes = proposals(num_boxes, shape[0]).to(device)
    grad = torch.randn(num_boxes, shape[1], OUTPUT, OUTPUT, device=device)
    table = ops(scale, sampling, with_torch_paths)
    memory = PeakMemory(device)

    def forward(op):
        def run():
            with torch.no_grad():
                op(x, boxes)

        return run

    def forward_backward(op):
        def run():
            xg = x.detach().requires_grad_(True)
            op(xg, boxes).backward(grad)

        return run

    times = {name: {"fwd": [], "fwdbwd": []} for name in table}
    for _ in range(warmup):
        for op in table.values():
            forward_backward(op)()
    for _ in range(repeats):
        for name, op in table.items():
            times[name]["fwd"].append(timed(forward(op), device))
            times[name]["fwdbwd"].append(timed(forward_backward(op), device))
    rows = []
    for name, op in table.items():
        rows.append(
            {
                "shape": list(shape),
                "spatial_scale": scale,
                "sampling_ratio": sampling,
                "op": name,
                "fwd_ms": 1e3 * statistics.median(times[name]["fwd"]),
                "fwdbwd_ms": 1e3 * statistics.median(times[name]["fwdbwd"]),
                "peak_fwd_mb": memory.measure(forward(op)) / 2**20,
                "peak_fwdbwd_mb": memory.measure(forward_backward(op)) / 2**20,
            }
        )
    # What the dispatching ops add to torchvision's kernel: argument checks, box conversion,
    # the NaN mask and the dtype cast (prepare + finish), timed alone (min over 50 calls), so
    # the claim "dispatch overhead only" does not rest on noisy ratios of two long runs.
    out = torch.empty(num_boxes, shape[1], OUTPUT, OUTPUT, device=device)
    overhead = min(timed(lambda: finish(out, prepare(x, boxes, scale)), device) for _ in range(50))
    by_name = {r["op"]: r for r in rows}
    for r in rows:
        r["wrapper_overhead_ms"] = 1e3 * overhead
    for r in rows:
        # Ratio to torchvision's avg RoIAlign (the yardstick) and, for roi_pool, to
        # torchvision's own roi_pool kernel (what "dispatch overhead only" is about).
        twin = by_name[TWINS.get(r["op"], REFERENCE)]
        for key in ("fwd_ms", "fwdbwd_ms", "peak_fwd_mb", "peak_fwdbwd_mb"):
            base = key.rsplit("_", 1)[0]
            r[base + "_ratio"] = r[key] / by_name[REFERENCE][key] if by_name[REFERENCE][key] > 0 else float("nan")
            r[base + "_ratio_twin"] = r[key] / twin[key] if twin[key] > 0 else float("nan")
        r["twin"] = TWINS.get(r["op"], REFERENCE)
    return rows


def print_table(rows: list[dict]) -> None:
    """One line per (shape, sampling, op); ratios ('x') are to torchvision's avg RoIAlign."""
    head = f"{'features @ scale':<22}{'sr':>3}  {'op':<28}{'fwd ms':>9}{'x':>6}{'fwd+bwd ms':>12}{'x':>6}"
    head += f"{'peak fwd MB':>13}{'x':>6}{'peak f+b MB':>13}{'x':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        shape = "x".join(map(str, r["shape"])) + f" @1/{round(1 / r['spatial_scale'])}"
        print(
            f"{shape:<22}{r['sampling_ratio']:>3}  {r['op']:<28}{r['fwd_ms']:>9.2f}{r['fwd_ratio']:>6.2f}"
            f"{r['fwdbwd_ms']:>12.2f}{r['fwdbwd_ratio']:>6.2f}{r['peak_fwd_mb']:>13.1f}{r['peak_fwd_ratio']:>6.2f}"
            f"{r['peak_fwdbwd_mb']:>13.1f}{r['peak_fwdbwd_ratio']:>6.2f}"
        )
    seen = set()
    for r in rows:
        key = (tuple(r["shape"]), r["sampling_ratio"])
        ref = next(q for q in rows if q["op"] == REFERENCE and (tuple(q["shape"]), q["sampling_ratio"]) == key)
        if key not in seen:
            seen.add(key)
            print(
                f"wrapper overhead ({'x'.join(map(str, r['shape']))}, sr {r['sampling_ratio']}): "
                f"{r['wrapper_overhead_ms'] * 1e3:.0f} us = {100 * r['wrapper_overhead_ms'] / ref['fwd_ms']:.3f}% "
                f"of torchvision's avg RoIAlign forward"
            )
    for r in rows:
        if r["twin"] != REFERENCE:
            print(
                f"{r['op']} / {r['twin']} ({'x'.join(map(str, r['shape']))}, sr {r['sampling_ratio']}): "
                f"fwd {r['fwd_ratio_twin']:.2f}, fwd+bwd {r['fwdbwd_ratio_twin']:.2f}, "
                f"peak fwd {r['peak_fwd_ratio_twin']:.2f}, peak fwd+bwd {r['peak_fwdbwd_ratio_twin']:.2f}"
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="write the rows and the environment to this JSON file")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU (default 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7 CPU, 30 CUDA)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torch-paths", action="store_true", help="skip the pure-PyTorch path rows on CPU")
    parser.add_argument("--quick", action="store_true",
                        help="one small shape, 32 boxes, sampling_ratio 2, one round: checks that it runs, "
                             "measures nothing worth keeping")
    args = parser.parse_args(argv)
    shapes, samplings, num_boxes = SHAPES, SAMPLING, NUM_BOXES
    if args.quick:
        shapes, samplings, num_boxes = QUICK["shapes"], QUICK["sampling"], QUICK["num_boxes"]
        args.repeats, args.warmup = QUICK["repeats"], QUICK["warmup"]
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        build_start = time.perf_counter()
        built = load_extension() is not None
        print(f"C++ extension: {'loaded' if built else 'UNAVAILABLE'} in {time.perf_counter() - build_start:.1f} s")
    repeats = args.repeats or (7 if device.type == "cpu" else 30)
    # On CUDA every op already runs the torch path (there is no CUDA kernel of our own).
    with_torch_paths = device.type == "cpu" and not args.no_torch_paths
    rows = []
    for shape, scale in shapes:
        for sampling in samplings:
            rows += run_config(shape, scale, sampling, device, repeats, args.warmup, with_torch_paths, num_boxes)
    print_table(rows)
    env = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "repeats": repeats,
        "quick": args.quick,
        "loadavg_at_end": os.getloadavg(),
    }
    print(f"environment: {env}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, {"environment": env, "rows": rows}, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
