"""Training-step throughput of our detector vs torchvision's stock FasterRCNN, and where the time goes.

Part 1 (the target, ratio >= 0.95): images/s of a full training step (forward, backward,
SGD step) of `build_detector(cfg)` with `roi_align` avg (sampling_ratio=2), against
torchvision's `FasterRCNN` assembled from deep copies of the *same* backbone, anchor
generator, RPN head, box head and predictor, with `MultiScaleRoIAlign(["0"], size,
sampling_ratio=2)`, the same resize sizes and RPN/box settings. Same process, same
inputs, same random seed before every step (so both sample the same proposals), and
the two models alternate within every repeat so machine noise hits both alike.

Part 2: a per-stage time split of one training step for each ROI variant of the ablation
(RoIPool, RoIWarp avg/max, RoIAlign avg/max, PrRoIPool, and any registered op): forward
time of transform, backbone, RPN (with its losses), ROI op, box head (+ predictor),
sampling + Fast R-CNN losses; then backward + optimizer step; and the ROI op's own forward
+ backward, timed in isolation on the very features and proposals of that step, which is
what the ROI layer costs. The ops' models are stepped round-robin, like the comparison, so
load changes hit them all alike.

    .venv/bin/python benchmarks/train_step.py                  # CPU, 2 threads, small preset
    .venv/bin/python benchmarks/train_step.py --device cuda --preset full --json out.json
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import platform
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from torchvision.models.detection import FasterRCNN
from torchvision.ops import MultiScaleRoIAlign

from detector.ablation.variants import default_variants
from detector.io import write_json
from detector.models import DetectorConfig, build_detector
from detector.models.detector import IMAGENET_MEAN, IMAGENET_STD

#: label -> (registry key, options): the ablation's variants, read from the ROI variant table
#: (`detector.ablation.variants.default_variants`), so a registered op is benchmarked with no edit
#: here; options left out take the table's defaults (sampling_ratio 2 for the sampling ops).
OPS = {v.name: (v.op, v.roi_options()) for v in default_variants()}
STAGES = ("transform", "backbone", "rpn", "roi_op", "box_head", "sampling+losses", "backward+step")


def make_config(args: argparse.Namespace, roi_op: str, options: dict) -> DetectorConfig:
    base = DetectorConfig.small if args.preset == "small" else DetectorConfig
    overrides = dict(
        backbone=args.backbone,
        stride=args.stride,
        min_size=args.min_size,
        max_size=args.max_size,
        num_classes=args.num_classes,
        roi_op=roi_op,
        roi_options=options,
        fpn=True if args.fpn else None,
    )
    return base(**{k: v for k, v in overrides.items() if v is not None})


def make_inputs(args: argparse.Namespace, num_classes: int, device: torch.device):
    """A fixed batch: images of a few sizes, 1-6 boxes each, labels in [1, num_classes)."""
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i in range(args.batch):
        h, w = args.image_size - 32 * (i % 2), args.image_size + 48 * (i % 3)
        n = 1 + i % 6
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = (0.1 + 0.3 * torch.rand(n, 2, generator=g)) * torch.tensor([w, h])
        images.append(torch.rand(3, h, w, generator=g).to(device))
        targets.append(
            {
                "boxes": torch.cat([xy, xy + wh], 1).to(device),
                "labels": torch.randint(1, num_classes, (n,), generator=g).to(device),
            }
        )
    return images, targets


def torchvision_twin(ours: nn.Module, cfg: DetectorConfig) -> FasterRCNN:
    """torchvision's FasterRCNN from copies of our parts, pooling with MultiScaleRoIAlign."""
    heads = ours.roi_heads
    return FasterRCNN(
        copy.deepcopy(ours.backbone),
        num_classes=None,
        min_size=cfg.min_size,
        max_size=cfg.max_size,
        image_mean=list(IMAGENET_MEAN),
        image_std=list(IMAGENET_STD),
        rpn_anchor_generator=copy.deepcopy(ours.rpn.anchor_generator),
        rpn_head=copy.deepcopy(ours.rpn.head),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_fg_iou_thresh=cfg.rpn_fg_iou_thresh,
        rpn_bg_iou_thresh=cfg.rpn_bg_iou_thresh,
        rpn_batch_size_per_image=cfg.rpn_batch_size_per_image,
        rpn_positive_fraction=cfg.rpn_positive_fraction,
        rpn_score_thresh=cfg.rpn_score_thresh,
        box_roi_pool=MultiScaleRoIAlign(["0", "1", "2", "3"] if cfg.fpn else ["0"], cfg.resolved_roi_output_size,
                                        sampling_ratio=2),
        box_head=copy.deepcopy(heads.box_head),
        box_predictor=copy.deepcopy(heads.box_predictor),
        box_score_thresh=cfg.box_score_thresh,
        box_nms_thresh=cfg.box_nms_thresh,
        box_detections_per_img=cfg.box_detections_per_img,
        box_fg_iou_thresh=cfg.box_fg_iou_thresh,
        box_bg_iou_thresh=cfg.box_bg_iou_thresh,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        box_positive_fraction=cfg.box_positive_fraction,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, images, targets, seed: int) -> dict[str, float]:
    torch.manual_seed(seed)  # identical proposal sampling for both models
    losses = model(images, targets)
    loss = sum(losses.values())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return {k: v.item() for k, v in losses.items()}


