"""evaluate.py's work once the checkpoints and the data have passed their checks.

For each checkpoint: `detect` over the validation loader (one device, plain PyTorch, see
`detector.evaluation.inference`; under DDP each rank its shard, gathered on rank 0), then
COCOeval (`score_detections`, on rank 0). Then the table is printed (side by side,
deltas against the first checkpoint) and the files are written:

- one checkpoint: ``OUTPUT/metrics.json`` and ``OUTPUT/detections.json``;
- several: ``OUTPUT/<label>/metrics.json`` and ``OUTPUT/<label>/detections.json`` per
  checkpoint (labels from `unique_labels`) and ``OUTPUT/comparison.json`` with every
  checkpoint's numbers and their deltas against the first.

With ``analysis`` (the default) each checkpoint's COCOeval is also analysed
(`detector.evaluation.error_analysis`: AP at each IoU threshold, per-class AP / AR and PR
curves, a confusion matrix at IoU .5, the COCO error breakdown) right after it is scored, and
``analysis.json`` plus ``ap_vs_iou.png``, ``<iou type>_pr_curves.png``,
``<iou type>_confusion.png`` and ``<iou type>_breakdown.png`` go beside its metrics.json;
side by side, ``OUTPUT/ap_vs_iou.png`` draws one curve per checkpoint. The AP-vs-IoU rows and
the breakdown numbers are printed under the table. metrics.json, detections.json and
comparison.json are the same with or without it.

The files are written after every checkpoint is evaluated, metrics.json after its
detections.json (`detector.evaluation.output.write_results`, which raises `OutputError`
naming the file when the disk is full or read-only). The folder was checked before the
work (`detector.evaluation.output.check_output`).
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from detector.checkpointing import LoadedDetector
from detector.evaluation.coco_eval import CocoEvalResult, evaluate_coco, load_coco
from detector.evaluation.distributed import flatten, gather_per_image
from detector.evaluation.error_analysis import analyze
from detector.evaluation.inference import detect
from detector.evaluation.output import (
    ANALYSIS,
    AP_VS_IOU,
    COMPARISON,
    DETECTIONS,
    METRICS,
    OutputError,
    analysis_plot,
    write_results,
)
from detector.evaluation.report import (
    analysis_document,
    ap_vs_iou_series,
    format_ap_vs_iou,
    format_breakdown,
    format_table,
    metrics_document,
    unique_labels,
)


@dataclass
class Evaluation:
    """One checkpoint scored: COCO results per image id and the COCOeval outcome per IoU type."""

    per_image: dict[int, list[dict[str, Any]]]
    metrics: dict[str, CocoEvalResult]
    analysis: dict[str, Any] | None = None  # {iou type: error_analysis.analyze(...)}
    analysis_seconds: float = 0.0

    def analyze(self, score_threshold: float = 0.5) -> None:
        """Fill `analysis` from each IoU type's COCOeval, then drop the COCOeval objects (their
        per-image matches are the big part of an evaluation's memory)."""
        start = time.perf_counter()
        self.analysis = {t: analyze(r, score_threshold) for t, r in self.metrics.items() if r.evaluator is not None}
        self.analysis_seconds = time.perf_counter() - start
        for result in self.metrics.values():
            result.evaluator = None

    @property
    def results(self) -> list[dict[str, Any]]:
        return flatten(self.per_image)


def evaluate_detector(item: LoadedDetector, datamodule: Any, device: torch.device | str = "cpu",
                      autocast_dtype: torch.dtype | None = None, progress: bool = True) -> Evaluation | None:
    """Score `item` on `datamodule`'s validation split (set up by the caller) with COCOeval.

    Under DDP (an initialized process group) each rank detects on its shard (`shard_loader`),
    rank 0 gathers every image once (`gather_per_image`) and scores; the other ranks return None.
    """
    rank, world = _rank_and_world()
    loader = shard_loader(datamodule.val_dataloader(), rank, world)
    masks = item.config.mask
    per_image = detect(item.model, loader, item.category_ids or [], masks=masks, device=device,
                       autocast_dtype=autocast_dtype, progress=progress and rank == 0, total=len(loader),
                       description=os.path.basename(item.path))
    if world > 1:
        per_image = gather_per_image(per_image)
        if rank != 0:
            return None
    iou_types = ("bbox", "segm") if masks else ("bbox",)
    return score_detections(per_image, str(datamodule.val_annotation_file), iou_types)


def shard_loader(loader: DataLoader, rank: int, world_size: int) -> DataLoader:
    """`loader` over this rank's shard (`DistributedSampler`, in order, padded by repeating images,
    which `gather_per_image` drops again); `loader` itself for one process."""
    if world_size <= 1:
        return loader
    sampler = DistributedSampler(loader.dataset, num_replicas=world_size, rank=rank, shuffle=False)
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def score_detections(per_image: dict[int, list[dict[str, Any]]], annotation_file: str,
                     iou_types: Sequence[str] = ("bbox",)) -> Evaluation:
    """COCOeval of ``{image_id: COCO results}`` against `annotation_file`: the scoring half of
    `evaluate_detector` (benchmarks/eval.py times exactly this against pycocotools alone)."""
    gt = load_coco(annotation_file)
    return Evaluation(per_image, evaluate_coco(gt, flatten(per_image), per_image.keys(), iou_types))


