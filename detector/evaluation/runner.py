"""evaluate.py's work once the checkpoints and the data have passed their checks.

For each checkpoint: `Trainer.validate` (so devices, DDP and precision are Lightning's),
whose `DetectorModule.on_validation_epoch_end` gathers the detections from all ranks and
runs COCOeval on rank 0. Then rank 0 prints the table (side by side, deltas against the
first checkpoint) and writes the files:

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

import pytorch_lightning as pl

from detector.evaluation.checkpoints import LoadedDetector
from detector.evaluation.output import COMPARISON, DETECTIONS, METRICS, write_results
from detector.evaluation.report import format_table, metrics_document, unique_labels


def evaluate_checkpoints(
    loaded: Sequence[LoadedDetector],
    datamodule: pl.LightningDataModule,
    trainer: pl.Trainer,
    output: str,
    per_class: bool = True,
) -> dict[str, Any]:
    """Evaluate `loaded` on `datamodule`'s validation split; print and write (rank 0).

    Returns ``{label: metrics document}`` on rank 0, ``{}`` on the other ranks.
    """
    evaluations = []
    for item in loaded:
        trainer.validate(item.module, datamodule=datamodule, verbose=False)
        evaluations.append(item.module.last_evaluation)
    if not trainer.is_global_zero:
        return {}
    labels = unique_labels([item.path for item in loaded]) if len(loaded) > 1 else ["model"]
    documents: dict[str, Any] = {}
    files: list[tuple[str, Any]] = []  # (path relative to output, JSON object), in writing order
    for label, item, evaluation in zip(labels, loaded, evaluations):
        hp = item.hparams
        doc = metrics_document(
            evaluation.metrics,
            checkpoint=os.path.abspath(item.path),
            num_images=len(evaluation.per_image),
            num_detections=len(evaluation.results),
            annotation_file=str(getattr(datamodule, "val_annotation_file", "")),
            roi_op=hp["roi_op"],
            model={k: hp.get(k) for k in ("backbone", "stride", "roi_op", "roi_mode", "sampling_ratio", "aligned", "mask")},
            global_step=item.global_step,
            epoch=item.epoch,
        )
        folder = "" if len(loaded) == 1 else label
        files += [(os.path.join(folder, DETECTIONS), evaluation.results), (os.path.join(folder, METRICS), doc)]
        documents[label] = doc
        step = "?" if item.global_step is None else item.global_step
        print(f"[{label}] {item.path}: {hp['backbone']} stride {hp['stride']}, roi_op={hp['roi_op']}, "
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
