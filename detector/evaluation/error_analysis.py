"""Where the AP goes: error analysis read from pycocotools' COCOeval, never re-matched by hand.

Input: a `CocoEvalResult` whose ``evaluator`` is the `COCOeval` of `evaluate_coco` (after
``evaluate()`` and ``accumulate()``, default parameters). Every number below is either read
from its arrays or from COCOeval runs with other parameters; what is this module's own rule
is said where it is used.

- **AP at each IoU threshold** (`ap_per_iou`): for each of COCOeval's thresholds 0.50, 0.55,
  ..., 0.95, the mean of ``eval["precision"][t, :, :, area all, maxDets 100]`` over recall
  thresholds and classes, leaving out the -1 entries (classes without ground truth), exactly as
  ``summarize()`` computes AP50 and AP75. Their mean is COCO's AP.
- **Per class** (`per_class_table`, `pr_curves`): AP, AP50, AP75 from the same array, AR100 =
  mean of ``eval["recall"][:, k, area all, maxDets 100]``; precision-recall curves are
  ``precision[t, :, k]`` over COCOeval's 101 recall thresholds (already the interpolated,
  monotone envelope COCO integrates). ``num_gt`` = ground truths COCOeval counts (not crowd).
- **Confusion matrix at IoU 0.5** (`confusion_matrix`), rows = ground-truth class, columns =
  detected class, the last row/column = background. Which detections: those COCOeval scored
  (its top 100 per image and class) with ``score >= score_threshold`` and not matched to a
  crowd region. *COCOeval's part*: a same-class match is COCOeval's own match at IoU 0.5
  (``evalImgs[...]["dtMatches"]``; its greedy order is by descending score, so dropping the
  detections below the score threshold afterwards equals matching without them) -> the
  diagonal. *Our part* (cross-class): in each image, the remaining detections in descending
  score order each take the still-unmatched ground truth of another class with the highest IoU
  if that IoU is >= 0.5 (IoU from ``pycocotools.mask.iou``, boxes or masks as the IoU type) ->
  cell (its class, detected class). Detections still unmatched -> (background, detected class);
  ground truths still unmatched -> (class, background). Cell (background, background) is 0.
- **COCO error breakdown** (`error_breakdown`), the method of the COCO detection analysis tool
  (cocoapi's ``CocoEval.analyze``, after Hoiem et al., "Diagnosing Error in Object
  Detectors"): PR curves that get more permissive one error type at a time, each the mean
  over classes of COCOeval precision at area all, 100 detections:
  C75 / C50 = precision at IoU .75 / .50 (the main run's arrays: the same matching a rerun
  would do); Loc = COCOeval rerun at IoU .1 (localization errors forgiven); Sim = per class,
  COCOeval at IoU .1 with ``useCats=0`` on that class's detections against the ground truth of
  its supercategory, the other classes' objects marked *ignore* (a detection on them is
  neither a true nor a false positive and they are not misses), i.e. confusions within the
  supercategory forgiven; Oth = the same against all classes' ground truth (every class
  confusion forgiven); BG = 1 where Oth's precision is > 0 (background false positives
  removed); FN = 1 (misses removed). The number of each type is the area under its curve
  (mean over recall thresholds), so C75 == AP75 and C50 == AP50. Deviations from the Matlab
  tool, documented: (1) the overall curve averages the classes *with* ground truth in the
  evaluated images (the tool fills -1 with 0 and averages all classes, which makes its C75
  differ from AP75 when a class has no object); (2) a category whose ``supercategory`` is
  missing or empty is its own supercategory, so its Sim equals its Loc (no area); (3) the
  per-class reruns score only the images holding a detection or a ground truth of that class,
  which gives the same arrays (other images only hold ignored objects) much faster. The
  "ignore" mark is set after COCOeval's ``_prepare`` (which otherwise derives ``ignore`` from
  ``iscrowd`` alone), so the matching itself is COCOeval's.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import CocoEvalResult, gc_paused

#: The error types of the breakdown, from the strictest curve to the most permissive.
BREAKDOWN_TYPES = ("C75", "C50", "Loc", "Sim", "Oth", "BG", "FN")
BACKGROUND = "background"


def _index(values: Sequence[float], value: float, what: str) -> int:
    hits = [i for i, v in enumerate(values) if abs(float(v) - value) < 1e-9]
    if not hits:
        raise ValueError(f"COCOeval was run without {what} {value} (it has {list(values)})")
    return hits[0]


def _area_all(evaluator: COCOeval) -> int:
    return list(evaluator.params.areaRngLbl).index("all")


def _max100(evaluator: COCOeval) -> int:
    return _index(evaluator.params.maxDets, 100, "maxDets")


def _mean_defined(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(values.mean()) if values.size else math.nan


def _precision(evaluator: COCOeval) -> np.ndarray:
    """(T, R, K) precision at area all, 100 detections."""
    return evaluator.eval["precision"][:, :, :, _area_all(evaluator), _max100(evaluator)]


def ap_per_iou(evaluator: COCOeval) -> tuple[list[float], list[float]]:
    """``(iou thresholds, AP at each)``: see the module doc (nan where no class has ground truth)."""
    precision = _precision(evaluator)
    return ([float(t) for t in evaluator.params.iouThrs], [_mean_defined(precision[t]) for t in range(len(precision))])


def _names(evaluator: COCOeval) -> list[str]:
    cats = evaluator.cocoGt.cats
    return [str(cats[c].get("name", c)) if c in cats else str(c) for c in evaluator.params.catIds]


def _num_gt(evaluator: COCOeval) -> list[int]:
    """Ground truths COCOeval counts per class (area all, not ignored), from ``evalImgs``."""
    p = evaluator.params
    n_img, n_area, a = len(p.imgIds), len(p.areaRng), _area_all(evaluator)
    counts = []
    for k in range(len(p.catIds)):
        start = k * n_area * n_img + a * n_img
        counts.append(int(sum(int((~np.asarray(e["gtIgnore"], dtype=bool)).sum())
                              for e in evaluator.evalImgs[start:start + n_img] if e is not None)))
    return counts


def per_class_table(evaluator: COCOeval) -> list[dict[str, Any]]:
    """One row per class: ``category_id, name, num_gt, AP, AP50, AP75, AR100`` (fractions; nan without ground truth)."""
    precision = _precision(evaluator)
    recall = evaluator.eval["recall"][:, :, _area_all(evaluator), _max100(evaluator)]  # (T, K)
    thresholds = evaluator.params.iouThrs
    t50, t75 = _index(thresholds, 0.5, "IoU threshold"), _index(thresholds, 0.75, "IoU threshold")
    rows = []
    for k, (cat_id, name, n) in enumerate(zip(evaluator.params.catIds, _names(evaluator), _num_gt(evaluator))):
        rows.append({"category_id": int(cat_id), "name": name, "num_gt": n,
                     "AP": _mean_defined(precision[:, :, k]), "AP50": _mean_defined(precision[t50, :, k]),
                     "AP75": _mean_defined(precision[t75, :, k]), "AR100": _mean_defined(recall[:, k])})
    return rows


def pr_curves(evaluator: COCOeval) -> dict[str, Any]:
    """Per-class precision at each of COCOeval's recall thresholds: at IoU .50, .75 and the mean
    over .50:.95 (``None`` entries for a class without ground truth)."""
    precision = _precision(evaluator)
    thresholds = evaluator.params.iouThrs
    t50, t75 = _index(thresholds, 0.5, "IoU threshold"), _index(thresholds, 0.75, "IoU threshold")
    classes = {}
    for k, name in enumerate(_names(evaluator)):
        if (precision[:, :, k] <= -1).all():
            classes[name] = {"IoU50": None, "IoU75": None, "IoU50:95": None}
            continue
        classes[name] = {"IoU50": precision[t50, :, k].tolist(), "IoU75": precision[t75, :, k].tolist(),
                         "IoU50:95": precision[:, :, k].mean(axis=0).tolist()}
    return {"recall": [float(r) for r in evaluator.params.recThrs], "classes": classes}


def _geometry(evaluator: COCOeval, coco, ann_ids: Sequence[int]) -> list[Any]:
    anns = coco.loadAnns(list(ann_ids))
    if evaluator.params.iouType == "segm":
        return [coco.annToRLE(a) for a in anns]
    return [a["bbox"] for a in anns]


def check_score_threshold(value: Any, name: str = "score_threshold") -> float:
    """`value` as a float in [0, 1], else ValueError naming `name` (for a command-line flag)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"{name} must be a score in [0, 1] (detections with a score >= it are counted), got {value!r}")
    return number