def evaluate_checkpoints(
    loaded: Sequence[LoadedDetector],
    datamodule: Any,
    output: str,
    per_class: bool = True,
    device: torch.device | str = "cpu",
    autocast_dtype: torch.dtype | None = None,
    progress: bool = True,
    analysis: bool = True,
    confusion_score_threshold: float = 0.5,
) -> dict[str, Any]:
    """Evaluate `loaded` on `datamodule`'s validation split; print and write the files.

    analysis: also run the error analysis and write analysis.json and its plots (module doc).
    confusion_score_threshold: the detections the confusion matrix counts (score >= it).
    Returns ``{label: metrics document}``.
    """
    evaluations = []
    for item in loaded:
        evaluation = evaluate_detector(item, datamodule, device, autocast_dtype, progress)
        if evaluation is None:  # a DDP rank other than 0: it detected its shard, rank 0 does the rest
            continue
        if analysis:
            try:
                evaluation.analyze(confusion_score_threshold)
            except Exception as err:  # noqa: BLE001 (the scored metrics must survive a failing analysis)
                print(f"warning: the error analysis of {item.path} failed ({type(err).__name__}: {err}); its "
                      f"{METRICS} and {DETECTIONS} are written without {ANALYSIS}", file=sys.stderr)
                evaluation.analysis = None
        for result in evaluation.metrics.values():
            result.evaluator = None  # the per-image matches are the big part of an evaluation's memory
        evaluations.append(evaluation)
    if len(evaluations) < len(loaded):
        return {}
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
        if evaluation.analysis is not None:
            files.append((os.path.join(folder, ANALYSIS),
                          analysis_document(evaluation.analysis, checkpoint=os.path.abspath(item.path),
                                            global_step=item.global_step, seconds=evaluation.analysis_seconds)))
        documents[label] = doc
        step = "?" if item.global_step is None else item.global_step
        print(f"[{label}] {item.path}: {cfg.backbone} stride {cfg.stride}, roi_op={cfg.roi_op}, "
              f"step {step}; {len(evaluation.per_image)} images, {len(evaluation.results)} detections")
    print()
    print(format_table(labels, [e.metrics for e in evaluations], per_class=per_class))
    print()
    analysed = [(label, e) for label, e in zip(labels, evaluations) if e.analysis]
    if analysed:
        print(format_ap_vs_iou([label for label, _ in analysed], [e.analysis for _, e in analysed]))
        print()
        print(format_breakdown([label for label, _ in analysed], [e.analysis for _, e in analysed]))
        print()
    if len(loaded) > 1:
        files.append((COMPARISON, comparison_document(labels, documents)))
    write_results(output, files)
    if analysed:
        start = time.perf_counter()
        write_analysis_plots(output, labels if len(loaded) > 1 else [""], evaluations)
        seconds = ", ".join(f"{label} {e.analysis_seconds:.1f} s" for label, e in analysed)
        print(f"error analysis took {seconds}; its plots {time.perf_counter() - start:.1f} s")
    if len(loaded) > 1:
        print(f"wrote {output}/<label>/{METRICS}, {DETECTIONS} and {os.path.join(output, COMPARISON)}"
              + (f"; {ANALYSIS} and plots per checkpoint, {os.path.join(output, AP_VS_IOU)}" if analysed else ""))
    else:
        print(f"wrote {os.path.join(output, METRICS)} and {os.path.join(output, DETECTIONS)}"
              + (f"; {ANALYSIS} and plots in {output}" if analysed else ""))
    return documents


def write_analysis_plots(output: str, folders: Sequence[str], evaluations: Sequence[Evaluation]) -> None:
    """The PNGs of the module doc (OutputError names a file that could not be written)."""
    from detector.evaluation.plots import (
        plot_ap_vs_iou,
        plot_breakdown,
        plot_confusion,
        plot_pr_curves,
        write_png,
    )

    figures = []
    for folder, evaluation in zip(folders, evaluations):
        if not evaluation.analysis:
            continue
        series = ap_vs_iou_series({"": evaluation.analysis})
        figures.append((os.path.join(folder, AP_VS_IOU), plot_ap_vs_iou(series, title=f"{folder} AP at each IoU threshold".strip())))
        for iou_type, analysis in evaluation.analysis.items():
            figures.append((os.path.join(folder, analysis_plot(iou_type, "pr_curves")), plot_pr_curves(analysis)))
            figures.append((os.path.join(folder, analysis_plot(iou_type, "confusion")), plot_confusion(analysis)))
            if "breakdown" in analysis:
                figures.append((os.path.join(folder, analysis_plot(iou_type, "breakdown")),
                                plot_breakdown(analysis, title=f"{folder} {iou_type} error breakdown".strip())))
    if len(folders) > 1:
        series = ap_vs_iou_series({label: e.analysis for label, e in zip(folders, evaluations) if e.analysis})
        figures.append((AP_VS_IOU, plot_ap_vs_iou(series, title="AP at each IoU threshold, side by side")))
    for name, figure in figures:
        try:
            write_png(figure, os.path.join(output, name))
        except OSError as err:
            raise OutputError(err.errno, err.strerror or str(err)) from err


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