def compare(args, device) -> dict:
    cfg = make_config(args, "roi_align", {"sampling_ratio": 2})
    torch.manual_seed(0)
    ours = build_detector(cfg).to(device).train()
    theirs = torchvision_twin(ours, cfg).to(device).train()
    models = {"ours": ours, "torchvision": theirs}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.0, momentum=0.9) for k, m in models.items()}  # lr 0: same state
    images, targets = make_inputs(args, cfg.num_classes, device)
    first = {k: train_step(m, opts[k], images, targets, seed=0) for k, m in models.items()}
    max_diff = max(abs(first["ours"][k] - first["torchvision"][k]) for k in first["ours"])
    for _ in range(args.warmup):
        for k, m in models.items():
            train_step(m, opts[k], images, targets, seed=1)
    ips: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.repeats):
        order = list(models) if r % 2 == 0 else list(models)[::-1]  # interleaved, alternating order
        for k in order:
            sync(device)
            t0 = time.perf_counter()
            for s in range(args.steps):
                train_step(models[k], opts[k], images, targets, seed=100 + s)
            sync(device)
            ips[k].append(args.steps * args.batch / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in ips.items()}
    return {
        "config": dataclasses.asdict(cfg) | {"roi_options": cfg.resolved_roi_options},
        "images_per_s": ips,
        "median_images_per_s": med,
        "ratio": med["ours"] / med["torchvision"],
        "first_step_max_abs_loss_diff": max_diff,
    }