def confusion_matrix(evaluator: COCOeval, iou_threshold: float = 0.5, score_threshold: float = 0.5) -> dict[str, Any]:
    """The confusion matrix of the module doc: ``{"labels", "matrix" (K+1 x K+1 ints), "rows",
    "columns", "iou_threshold", "score_threshold"}``."""
    score_threshold = check_score_threshold(score_threshold)
    p = evaluator.params
    t = _index(p.iouThrs, iou_threshold, "IoU threshold")
    a, n_area, n_img, n_cat = _area_all(evaluator), len(p.areaRng), len(p.imgIds), len(p.catIds)
    matrix = np.zeros((n_cat + 1, n_cat + 1), dtype=np.int64)
    left_dt: dict[int, list[tuple[float, int, int]]] = defaultdict(list)  # image -> (score, dt id, class index)
    left_gt: dict[int, list[tuple[int, int]]] = defaultdict(list)  # image -> (gt id, class index)
    for k in range(n_cat):
        start = k * n_area * n_img + a * n_img
        for image_id, e in zip(p.imgIds, evaluator.evalImgs[start:start + n_img]):
            if e is None:
                continue
            scores = np.asarray(e["dtScores"], dtype=float)
            matches = np.asarray(e["dtMatches"])[t] if len(scores) else np.zeros(0)
            ignored = np.asarray(e["dtIgnore"], dtype=bool)[t] if len(scores) else np.zeros(0, dtype=bool)
            keep = (scores >= score_threshold) & ~ignored
            hit = keep & (matches > 0)
            matrix[k, k] += int(hit.sum())
            used = {int(g) for g in matches[hit]}
            left_dt[image_id] += [(float(scores[j]), int(e["dtIds"][j]), k) for j in np.flatnonzero(keep & ~hit)]
            left_gt[image_id] += [(int(g), k) for g, ig in zip(e["gtIds"], np.asarray(e["gtIgnore"], dtype=bool))
                                  if not ig and int(g) not in used]
    for image_id in set(left_dt) | set(left_gt):
        dts = sorted(left_dt.get(image_id, []), key=lambda d: -d[0])
        gts = left_gt.get(image_id, [])
        taken = np.zeros(len(gts), dtype=bool)
        if dts and gts:
            ious = np.asarray(mask_utils.iou(_geometry(evaluator, evaluator.cocoDt, [d[1] for d in dts]),
                                             _geometry(evaluator, evaluator.cocoGt, [g[0] for g in gts]),
                                             [0] * len(gts)), dtype=float).reshape(len(dts), len(gts))
        else:
            ious = np.zeros((len(dts), len(gts)))
        for row, (_, _, k) in zip(ious, dts):
            candidates = np.where(~taken & (row >= iou_threshold), row, -1.0)
            g = int(candidates.argmax()) if len(gts) else -1
            if g >= 0 and candidates[g] >= iou_threshold:
                taken[g] = True
                matrix[gts[g][1], k] += 1
            else:
                matrix[n_cat, k] += 1
        for g in np.flatnonzero(~taken):
            matrix[gts[g][1], n_cat] += 1
    return {"iou_threshold": float(iou_threshold), "score_threshold": float(score_threshold),
            "rows": "ground truth", "columns": "detection", "labels": [*_names(evaluator), BACKGROUND],
            "matrix": matrix.tolist()}


