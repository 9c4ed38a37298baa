"""Inference time of a checkpoint: whole detector and ROI layer alone, per image.

    python -m detector.ablation.timing CKPT --out timing.json [--images 20] [--threads N]

The model is rebuilt from the checkpoint (``detector.checkpointing.load_detector``)
and run in eval mode under ``torch.inference_mode`` on the first ``--images`` images of the
validation split it was trained with (rebuilt from the checkpoint's data arguments), one
image per call, after ``--warmup`` untimed calls. Forward hooks on the box (and mask) ROI
pooler time the ROI layer by itself, since that is the only part that differs between the
variants of an ablation; the whole-model time says how much of the total it is.

Writes ``{"ms_per_image", "ms_per_image_median", "roi_ms_per_image", "images", "threads",
"device", "checkpoint"}``. Times are wall-clock and depend on the machine and its load:
compare them within one ablation, not across machines.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from detector.io import write_json


def _poolers(model) -> list[torch.nn.Module]:
    heads = getattr(model, "roi_heads", None)
    return [m for m in (getattr(heads, "box_roi_pool", None), getattr(heads, "mask_roi_pool", None)) if m is not None]


def time_checkpoint(checkpoint: str, images: int = 20, warmup: int = 2, device: str = "cpu") -> dict:
    """Time ``checkpoint`` on ``images`` validation images (see the module doc)."""
    from detector.checkpointing import load_detector

    if images < 1 or warmup < 0:
        raise ValueError(f"--images must be >= 1 and --warmup >= 0, got {images} and {warmup}")
    loaded = load_detector(checkpoint)
    dm = loaded.datamodule(num_workers=0)
    dm.prepare_data()
    dm.setup("validate")
    dataset = dm.val_dataset
    n = min(images, len(dataset))
    if n == 0:
        raise ValueError(f"{checkpoint}: the validation split has no images to time")
    model = loaded.model.to(device).eval()

    roi_seconds = [0.0]
    starts: dict[int, float] = {}

    def pre_hook(module, args):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        starts[id(module)] = time.perf_counter()

    def post_hook(module, args, output):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        roi_seconds[0] += time.perf_counter() - starts.pop(id(module))

    handles = [h for m in _poolers(model) for h in (m.register_forward_pre_hook(pre_hook),
                                                      m.register_forward_hook(post_hook))]
    per_image = []
    with torch.inference_mode():
        batch = [dataset[i][0].to(device) for i in range(n)]  # float [0, 1] images, as the loader gives them
        for i in range(min(warmup, n)):
            model([batch[i]])
        roi_seconds[0] = 0.0
        for img in batch:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model([img])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_image.append(time.perf_counter() - t0)
    for h in handles:
        h.remove()
    return {
        "checkpoint": checkpoint, "images": n, "warmup": warmup, "device": device,
        "threads": torch.get_num_threads(),
        "ms_per_image": 1000 * sum(per_image) / n,
        "ms_per_image_median": 1000 * statistics.median(per_image),
        "roi_ms_per_image": 1000 * roi_seconds[0] / n if handles else None,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m detector.ablation.timing", description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write")
    p.add_argument("--images", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = time_checkpoint(args.checkpoint, args.images, args.warmup, args.device)
    write_json(args.out, result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:
        sys.exit(f"error: {e}")