class StageTimer:
    """Forward hooks that add each stage's wall time (synchronized on CUDA) to `ms`."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.device, self.handles, self.t0 = device, [], {}
        heads = model.roi_heads
        for name, module in [
            ("transform", model.transform),
            ("backbone", model.backbone),
            ("rpn", model.rpn),
            ("roi_op", heads.box_roi_pool),
            ("box_head", heads.box_head),
            ("predictor", heads.box_predictor),
            ("roi_heads", heads),
            ("forward", model),
        ]:
            self.handles.append(module.register_forward_pre_hook(self._start(name)))
            self.handles.append(module.register_forward_hook(self._stop(name)))
        self.captured = None
        self.handles.append(heads.box_roi_pool.register_forward_pre_hook(self._capture))

    def _start(self, name):
        def hook(module, inputs):
            sync(self.device)
            self.t0[name] = time.perf_counter()

        return hook

    def _stop(self, name):
        def hook(module, inputs, output):
            sync(self.device)
            self.ms[name] += 1e3 * (time.perf_counter() - self.t0[name])

        return hook

    def _capture(self, module, inputs):
        features, proposals, _ = inputs
        self.captured = (features["0"].detach(), [p.detach() for p in proposals])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def stage_split(args, device, labels: list[str]) -> dict[str, dict[str, float]]:
    """Per-stage ms of one training step for every ROI op in `labels`.

    All models are built first and stepped round-robin (one step each in turn), so a
    change in machine load spreads over all ops instead of biasing whichever ran then.
    Models share the seed, hence the same weights, inputs and sampled proposals.
    """
    runs = {}
    for label in labels:
        name, options = OPS[label]
        cfg = make_config(args, name, options)
        torch.manual_seed(0)
        model = build_detector(cfg).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)
        images, targets = make_inputs(args, cfg.num_classes, device)
        for _ in range(args.warmup):
            train_step(model, opt, images, targets, seed=1)
        runs[label] = dict(
            model=model,
            opt=opt,
            images=images,
            targets=targets,
            timer=StageTimer(model, device),
            total=0.0,
            fwd=0.0,
            bwd=0.0,
        )
    n = args.split_steps
    for s in range(n):
        for run in runs.values():
            sync(device)
            t0 = time.perf_counter()
            train_step(run["model"], run["opt"], run["images"], run["targets"], seed=100 + s)
            sync(device)
            run["total"] += 1e3 * (time.perf_counter() - t0)
    for run in runs.values():
        run["timer"].remove()
    # The ROI op alone, forward + backward, on the last step's features and sampled proposals.
    for _ in range(n):
        for run in runs.values():
            features, proposals = run["timer"].captured
            op = run["model"].roi_heads.box_roi_pool.roi_op
            x = features.clone().requires_grad_(True)
            sync(device)
            t0 = time.perf_counter()
            y = op(x, proposals)
            sync(device)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            sync(device)
            run["fwd"] += 1e3 * (t1 - t0)
            run["bwd"] += 1e3 * (time.perf_counter() - t1)
    out = {}
    for label, run in runs.items():
        ms = {k: v / n for k, v in run["timer"].ms.items()}
        out[label] = {
            "transform": ms["transform"],
            "backbone": ms["backbone"],
            "rpn": ms["rpn"],
            "roi_op": ms["roi_op"],
            "box_head": ms["box_head"] + ms["predictor"],
            "sampling+losses": ms["roi_heads"] - ms["roi_op"] - ms["box_head"] - ms["predictor"],
            "backward+step": run["total"] / n - ms["forward"],
            "total": run["total"] / n,
            "roi_op_alone_fwd": run["fwd"] / n,
            "roi_op_alone_bwd": run["bwd"] / n,
            "num_rois": sum(len(p) for p in run["timer"].captured[1]),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads on CPU")
    p.add_argument(
        "--preset",
        choices=("small", "full"),
        default="small",
        help="small = DetectorConfig.small() (CPU-friendly), full = DetectorConfig() defaults",
    )
    p.add_argument("--backbone", default=None)
    p.add_argument("--stride", type=int, default=None)
    p.add_argument("--min-size", type=int, default=None)
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--fpn", action="store_true", help="a ResNet with a feature pyramid (P2-P5, multi-level ROI pooler)")
    p.add_argument("--image-size", type=int, default=320, help="input images are about this size")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="training steps per timed repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--split-steps", type=int, default=5, help="timed steps per ROI op in the stage split")
    p.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    p.add_argument("--skip-split", action="store_true", help="only the comparison with torchvision")
    p.add_argument("--json", type=Path, default=None, help="write all numbers here")
    args = p.parse_args()

    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    meta = {
        "device": str(device),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }

    result = {"meta": meta, "comparison": compare(args, device)}
    c = result["comparison"]
    print(
        f"# training step, {meta['device']} ({meta['gpu'] or meta['cpu']}), threads={meta['threads']}, "
        f"batch={args.batch}, {args.repeats} interleaved repeats x {args.steps} steps"
    )
    print(f"{'model':<40} {'images/s (median)':>18} {'runs':>40}")
    for k, label in (
        ("ours", "ours (roi_align avg, sampling 2)"),
        ("torchvision", "torchvision FasterRCNN (MultiScaleRoIAlign)"),
    ):
        runs = " ".join(f"{v:.2f}" for v in c["images_per_s"][k])
        print(f"{label:<40} {c['median_images_per_s'][k]:>18.2f} {runs:>40}")
    print(
        f"ratio ours / torchvision = {c['ratio']:.3f} (target >= 0.95); first-step |loss diff| = "
        f"{c['first_step_max_abs_loss_diff']:.2e}"
    )

    if args.fpn and not args.skip_split:  # the split times one single-level op; benchmarks/fpn_pooler.py times the pooler
        print("--fpn: per-stage split skipped (the multi-level pooler is timed by benchmarks/fpn_pooler.py)")
    if not args.skip_split and not args.fpn:
        split = stage_split(args, device, args.ops)
        result["stages_ms"] = split
        cols = STAGES + ("total", "roi_op_alone_fwd", "roi_op_alone_bwd")
        print(
            f"\n# per-stage time of one training step, ms (forward stages via hooks; ROI op alone = forward/backward "
            f"on that step's {next(iter(split.values()))['num_rois']} ROIs)"
        )
        print(f"{'roi op':<14}" + "".join(f"{c:>17}" for c in cols))
        for label, row in split.items():
            print(f"{label:<14}" + "".join(f"{row[c]:>17.2f}" for c in cols))

    if args.json:
        write_json(args.json, result, indent=2)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