class _Rerun(COCOeval):
    """COCOeval with the analysis tool's parameters: one IoU threshold, area all, 100 detections.

    coco_gt, coco_dt: other ground truth / detections than `base`'s (subsets, see `_subset`);
    counted_category: mark every other category's ground truth *ignore* (after COCOeval's
        ``_prepare``, which sets ``ignore`` from ``iscrowd`` alone);
    ious: COCOeval's ``ious`` of the main run, reused where the key matches (same images,
        categories and top-100 detections), so boxes and masks are not intersected twice.
    POOL: without categories, pool each image's objects once (see `_prepare`; False: COCOeval's
        own per-call pooling, for the test that both give the same arrays).
    """

    POOL = True

    def __init__(self, base: COCOeval, iou_threshold: float, image_ids: Sequence[int], category_ids: Sequence[int],
                 use_cats: bool, coco_gt: COCO | None = None, coco_dt: COCO | None = None,
                 counted_category: int | None = None, ious: Mapping | None = None):
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(coco_gt or base.cocoGt, coco_dt or base.cocoDt, iouType=base.params.iouType)
        p = self.params
        a = _area_all(base)
        p.imgIds, p.catIds = list(image_ids), list(category_ids)
        p.iouThrs = np.array([iou_threshold])
        p.recThrs = np.array(base.params.recThrs)
        p.maxDets, p.areaRng, p.areaRngLbl = [100], [list(base.params.areaRng[a])], ["all"]
        p.useCats = int(use_cats)
        self._counted, self._cached = counted_category, ious

    def _prepare(self):
        super()._prepare()
        if self._counted is not None:
            for gts in self._gts.values():
                for g in gts:
                    if g["category_id"] != self._counted:
                        g["ignore"] = 1
        if self.POOL and not self.params.useCats:
            # COCOeval without categories pools each image's objects over p.catIds in every
            # computeIoU / evaluateImg call (images x categories lookups, the bulk of a per-class
            # rerun); pooled once here, in the same order, under the one key it then asks for (-1,
            # as accumulate() also renames the categories): the same lists, so the same arrays.
            self._gts = _pooled(self._gts, self.params.catIds)
            self._dts = _pooled(self._dts, self.params.catIds)
            self.params.catIds = [-1]

    def computeIoU(self, imgId, catId):
        if self._cached is not None and (imgId, catId) in self._cached:
            return self._cached[imgId, catId]
        return super().computeIoU(imgId, catId)

    def run(self) -> np.ndarray:
        """(R, K) precision after evaluate() and accumulate()."""
        with contextlib.redirect_stdout(io.StringIO()), gc_paused():
            self.evaluate()
            self.accumulate()
        return self.eval["precision"][0, :, :, 0, 0]


