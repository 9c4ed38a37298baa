"""evaluate.py's work once the checkpoints and the data have passed their checks.

For each checkpoint: `detect` over the validation loader (one device, plain PyTorch, see
`detector.evaluation.inference`), then COCOeval. Then the table is printed (side by side,
deltas against the first checkpoint) and the files are written:

- one checkpoint: ``OUTPUT/metrics.json`` and ``OUTPUT/detections.json``;
- several: ``OUTPUT/<label>/metrics.json`` and ``OUTPUT/<label>/detections.json`` per
  checkpoint (labels from `unique_labels`) and ``OUTPUT/comparison.json`` with every
  checkpoint's numbers and their deltas against the first.

The files are written after every checkpoint is evaluated, metrics.json after its
detections.json (`detector.evaluation.output.write_results`, which raises `OutputError`
naming the file when the disk is full or read-only). The folder was checked before the
work (`detector.evaluation.output.check_output`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from dataclasses import dataclass

import torch

from detector.checkpointing import LoadedDetector
from detector.evaluation.coco_eval import CocoEvalResult, evaluate_coco, load_coco
from detector.evaluation.distributed import flatten
from detector.evaluation.inference import detect
from detector.evaluation.output import COMPARISON, DETECTIONS, METRICS, write_results
from detector.evaluation.report import format_table, metrics_document, unique_labels


@dataclass
class Evaluation:
    """One checkpoint scored: COCO results per image id and the COCOeval outcome per IoU type."""

    per_image: dict[int, list[dict[str, Any]]]
    metrics: dict[str, CocoEvalResult]

    @property
    def results(self) -> list[dict[str, Any]]:
        return flatten(self.per_image)


def evaluate_detector(item: LoadedDetector, datamodule: Any, device: torch.device | str = "cpu",
                      autocast_dtype: torch.dtype | None = None, progress: bool = True) -> Evaluation:
    """Score `item` on `datamodule`'s validation split (set up by the caller) with COCOeval."""
    loader = datamodule.val_dataloader()
    masks = item.config.mask
    per_image = detect(item.model, loader, item.category_ids or [], masks=masks, device=device,
                       autocast_dtype=autocast_dtype, progress=progress, total=len(loader),
                       description=os.path.basename(item.path))
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    gt = load_coco(str(datamodule.val_annotation_file))
    return Evaluation(per_image, evaluate_coco(gt, flatten(per_image), per_image.keys(), iou_types))


def evaluate_checkpoints(
    loaded: Sequence[LoadedDetector],
    datamodule: Any,
    output: str,
    per_class: bool = True,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate `loaded` on `datamodule`'s validation split; print and write the files.

    Returns ``{label: metrics document}``.
    """
    evaluations = [evaluate_detector(item, datamodule, device, autocast_dtype, progress) for item in loaded]
    labels = unique_labels([item.path for item in loaded]) if len(loaded) > 1 else ["model"]
    documents: dict[str, Any] = {}
    files: list[tuple[str, Any]] = []  # (path relative to output, JSON object), in writing order
    for label, item, evaluation in zip(labels, loaded, evaluations):
        cfg = item.config
        options = cfg.resolved_roi_options
        doc = metrics_document(
            evaluation.metrics,
            checkpoint=os.path.abspath(item.path),
            num_images=len(evaluation.per_image),
            num_detections=len(evaluation.results),
            annotation_file=str(getattr(datamodule, "val_annotation_file", "")),
            roi_op=cfg.roi_op,
            model={"backbone": cfg.backbone, "stride": cfg.stride, "roi_op": cfg.roi_op,
                   "roi_mode": options.get("mode"), "sampling_ratio": options.get("sampling_ratio"),
                   "aligned": options.get("aligned"), "mask": cfg.mask, "roi_options": options},
            global_step=item.global_step,
            epoch=item.epoch,
        )
        folder = "" if len(loaded) == 1 else label
        files += [(os.path.join(folder, DETECTIONS), evaluation.results), (os.path.join(folder, METRICS), doc)]
        documents[label] = doc
        step = "?" if item.global_step is None else item.global_step
        print(f"[{label}] {item.path}: {cfg.backbone} stride {cfg.stride}, roi_op={cfg.roi_op}, "
              f"step {step}; {len(evaluation.per_image)} images, {len(evaluation.results)} detections")
    print()
    print(format_table(labels, [e.metrics for e in evaluations], per_class=per_class))
    print()
    if len(loaded) > 1:
        files.append((COMPARISON, comparison_document(labels, documents)))
    write_results(output, files)
    if len(loaded) > 1:
        print(f"wrote {output}/<label>/{METRICS}, {DETECTIONS} and {os.path.join(output, COMPARISON)}")
    else:
        print(f"wrote {os.path.join(output, METRICS)} and {os.path.join(output, DETECTIONS)}")
    return documents


def comparison_document(labels: Sequence[str], documents: dict[str, Any]) -> dict[str, Any]:
    """``{"reference": first label, "checkpoints": {label: doc}, "deltas": {label: {iou: {stat: delta}}}}``."""
    first = documents[labels[0]]
    deltas: dict[str, Any] = {}
    for label in labels[1:]:
        doc = documents[label]
        deltas[label] = {
            iou: {name: _delta(doc[iou].get(name), first[iou].get(name)) for name in first[iou]}
            for iou in ("bbox", "segm")
            if iou in doc and iou in first
        }
    return {"reference": labels[0], "checkpoints": documents, "deltas": deltas}


def _delta(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or math.isnan(value) or math.isnan(reference):
        return None
    return value - reference
