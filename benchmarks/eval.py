"""Evaluation at COCO val size: our scoring path against pycocotools' COCOeval alone.

Target (issue 15, item 4): scoring 5,000 images x 100 detections takes at most 1.10x what
pycocotools alone takes on the same files, in the same process.

The data (`make_ground_truth`, `make_detections`; seeded, generated in memory, written to a
temporary folder) is shaped like COCO val2017: 5,000 images of about 640x480, ~7.3 objects
per image (Poisson), 80 categories in 10 supercategories, object sizes log-uniform so that
about a third each are small / medium / large, 1% crowd regions; 100 detections per image:
noisy copies of the ground truth (jittered boxes, some duplicates, some with a class of the
same supercategory), the rest false positives anywhere, scores higher for the copies.

Timed in one process, (a) and (b) alternating within each repeat (and which goes first alternating
between repeats) so that other load on the machine hits both, garbage collected before each; the
median of ``--repeats`` is reported, as wall-clock seconds and as this process's CPU seconds (less
sensitive to other processes on a shared machine); the target must hold for both:

(a) **pycocotools alone**: ``COCO(instances.json)``, ``loadRes(results)``, ``COCOeval``
    ``evaluate() / accumulate() / summarize()``;
(b) **ours, as evaluate.py scores**: `detector.evaluation.runner.score_detections` (the
    annotation file loaded, `evaluate_coco`: COCOeval + per-class AP), then `metrics_document`
    and `format_table` (what metrics.json and the printed table are made from), the error
    analysis off (``--analysis false``);
(c) **the error analysis** (`Evaluation.analyze`, evaluate.py's default) on top of (b),
    reported separately (``--analysis-repeats`` runs after the others): it reruns COCOeval (the
    COCO error breakdown) and is not part of the target.

Writing detections.json / metrics.json is file output, not scoring, and is not timed. (b)
must give the numbers of (a): the script checks that the twelve summary numbers are equal.

Usage::

    python benchmarks/eval.py                          # 5,000 images, 3 repeats (~15 min on 2 busy cores)
    python benchmarks/eval.py --images 500 --repeats 1 --json runs/bench_eval.json
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import STAT_NAMES
from detector.evaluation.report import format_table, metrics_document
from detector.evaluation.runner import score_detections
from detector.io import write_json

NUM_CATEGORIES, NUM_SUPERCATEGORIES = 80, 10
TARGET = 1.10


def make_ground_truth(num_images: int, seed: int = 0, objects_per_image: float = 7.3) -> dict[str, Any]:
    """A COCO instances dict shaped like val2017 (see the module doc); boxes [x, y, w, h] in pixels."""
    rng = np.random.default_rng(seed)
    categories = [{"id": c + 1, "name": f"class{c + 1}", "supercategory": f"super{c % NUM_SUPERCATEGORIES}"}
                  for c in range(NUM_CATEGORIES)]
    images, annotations = [], []
    counts = rng.poisson(objects_per_image, num_images)
    boxes = _random_boxes(rng, int(counts.sum()), 640, 480)  # (N, 4) xywh
    labels = rng.integers(1, NUM_CATEGORIES + 1, len(boxes))
    crowd = rng.random(len(boxes)) < 0.01
    n = 0
    for i, count in enumerate(counts.tolist()):
        images.append({"id": i + 1, "file_name": f"{i + 1:012d}.jpg", "width": 640, "height": 480})
        for j in range(n, n + count):
            x, y, w, h = (round(float(v), 2) for v in boxes[j])
            annotations.append({"id": j + 1, "image_id": i + 1, "category_id": int(labels[j]), "bbox": [x, y, w, h],
                                "area": round(w * h, 2), "iscrowd": int(crowd[j]),
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
        n += count
    return {"images": images, "annotations": annotations, "categories": categories}


def _random_boxes(rng: np.random.Generator, n: int, width: int, height: int) -> np.ndarray:
    """(n, 4) [x, y, w, h] inside the image: sqrt(area) log-uniform in [8, 400] px, aspect in [1/2, 2]."""
    side = np.exp(rng.uniform(np.log(8), np.log(400), n))
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    w, h = np.minimum(side * np.sqrt(aspect), width - 1), np.minimum(side / np.sqrt(aspect), height - 1)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return np.stack([x, y, w, h], axis=1)


def make_detections(gt: dict[str, Any], per_image: int = 100, seed: int = 1) -> dict[int, list[dict[str, Any]]]:
    """``{image_id: [COCO result] * per_image}``: noisy copies of the ground truth plus false positives."""
    rng = np.random.default_rng(seed)
    by_image: dict[int, list[dict[str, Any]]] = {img["id"]: [] for img in gt["images"]}
    for ann in gt["annotations"]:
        by_image[ann["image_id"]].append(ann)
    out: dict[int, list[dict[str, Any]]] = {}
    for image_id, anns in by_image.items():
        boxes, labels, scores = [], [], []
        for ann in anns:
            copies = (rng.random() < 0.9) + (rng.random() < 0.3)  # found, and sometimes found twice
            for _ in range(int(copies)):
                x, y, w, h = ann["bbox"]
                jitter = rng.normal(0.0, 0.08, 4) * [w, h, w, h]
                boxes.append([x + jitter[0], y + jitter[1], max(w + jitter[2], 1.0), max(h + jitter[3], 1.0)])
                label = ann["category_id"]
                if rng.random() < 0.1:  # confused with a class of its supercategory
                    label = int(rng.integers(0, NUM_CATEGORIES // NUM_SUPERCATEGORIES)) * NUM_SUPERCATEGORIES \
                        + (label - 1) % NUM_SUPERCATEGORIES + 1
                labels.append(label)
                scores.append(float(rng.beta(4, 2)))
        boxes, labels, scores = boxes[:per_image], labels[:per_image], scores[:per_image]
        extra = per_image - len(boxes)
        boxes += _random_boxes(rng, extra, 640, 480).tolist()
        labels += rng.integers(1, NUM_CATEGORIES + 1, extra).tolist()
        scores += rng.beta(1, 4, extra).tolist()
        out[image_id] = [{"image_id": image_id, "category_id": int(c), "bbox": [round(float(v), 2) for v in b],
                          "score": round(float(s), 4)} for b, c, s in zip(boxes, labels, scores)]
    return out


def pycocotools_alone(annotation_file: str, results: list[dict[str, Any]]) -> list[float]:
    """(a): the twelve COCOeval stats, pycocotools only."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(annotation_file)
        evaluator = COCOeval(gt, gt.loadRes(results), iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats.tolist()


def ours(annotation_file: str, per_image: dict[int, list[dict[str, Any]]], analysis: bool = False) -> Any:
    """(b), or (b) + (c) with `analysis`: evaluate.py's scoring, returns the `Evaluation`."""
    evaluation = score_detections(per_image, annotation_file, ("bbox",))
    metrics_document(evaluation.metrics, num_images=len(per_image))
    format_table(["model"], [evaluation.metrics], per_class=True)
    if analysis:
        evaluation.analyze()
    return evaluation


def _timed(fn, *args, **kwargs) -> tuple[float, float, Any]:
    """``(wall seconds, CPU seconds of this process, value)``; garbage collected first, so that
    neither side pays for the other's leftovers."""
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, value


def run(num_images: int, per_image: int, repeats: int, analysis_repeats: int, folder: str) -> dict[str, Any]:
    gt = make_ground_truth(num_images)
    detections = make_detections(gt, per_image)
    annotation_file = os.path.join(folder, "instances_val.json")
    write_json(annotation_file, gt, indent=None)
    results = [r for rs in detections.values() for r in rs]
    load = [os.getloadavg()]
    seconds: dict[str, list[float]] = {"pycocotools": [], "ours": [], "ours+analysis": []}
    cpu: dict[str, list[float]] = {k: [] for k in seconds}
    stats_a = stats_b = None
    for r in range(repeats):
        for side in ("pycocotools", "ours") if r % 2 == 0 else ("ours", "pycocotools"):  # neither always first
            if side == "pycocotools":
                copies = [dict(d) for d in results]  # loadRes writes into the dicts it gets
                t, c, stats_a = _timed(pycocotools_alone, annotation_file, copies)
                del copies
            else:
                t, c, evaluation = _timed(ours, annotation_file, detections)
                stats_b = [evaluation.metrics["bbox"].stats[name] for name in STAT_NAMES]
                del evaluation
            seconds[side].append(t)
            cpu[side].append(c)
        load.append(os.getloadavg())
    for _ in range(analysis_repeats):
        t, c, _ = _timed(ours, annotation_file, detections, analysis=True)
        seconds["ours+analysis"].append(t)
        cpu["ours+analysis"].append(c)
        load.append(os.getloadavg())
    same = all((math.isnan(b) and a < 0) or a == b for a, b in zip(stats_a, stats_b))
    if not same:
        raise AssertionError(f"our stats {stats_b} differ from pycocotools' {stats_a}")
    median = {k: statistics.median(v) for k, v in seconds.items() if v}
    median_cpu = {k: statistics.median(v) for k, v in cpu.items() if v}
    ratios = {k: median[k] / median["pycocotools"] for k in median}
    ratios_cpu = {k: median_cpu[k] / median_cpu["pycocotools"] for k in median_cpu}
    return {
        "images": num_images, "annotations": len(gt["annotations"]), "detections": len(results),
        "categories": NUM_CATEGORIES, "repeats": repeats, "analysis_repeats": analysis_repeats,
        "seconds": seconds, "cpu_seconds": cpu, "median_s": median, "median_cpu_s": median_cpu,
        "ratio": ratios, "ratio_cpu": ratios_cpu, "target_ratio": TARGET,
        "target_met": ratios["ours"] <= TARGET and ratios_cpu["ours"] <= TARGET, "stats_equal": same,
        "bbox_AP": stats_b[0], "loadavg": [list(x) for x in load], "cpus": os.cpu_count(),
        "platform": platform.platform(), "python": platform.python_version(),
    }


def format_report(report: dict[str, Any]) -> str:
    names = {"pycocotools": "(a) pycocotools alone", "ours": "(b) ours (evaluate.py scoring, --analysis false)",
             "ours+analysis": "(c) ours + error analysis (extra)"}
    lines = [(f"{report['images']} images, {report['annotations']} annotations, {report['detections']} detections, "
              f"{report['categories']} categories; median of {report['repeats']} ({report['analysis_repeats']} for (c))"),
             f"{'side':<52}{'wall s':>9}{'x (a)':>8}{'CPU s':>9}{'x (a)':>8}"]
    for key, seconds in report["median_s"].items():
        lines.append(f"{names[key]:<52}{seconds:>9.2f}{report['ratio'][key]:>8.3f}"
                     f"{report['median_cpu_s'][key]:>9.2f}{report['ratio_cpu'][key]:>8.3f}")
    verdict = "met" if report["target_met"] else "NOT met"
    lines.append(f"target (b) <= {report['target_ratio']:.2f}x (a), wall and CPU: {verdict}; "
                 f"stats equal: {report['stats_equal']}; "
                 f"bbox AP {report['bbox_AP']:.4f}")
    lines.append("load average (1, 5, 15 min) at the start and after each repeat: "
                 + "; ".join(" ".join(f"{v:.2f}" for v in x) for x in report["loadavg"]))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--detections", type=int, default=100, help="detections per image")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--analysis-repeats", type=int, default=1, help="runs of (c), after the others (0: skip)")
    parser.add_argument("--json", type=str, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
        report = run(args.images, args.detections, args.repeats, args.analysis_repeats, folder)
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
    return report


if __name__ == "__main__":
    main()