def _pooled(table: Mapping[tuple[int, int], list], category_ids: Sequence[int]) -> defaultdict:
    """``{(image, -1): [objects of category_ids[0], then category_ids[1], ...]}`` from COCOeval's
    ``{(image, category): [objects]}`` (what its ``useCats=0`` branch concatenates per call)."""
    order = {c: i for i, c in enumerate(category_ids)}
    pooled: defaultdict = defaultdict(list)
    for _, image_id, objects in sorted(((order[c], i, objs) for (i, c), objs in table.items() if c in order and objs),
                                       key=lambda item: item[0]):
        pooled[image_id, -1].extend(objects)
    return pooled


def _supercategory(cat: Mapping[str, Any], cat_id: int) -> Any:
    name = cat.get("supercategory")
    return name if isinstance(name, str) and name else ("__own__", cat_id)


def _subset(coco: COCO, category_ids: set[int]) -> COCO:
    """A COCO object holding only `coco`'s annotations of `category_ids` (the same dicts), as the
    analysis tool builds its per-category ground truth and detections."""
    sub = COCO()
    sub.dataset = {"images": coco.dataset.get("images", []), "categories": coco.dataset.get("categories", []),
                   "annotations": [a for a in coco.dataset.get("annotations", []) if a["category_id"] in category_ids]}
    with contextlib.redirect_stdout(io.StringIO()):
        sub.createIndex()
    return sub


