"""The multi-level ROI pooler against torchvision's MultiScaleRoIAlign: forward and forward+backward.

    python benchmarks/fpn_pooler.py [--boxes 512] [--device cpu] [--json PATH]

Four FPN levels P2-P5 of a batch of two 800 x 608 images (256 channels, strides 4-32), 512
boxes of log-uniform sizes from 8 to 512 px (so every level gets boxes), 7 x 7 output.
Rows: torchvision's `MultiScaleRoIAlign` (sampling 2) and our `MultiLevelRoIPooler` around
every op of the ROI variant table (roi_align avg with sampling 2 is the like-for-like row:
target fwd+bwd <= 1.05x torchvision's). Interleaved repeats, median ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torchvision.ops import MultiScaleRoIAlign

from detector.ablation.variants import default_variants
from detector.io import write_json
from detector.models.backbones import FPN_FEATURE_NAMES, FPN_LEVELS
from detector.models.poolers import MultiLevelRoIPooler
from detector.ops import build_roi_op, get_roi_op


def inputs(boxes: int, device: torch.device, channels: int = 256, size=(608, 800), images: int = 2):
    g = torch.Generator().manual_seed(0)
    feats = {name: torch.randn(images, channels, size[0] // 2 ** k, size[1] // 2 ** k, generator=g).to(device)
             for name, k in zip(FPN_FEATURE_NAMES, FPN_LEVELS)}
    proposals = []
    for _ in range(images):
        side = torch.exp(torch.empty(boxes // images, 2).uniform_(2.08, 6.24, generator=g))  # 8 .. 512 px
        xy = torch.rand(boxes // images, 2, generator=g) * (torch.tensor([size[1], size[0]]) - side).clamp(min=1)
        proposals.append(torch.cat([xy, xy + side], 1).to(device))
    return feats, proposals, [size] * images


def time_ms(fn, repeats: int, device: torch.device) -> float:
    out = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        out.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--boxes", type=int, default=512)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    feats, proposals, shapes = inputs(args.boxes, device)
    poolers = {"tv MultiScaleRoIAlign": MultiScaleRoIAlign(list(FPN_FEATURE_NAMES), 7, 2)}
    for v in default_variants():
        options = get_roi_op(v.op).resolve_options(v.roi_options())  # the table's defaults: sampling_ratio 2
        poolers[v.name] = MultiLevelRoIPooler.build(
            lambda scale, v=v, options=options: build_roi_op(v.op, 7, scale, **options), FPN_FEATURE_NAMES, FPN_LEVELS)

    def forward(pooler):
        with torch.no_grad():
            pooler(feats, proposals, shapes)

    def forward_backward(pooler):
        x = {k: f.detach().requires_grad_(True) for k, f in feats.items()}
        pooler(x, proposals, shapes).sum().backward()

    rows = {name: {"fwd": [], "fwdbwd": []} for name in poolers}
    for pooler in poolers.values():  # warm-up (extension loading, allocator)
        forward(pooler)
        forward_backward(pooler)
    for _ in range(args.repeats):  # interleaved, so load changes hit every row alike
        for name, pooler in poolers.items():
            rows[name]["fwd"].append(time_ms(lambda p=pooler: forward(p), 1, device))
            rows[name]["fwdbwd"].append(time_ms(lambda p=pooler: forward_backward(p), 1, device))
    ref = {k: statistics.median(v) for k, v in rows["tv MultiScaleRoIAlign"].items()}
    table = []
    print(f"# FPN pooler, {args.boxes} boxes, 4 levels, {device}, threads={torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'pooler':28s} {'fwd ms':>9s} {'x tv':>6s} {'fwd+bwd ms':>11s} {'x tv':>6s}")
    for name, r in rows.items():
        fwd, fb = statistics.median(r["fwd"]), statistics.median(r["fwdbwd"])
        table.append({"pooler": name, "fwd_ms": fwd, "fwdbwd_ms": fb, "fwd_ratio": fwd / ref["fwd"],
                      "fwdbwd_ratio": fb / ref["fwdbwd"]})
        print(f"{name:28s} {fwd:9.2f} {fwd / ref['fwd']:6.2f} {fb:11.2f} {fb / ref['fwdbwd']:6.2f}")
    if args.json:
        write_json(args.json, {"args": {k: str(v) for k, v in vars(args).items()}, "rows": table})


if __name__ == "__main__":
    main()
