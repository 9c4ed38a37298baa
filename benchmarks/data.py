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

4. **COCO-size data** (``--scale N``, instead of 1-3): a folder of N tiny images (32x24 PNG)
   with Poisson(7.3) boxes each (polygon segmentations, 10 categories), as in the measurement
   of issue 15, generated once into ``--scale-cache`` (reused while its parameters match).
   Each measurement runs in a fresh process that first imports the same modules
   (``detector.data.coco``: torch, torchvision, pycocotools), so one cannot pollute another's
   peak: ``COCO(file)`` (pycocotools' own load), building ``CocoDetection`` with an empty
   header cache (cold) and again with the cache it left (warm). Peak memory is the process's
   ``VmHWM`` (peak RSS of its own address space; ``ru_maxrss`` can carry the parent's peak
   across fork+exec) less its ``VmRSS`` after the imports, i.e. what the data costs. Then an
   epoch through a DataLoader with ``--workers`` workers: each worker's RSS, USS (private
   pages: what copy-on-write copies show up in; RSS counts shared pages too) and PSS at the
   first and at the last batch, for ``CocoDetection`` and for a control that reads
   pycocotools' dicts per item (the copy-on-read growth the store avoids).

Every stage is timed ``--repeats`` times and the median reported. Other processes on the
machine slow every stage: read the numbers with the load average printed next to them.

Usage::

    python benchmarks/data.py                       # prints a table
    python benchmarks/data.py --json runs/bench_data.json
    python benchmarks/data.py --scale 20000 --scale-cache /tmp/scale --json runs/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
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

from detector.data.datamodule import DetectionDataModule
from detector.data.shapes import SHAPES
from detector.data.synthetic import generate_synthetic_coco
from detector.io import write_json

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
    p.add_argument("--scale", type=int, default=None,
                   help="COCO-size mode: N tiny images, construction time/memory against COCO(file), worker memory")
    p.add_argument("--scale-cache", type=Path, default=None,
                   help="folder to keep the generated --scale folder in (reused); default: a temporary one")
    p.add_argument("--measure", nargs=2, metavar=("WHAT", "ROOT"), help=argparse.SUPPRESS)  # one child process
    a = p.parse_args(argv)
    if a.measure:
        print(json.dumps(measure(*a.measure, workers=a.workers)))
        return 0
    if a.scale is not None:
        return run_scale(a)

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


# ------------------------------------------------------------------------------------------ --scale
SCALE_FORMAT = 1  # bump when the generated folder changes


def scale_folder(base: Path, n: int, seed: int = 0) -> Path:
    """``base/scale-N-seed``: N tiny PNGs in ``images/`` + ``instances.json`` (generated once, reused)."""
    import io

    import numpy as np
    from PIL import Image

    root = base / f"scale-{n}-{seed}"
    params = {"format": SCALE_FORMAT, "n": n, "seed": seed}
    done = root / "DONE.json"
    if done.is_file() and json.loads(done.read_text()) == params:
        return root
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    png = buf.getvalue()
    counts = rng.poisson(7.3, n)
    m = int(counts.sum())
    xy = np.round(rng.uniform(0, [20, 14], (m, 2)), 2)
    wh = np.round(rng.uniform(2, [12, 10], (m, 2)), 2)
    cats = rng.integers(1, 11, m)
    image_of = np.repeat(np.arange(1, n + 1), counts)
    images, anns = [], []
    for i in range(n):
        name = f"{i:07d}.png"
        (root / "images" / name).write_bytes(png)
        images.append({"id": i + 1, "file_name": name, "width": 32, "height": 24})
    for k in range(m):
        (x, y), (w, h) = xy[k].tolist(), wh[k].tolist()
        anns.append({"id": k + 1, "image_id": int(image_of[k]), "category_id": int(cats[k]), "bbox": [x, y, w, h],
                     "area": round(w * h, 2), "iscrowd": 0,
                     "segmentation": [[x, y, round(x + w, 2), y, round(x + w, 2), round(y + h, 2), x, round(y + h, 2)]]})
    data = {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in range(1, 11)]}
    (root / "instances.json").write_text(json.dumps(data))
    done.write_text(json.dumps(params))
    return root


def _proc_kib(field: str) -> int:
    """A ``/proc/self/status`` field (``VmRSS``, ``VmHWM``) in KiB; -1 where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class _DictItems(torch.utils.data.Dataset):
    """Control for the worker-memory measurement: items read from pycocotools' dicts (no images)."""

    def __init__(self, coco) -> None:
        self.coco, self.ids = coco, sorted(coco.imgs)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        anns = self.coco.imgToAnns.get(self.ids[i], [])
        return torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4), [a["category_id"] for a in anns]


def _worker_memory(dataset, workers: int) -> dict:
    """RSS / USS / PSS (MiB) of each DataLoader worker at the first and the last batch of one epoch."""
    import psutil

    from detector.data.datamodule import detection_collate

    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=workers, collate_fn=detection_collate)
    me, samples, start = psutil.Process(), {}, time.perf_counter()
    last = len(loader) - 1
    for i, _ in enumerate(loader):
        if i in (0, last):
            for child in me.children():
                info = child.memory_full_info()
                samples.setdefault(child.pid, []).append(
                    {k: round(getattr(info, k) / 2**20, 1) for k in ("rss", "uss", "pss")})
    out = {"epoch_s": time.perf_counter() - start, "workers": []}
    for first, end in (v for v in samples.values() if len(v) == 2):
        out["workers"].append({"start": first, "end": end, "uss_growth_mib": round(end["uss"] - first["uss"], 1),
                               "rss_growth_mib": round(end["rss"] - first["rss"], 1)})
    return out


