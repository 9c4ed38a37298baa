"""COCO evaluation: model outputs -> COCO results -> pycocotools COCOeval -> numbers.

The contract with the rest of the project:

- A detector returns, per image, ``{"boxes": Tensor[K, 4] (x1, y1, x2, y2) in original
  image pixels, "labels": Int64Tensor[K] in [1, num_classes), "scores": Tensor[K]}`` and,
  for Mask R-CNN, ``"masks": Tensor[K, 1, H, W]`` of probabilities (torchvision's I/O).
- `to_coco_results` turns that into the standard COCO *results* format: one dict per
  detection with the dataset's **original** ``image_id`` and ``category_id`` (label ``i``
  maps to ``category_ids[i - 1]``, the datamodule's table), ``bbox`` as ``[x, y, w, h]``
  and, with masks, ``segmentation`` as compressed RLE (threshold 0.5). That is the file
  the COCO server and every COCO tool read, so ``detections.json`` written from these
  dicts can be re-scored by anyone with pycocotools.
- `evaluate_coco` runs pycocotools' own `COCOeval` (never a re-implementation) restricted
  to the images that were actually evaluated (so ``limit_val_batches`` or a shard gives
  the AP of those images rather than counting the others as misses), and returns the
  twelve summary numbers plus per-class AP, and keeps the `COCOeval` object
  (``CocoEvalResult.evaluator``: its ``eval["precision"]`` (T, R, K, A, M) and
  ``eval["recall"]`` (T, K, A, M) arrays, ``params`` and per-image ``evalImgs``) for the error
  analysis (`detector.evaluation.error_analysis`), which reads those arrays and reruns
  COCOeval with other parameters instead of matching anything itself.

Speed: at COCO val size (5,000 images x 100 detections) scoring costs what pycocotools alone
costs (benchmarks/eval.py): the per-class AP is read from the same COCOeval's ``precision`` array
(no rerun), and loading, ``loadRes`` and COCOeval run with Python's cyclic garbage collector paused
(`gc_paused`).

AP values are fractions in [0, 1] as pycocotools computes them. pycocotools reports -1
where a number is undefined (e.g. APs when the images have no small object); that
becomes ``nan`` here and ``null`` in JSON.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import io
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Names of `COCOeval.stats`, in pycocotools' order.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = ("bbox", "segm")


@dataclass
class CocoEvalResult:
    """The outcome of one COCOeval run (one IoU type).

    stats: the twelve `STAT_NAMES` numbers (nan where pycocotools says -1).
    per_class: category name -> AP at IoU .50:.95 over all areas, 100 detections
        (nan for a category with no ground truth in the evaluated images).
    summary: the text pycocotools' `summarize()` printed.
    evaluator: the `COCOeval` after ``evaluate()`` and ``accumulate()`` (default parameters,
        restricted to the evaluated images), or None when no image was evaluated. With no
        detection at all it was run on an empty result set, so its arrays are defined (precision
        0 where there is ground truth) although `stats` keep their no-detection values. It
        holds per-image matches (memory grows with images x classes): drop it
        (``result.evaluator = None``) once the analysis is done.
    """

    iou_type: str
    stats: dict[str, float]
    per_class: dict[str, float] = field(default_factory=dict)
    summary: str = ""
    evaluator: COCOeval | None = field(default=None, repr=False, compare=False)

    @property
    def precision(self) -> np.ndarray | None:
        """COCOeval's ``eval["precision"]``, (T iou thresholds, R recall points, K classes, A areas, M max-dets)."""
        return None if self.evaluator is None else self.evaluator.eval["precision"]

    @property
    def recall(self) -> np.ndarray | None:
        """COCOeval's ``eval["recall"]``, (T, K, A, M)."""
        return None if self.evaluator is None else self.evaluator.eval["recall"]


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block, back on after (if it was on).

    Why: pycocotools builds millions of small dicts, lists and arrays (the results, ``_gts`` /
    ``_dts``, one ``evalImgs`` dict per image, category and area range) and makes no reference
    cycles. The collector still runs every few hundred allocations, and each full collection
    walks every live object (the 500,000 detections, the ground truth, ``evalImgs``): about 12%
    of COCOeval's time at COCO val size. Reference counting frees everything as before; garbage in
    cycles (none made here) waits for the first collection after the block. The switch is
    process-wide: other threads run without the collector meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_coco(annotation_file: str) -> COCO:
    """`pycocotools.coco.COCO(annotation_file)` without its chatter on stdout."""
    with contextlib.redirect_stdout(io.StringIO()), gc_paused():
        return COCO(annotation_file)


def to_coco_results(
    image_id: int,
    output: Mapping[str, torch.Tensor],
    category_ids: Sequence[int],
    masks: bool = False,
) -> list[dict[str, Any]]:
    """One image's detector output -> a list of COCO result dicts (see the module doc).

    Raises ValueError when a label has no category (label 0 is background, and labels
    past ``len(category_ids)`` mean the model was built for more classes than the data).
    """
    boxes = output["boxes"].detach().float().cpu()
    labels = output["labels"].detach().cpu().tolist()
    scores = output["scores"].detach().float().cpu().tolist()
    if not labels:
        return []
    bad = [lab for lab in labels if not 1 <= lab <= len(category_ids)]
    if bad:
        raise ValueError(
            f"detector label(s) {sorted(set(bad))} have no category: labels must lie in "
            f"[1, {len(category_ids)}] for a dataset with {len(category_ids)} categories "
            "(does the model's num_classes match the data's?)"
        )
    xywh = boxes.clone()
    xywh[:, 2:] -= xywh[:, :2]  # (x1, y1, x2, y2) -> (x, y, w, h)
    results = [
        {"image_id": int(image_id), "category_id": int(category_ids[lab - 1]), "bbox": box, "score": score}
        for lab, box, score in zip(labels, xywh.tolist(), scores)
    ]
    if masks:
        if "masks" not in output:
            raise ValueError("masks=True but the detector output has no 'masks' (build the model with mask=True)")
        binary = (output["masks"].detach().cpu()[:, 0] > 0.5).numpy()  # (K, 1, H, W) -> (K, H, W)
        # pycocotools wants Fortran order (H, W, K) uint8.
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0).astype(np.uint8)))
        for result, rle in zip(results, rles):
            rle["counts"] = rle["counts"].decode("ascii")  # bytes -> str, for JSON
            result["segmentation"] = rle
    return results


