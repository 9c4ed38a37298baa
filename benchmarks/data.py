"""Data throughput: synthetic generation, the training data loader, and a CPU training step.

Measures, in one process, on the default synthetic setting (400x288 images):

1. **generation**: ``generate_synthetic_coco`` writing ``--num-images`` JPEG images plus
   annotations with ``--gen-workers`` processes (target: >= 200 images/s on 2 cores), and
   the same with 1 process (the per-image cost);
2. **loader**: ``DetectionDataModule.train_dataloader()`` over those images with
   ``--workers`` workers, default training transforms, batch ``--batch-size``; the first
   batch (worker start-up) is excluded;
3. **training step** (reference for the loader target "loader >= 3x the images/s of a CPU
   training step"): forward + backward + SGD step of ``build_detector`` with the detector
   settings ``train.py fit --config configs/quickstart.yaml`` uses (read by train.py's own
   parser, `detector.cli.read_train_config`, so base.yaml and its layers apply; the row says
   which backbone, stride and op that gave) on real loader batches, after 2 warm-up steps.
   ``--train-steps 0`` skips it.

Every stage is timed ``--repeats`` times and the median reported. Other processes on the
machine slow every stage: read the numbers with the load average printed next to them.

Usage::

    python benchmarks/data.py                       # prints a table
    python benchmarks/data.py --json runs/bench_data.json
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from detector.data.datamodule import DetectionDataModule  # noqa: E402
from detector.data.shapes import SHAPES  # noqa: E402
from detector.data.synthetic import generate_synthetic_coco  # noqa: E402
from detector.io import write_json  # noqa: E402

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the generator's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def time_generation(out: Path, n: int, workers: int, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock images/s, and CPU milliseconds per image (less sensitive to other load)."""
    rates, cpu_ms = [], []
    for r in range(repeats):
        start, cpu = time.perf_counter(), _cpu_seconds()
        generate_synthetic_coco(out / f"gen{workers}-{r}", num_train=n, num_val=0, workers=workers)
        rates.append(n / (time.perf_counter() - start))
        cpu_ms.append((_cpu_seconds() - cpu) / n * 1000)
    return rates, cpu_ms


def datamodule(root: Path, workers: int, batch_size: int) -> DetectionDataModule:
    return DetectionDataModule(
        dataset="coco", train_images=str(root / "train"), train_annotations=str(root / "annotations/instances_train.json"),
        val_images=str(root / "train"), val_annotations=str(root / "annotations/instances_train.json"),
        num_workers=workers, batch_size=batch_size)


def time_loader(root: Path, workers: int, batch_size: int, repeats: int) -> list[float]:
    rates = []
    for _ in range(repeats):
        dm = datamodule(root, workers, batch_size)
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        next(it)  # worker start-up
        n, start = 0, time.perf_counter()
        for images, _ in it:
            n += len(images)
        rates.append(n / (time.perf_counter() - start))
        del it
    return rates


def time_train_step(root: Path, batch_size: int, steps: int) -> tuple[list[float], str]:
    """Images/s of training steps of the quickstart's detector, and a note naming its settings."""
    from detector.cli import read_train_config, section
    from detector.models import DetectorConfig, build_detector

    config = read_train_config(["--config", str(QUICKSTART)])  # ValueError naming the key if it does not parse
    cfg = DetectorConfig.from_dict({**section(config, "model.detector"), "num_classes": len(SHAPES) + 1})
    model = build_detector(cfg)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    dm = datamodule(root, 0, batch_size)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    rates = []
    for step in range(steps + 2):
        images, targets = next(batches)
        start = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            rates.append(len(images) / (time.perf_counter() - start))
    return rates, (f"{cfg.backbone} stride {cfg.stride} {cfg.roi_op} (configs/quickstart.yaml), "
                   f"batch {batch_size}, {torch.get_num_threads()} threads")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-images", type=int, default=400)
    p.add_argument("--gen-workers", type=int, default=2)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=5, help="0 skips the training-step reference")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)

    results: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                                 "loadavg_before": os.getloadavg()}, "args": {k: str(v) for k, v in vars(a).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        gen, gen_cpu = time_generation(tmp, a.num_images, a.gen_workers, a.repeats)
        gen1, gen1_cpu = time_generation(tmp, a.num_images, 1, a.repeats)
        root = tmp / f"gen{a.gen_workers}-0"
        load = time_loader(root, a.workers, a.batch_size, a.repeats)
        train, train_note = time_train_step(root, a.batch_size, a.train_steps) if a.train_steps else ([], "skipped")
    results["loadavg_after"] = os.getloadavg()
    rows = [
        ("generation", f"{a.gen_workers} processes, {a.num_images} images 400x288 JPEG", gen),
        ("generation", f"1 process, {a.num_images} images", gen1),
        ("loader", f"{a.workers} workers, default train transforms, batch {a.batch_size}", load),
        ("train step", train_note, train),
    ]
    print(f"{'stage':<12} {'images/s (median)':>18} {'min':>8} {'max':>8}  setting")
    for stage, setting, rates in rows:
        if rates:
            print(f"{stage:<12} {statistics.median(rates):>18.1f} {min(rates):>8.1f} {max(rates):>8.1f}  {setting}")
        else:
            print(f"{stage:<12} {'-':>18} {'-':>8} {'-':>8}  {setting}")
        results.setdefault("rows", []).append({"stage": stage, "setting": setting, "images_per_s": rates,
                                               "median": statistics.median(rates) if rates else None})
    cpu_ms = statistics.median(gen1_cpu)
    results["generation_cpu_ms_per_image"] = {"workers": statistics.median(gen_cpu), "single": cpu_ms}
    print(f"generation CPU time: {cpu_ms:.2f} ms/image in 1 process, {statistics.median(gen_cpu):.2f} ms/image with "
          f"{a.gen_workers} (workers + parent); {a.gen_workers} idle cores could give about "
          f"{a.gen_workers * 1000 / statistics.median(gen_cpu):.0f} images/s (an estimate from CPU time, not a wall-clock measurement)")
    if train:
        ratio = statistics.median(load) / statistics.median(train)
        results["loader_over_train_step"] = ratio
        print(f"loader / training step: {ratio:.1f}x (target >= 3x)")
    print(f"generation target >= 200 images/s: {'met' if statistics.median(gen) >= 200 else 'NOT met'}; "
          f"load average before/after: {results['machine']['loadavg_before'][0]:.2f} / {results['loadavg_after'][0]:.2f}")
    if a.json:
        write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