def error_breakdown(evaluator: COCOeval) -> dict[str, Any]:
    """The COCO error breakdown of the module doc.

    Returns ``{"types", "recall" (R), "precision" {type: overall curve (R)}, "AP" {type: area},
    "per_class" {name: {type: area} or None}, "classes_averaged"}``.
    """
    p = evaluator.params
    cat_ids = list(p.catIds)
    precision = _precision(evaluator)
    t50, t75 = _index(p.iouThrs, 0.5, "IoU threshold"), _index(p.iouThrs, 0.75, "IoU threshold")
    n_rec, n_cat = len(p.recThrs), len(cat_ids)
    ps = np.zeros((len(BREAKDOWN_TYPES), n_rec, n_cat))
    ps[0], ps[1] = precision[t75], precision[t50]
    ious = evaluator.ious if list(p.maxDets)[-1] == 100 else None
    ps[2] = _Rerun(evaluator, 0.1, p.imgIds, cat_ids, use_cats=True, ious=ious).run()
    has_gt = ~(precision[t50] <= -1).all(axis=0)  # (K,)
    gt, dt = evaluator.cocoGt, evaluator.cocoDt
    evaluated = set(p.imgIds)
    supers = {c: _supercategory(gt.cats.get(c, {}), c) for c in cat_ids}
    super_gt: dict[Any, COCO] = {}
    for k, cat_id in enumerate(cat_ids):
        if not has_gt[k]:
            continue
        images = sorted(evaluated & (set(gt.catToImgs.get(cat_id, [])) | set(dt.catToImgs.get(cat_id, []))))
        similar = [c for c in cat_ids if supers[c] == supers[cat_id]]
        if supers[cat_id] not in super_gt:
            super_gt[supers[cat_id]] = _subset(gt, set(similar))
        own_dt = _subset(dt, {cat_id})
        for row, allowed, coco_gt in ((3, similar, super_gt[supers[cat_id]]), (4, cat_ids, gt)):
            ps[row, :, k] = _Rerun(evaluator, 0.1, images, allowed, use_cats=False, coco_gt=coco_gt, coco_dt=own_dt,
                                   counted_category=cat_id).run()[:, 0]
    ps[ps <= -1] = 0.0
    ps[5] = ps[4] > 0
    ps[6] = 1.0
    names = _names(evaluator)
    overall = ps[:, :, has_gt].mean(axis=2) if has_gt.any() else np.full((len(BREAKDOWN_TYPES), n_rec), math.nan)
    per_class = {name: ({t: float(ps[i, :, k].mean()) for i, t in enumerate(BREAKDOWN_TYPES)} if has_gt[k] else None)
                 for k, name in enumerate(names)}
    return {"types": list(BREAKDOWN_TYPES), "recall": [float(r) for r in p.recThrs],
            "precision": {t: overall[i].tolist() for i, t in enumerate(BREAKDOWN_TYPES)},
            "AP": {t: float(overall[i].mean()) for i, t in enumerate(BREAKDOWN_TYPES)},
            "per_class": per_class, "classes_averaged": int(has_gt.sum())}


def localization_error(breakdown: Mapping[str, Any]) -> tuple[float, float]:
    """``(Loc - C75, (Loc - C75) / (1 - C75))`` from a breakdown's ``AP``: the AP gained when
    boxes need only IoU .1 instead of .75, and that gain as a share of everything AP75 misses
    (1 - C75: the area above the C75 curve). Quantization of the ROI grid misplaces boxes, so
    it shows here first. nan when undefined (no ground truth, or C75 == 1)."""
    ap = breakdown.get("AP") or {}
    c75, loc = ap.get("C75"), ap.get("Loc")
    if c75 is None or loc is None or not (math.isfinite(c75) and math.isfinite(loc)):
        return math.nan, math.nan
    gap = loc - c75
    return gap, (gap / (1.0 - c75) if c75 < 1.0 else math.nan)


def analyze(result: CocoEvalResult, score_threshold: float = 0.5, breakdown: bool = True) -> dict[str, Any]:
    """Everything above for one IoU type, as one JSON-ready dict (nan stays nan; `detector.io`
    writes it as null). Raises ValueError when `result` has no evaluator (no image evaluated)."""
    evaluator = result.evaluator
    if evaluator is None or not evaluator.eval:
        raise ValueError(f"{result.iou_type}: no COCOeval to analyse (no image was evaluated)")
    thresholds, aps = ap_per_iou(evaluator)
    doc: dict[str, Any] = {
        "iou_type": result.iou_type,
        "ap_per_iou": {"iou_thresholds": thresholds, "AP": aps},
        "per_class": per_class_table(evaluator),
        "pr_curves": pr_curves(evaluator),
        "confusion_matrix": confusion_matrix(evaluator, 0.5, score_threshold),
    }
    if breakdown:
        doc["breakdown"] = error_breakdown(evaluator)
        gap, share = localization_error(doc["breakdown"])
        doc["breakdown"]["loc_error"], doc["breakdown"]["loc_share"] = gap, share
    return doc