def measure(what: str, root: str, workers: int = 2) -> dict:
    """One measurement in this (fresh) process: ``coco``, ``dataset`` or ``epoch``."""
    import contextlib
    import io
    import warnings

    from pycocotools.coco import COCO

    from detector.data.coco import CocoDetection

    root = Path(root)
    base, start = _proc_kib("VmRSS"), time.perf_counter()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if what == "coco":
            obj = COCO(str(root / "instances.json"))
        else:
            obj = CocoDetection(root / "images", root / "instances.json")
    seconds, peak = time.perf_counter() - start, _proc_kib("VmHWM")
    out = {"what": what, "seconds": seconds, "base_mib": base / 1024, "peak_mib": peak / 1024,
           "peak_over_base_mib": (peak - base) / 1024, "after_mib": _proc_kib("VmRSS") / 1024}
    if what == "epoch":
        out["store_mib"] = obj.store.nbytes / 2**20
        out["dataset"] = _worker_memory(obj, workers)
        del obj
        with contextlib.redirect_stdout(io.StringIO()):
            out["dicts"] = _worker_memory(_DictItems(COCO(str(root / "instances.json"))), workers)
    return out


def _child(what: str, root: Path, cache: Path, workers: int) -> dict:
    import subprocess

    env = {**os.environ, "DETECTOR_CACHE": str(cache)}
    done = subprocess.run([sys.executable, __file__, "--measure", what, str(root), "--workers", str(workers)],
                          env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"measurement {what} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_scale(a: argparse.Namespace) -> int:
    """``--scale N``: construction time and memory against ``COCO(file)``, then worker memory over an epoch."""
    results: dict = {"machine": {"cpus": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
                                 "loadavg_before": os.getloadavg()}, "args": {k: str(v) for k, v in vars(a).items()}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        root = scale_folder(a.scale_cache or tmp, a.scale)
        results["generation_s"] = time.perf_counter() - start
        n_anns = len(json.loads((root / "instances.json").read_text())["annotations"])
        rows: dict[str, list[dict]] = {"coco": [], "cold": [], "warm": []}
        for r in range(a.repeats):  # interleaved, so load changes hit every row alike
            cache = tmp / f"cache-{r}"  # empty: the cold build fills it, the warm build reads it
            rows["coco"].append(_child("coco", root, cache, a.workers))
            rows["cold"].append(_child("dataset", root, cache, a.workers))
            rows["warm"].append(_child("dataset", root, cache, a.workers))
        epoch = _child("epoch", root, tmp / f"cache-{a.repeats - 1}", a.workers)
    results["loadavg_after"] = os.getloadavg()
    med = {k: {f: statistics.median(x[f] for x in v) for f in ("seconds", "peak_over_base_mib", "peak_mib", "base_mib")}
           for k, v in rows.items()}
    ref = med["coco"]
    results.update(images=a.scale, annotations=n_anns, runs=rows, median=med, epoch=epoch)
    print(f"{a.scale} images, {n_anns} annotations ({root}); medians of {a.repeats}, each in a fresh process")
    print(f"{'construction':<34} {'s':>7} {'x COCO':>7} {'peak-base MiB':>14} {'x COCO':>7} {'peak MiB':>9}")
    names = {"coco": "pycocotools COCO(file)", "cold": "CocoDetection, header cache empty",
             "warm": "CocoDetection, header cache warm"}
    for k, m in med.items():
        results.setdefault("ratios", {})[k] = {"time": m["seconds"] / ref["seconds"],
                                               "memory": m["peak_over_base_mib"] / ref["peak_over_base_mib"]}
        print(f"{names[k]:<34} {m['seconds']:>7.2f} {m['seconds'] / ref['seconds']:>7.2f} "
              f"{m['peak_over_base_mib']:>14.1f} {m['peak_over_base_mib'] / ref['peak_over_base_mib']:>7.2f} "
              f"{m['peak_mib']:>9.1f}")
    print(f"(peak-base: peak RSS less RSS after the same imports, {med['coco']['base_mib']:.0f} MiB; "
          f"the store itself holds {epoch['store_mib']:.1f} MiB)")
    print(f"worker memory over one epoch ({a.workers} workers, batch 16), MiB at first -> last batch:")
    for label, key in (("CocoDetection (store)", "dataset"), ("control: pycocotools dicts", "dicts")):
        for w in epoch[key]["workers"]:
            s0, s1 = w["start"], w["end"]
            print(f"  {label:<27} RSS {s0['rss']:7.1f} -> {s1['rss']:7.1f}   USS {s0['uss']:7.1f} -> {s1['uss']:7.1f}"
                  f"   PSS {s0['pss']:7.1f} -> {s1['pss']:7.1f}")
    warm = results["ratios"]["warm"]
    growth = max((w["uss_growth_mib"] for w in epoch["dataset"]["workers"]), default=float("nan"))
    results["targets"] = {"time_le_2x": warm["time"] <= 2, "memory_le_1.5x": warm["memory"] <= 1.5,
                          "worker_uss_growth_mib": growth}
    print(f"targets (warm build): time {warm['time']:.2f}x <= 2x: {'met' if warm['time'] <= 2 else 'NOT met'}; "
          f"memory {warm['memory']:.2f}x <= 1.5x: {'met' if warm['memory'] <= 1.5 else 'NOT met'}; "
          f"largest worker USS growth {growth:.1f} MiB; load average before/after: "
          f"{results['machine']['loadavg_before'][0]:.2f} / {results['loadavg_after'][0]:.2f}")
    if a.json:
        write_json(a.json, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