def evaluate_coco(
    coco_gt: COCO | str,
    results: Sequence[Mapping[str, Any]],
    image_ids: Iterable[int] | None = None,
    iou_types: Sequence[str] = ("bbox",),
) -> dict[str, CocoEvalResult]:
    """Score `results` against `coco_gt` with pycocotools' COCOeval, per IoU type.

    image_ids: the images that were evaluated (all of the annotation file if None). Images
        listed here with no detection count as misses, as they should.
    Returns ``{iou_type: CocoEvalResult}``. `results` is not modified (COCO.loadRes
    writes into the dicts it gets, so it gets copies).
    """
    gt = load_coco(coco_gt) if isinstance(coco_gt, str) else coco_gt
    for iou_type in iou_types:
        if iou_type not in IOU_TYPES:
            raise ValueError(f"iou_type {iou_type!r} is not one of {IOU_TYPES}")
    ids = sorted(gt.getImgIds()) if image_ids is None else sorted({int(i) for i in image_ids})
    unknown = sorted(set(ids) - set(gt.getImgIds()))
    if unknown:
        raise ValueError(
            f"image ids {unknown[:10]} are not in the annotation file (it has {len(gt.getImgIds())} images): "
            "the detections and the annotation file come from different datasets"
        )
    return {iou_type: _evaluate_one(gt, results, ids, iou_type) for iou_type in iou_types}


def _evaluate_one(gt: COCO, results: Sequence[Mapping[str, Any]], ids: list[int], iou_type: str) -> CocoEvalResult:
    names = category_labels(gt)
    dets = [dict(r) for r in results]
    if iou_type == "segm":
        missing = sum("segmentation" not in d for d in dets)
        if missing:
            raise ValueError(f"{missing} detection(s) have no 'segmentation': segm evaluation needs a mask model")
        for d in dets:
            d.pop("bbox", None)  # so loadRes takes the mask area, not the box area (as detectron2 does)
            d["segmentation"] = copy.copy(d["segmentation"])
    if not ids:
        return CocoEvalResult(iou_type, {name: math.nan for name in STAT_NAMES}, dict.fromkeys(names.values(), math.nan),
                              "", None)
    if dets:
        with contextlib.redirect_stdout(io.StringIO()), gc_paused():
            coco_dt = gt.loadRes(dets)
    else:
        # pycocotools cannot load an empty result list. COCOeval on an empty result object scores
        # 0 where there is ground truth and -1 (nan here) where there is none, as with detections.
        coco_dt = empty_results(gt)
    evaluator = _run_cocoeval(gt, coco_dt, ids, iou_type)
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary), gc_paused():
        evaluator.summarize()
    stats = {name: _nan_if_undefined(v) for name, v in zip(STAT_NAMES, evaluator.stats.tolist())}
    # precision: (T iou thresholds, R recall points, K classes, A areas, M max-dets);
    # area index 0 = all, max-dets index -1 = 100, as in the "AP" summary number.
    precision = evaluator.eval["precision"]
    per_class = {}
    for k, cat_id in enumerate(evaluator.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[names[cat_id]] = float(p.mean()) if p.size else math.nan
    return CocoEvalResult(iou_type, stats, per_class, summary.getvalue(), evaluator)


def category_labels(gt: COCO) -> dict[int, str]:
    """``{category id: label}`` for per-class results: the category's name, or ``"name (id N)"``
    for a name that two categories share, so neither overwrites the other's AP (categories
    ``{1: car, 2: car, 3: bus}`` -> ``{1: "car (id 1)", 2: "car (id 2)", 3: "bus"}``).
    """
    names = {cat_id: str(cat["name"]) for cat_id, cat in sorted(gt.cats.items())}
    counts = Counter(names.values())
    return {cat_id: (f"{name} (id {cat_id})" if counts[name] > 1 else name) for cat_id, name in names.items()}


def empty_results(gt: COCO) -> COCO:
    """A COCO results object with no detection, for `gt`'s images and categories
    (``COCO.loadRes`` refuses an empty list)."""
    coco_dt = COCO()
    coco_dt.dataset = {"images": list(gt.dataset.get("images", [])),
                       "categories": copy.deepcopy(gt.dataset.get("categories", [])), "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt.createIndex()
    return coco_dt


def _run_cocoeval(gt: COCO, coco_dt: COCO, ids: list[int], iou_type: str) -> COCOeval:
    """COCOeval with its default parameters on `ids`, after evaluate() and accumulate() (quietly)."""
    with contextlib.redirect_stdout(io.StringIO()), gc_paused():
        evaluator = COCOeval(gt, coco_dt, iouType=iou_type)
        evaluator.params.imgIds = ids
        evaluator.evaluate()
        evaluator.accumulate()
    return evaluator


def _nan_if_undefined(value: float) -> float:
    return math.nan if value < 0 else float(value)
