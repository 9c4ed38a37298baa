"""What evaluate.py prints and writes: AP tables (side by side, with deltas) and JSON files.

Printed: one column per checkpoint, rows AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100
per IoU type, then per-class AP; from the second column on each value carries its
difference to the first column, which is what an ablation reads (``0.412 (-0.031)``).

Written with `detector.io.write_json` (atomically, so an interrupted evaluation never leaves
a half file in place of an older complete one; non-finite numbers as ``null``):

- ``metrics.json``: ``{"bbox": {"AP": ..., "AP50": ..., ...}, "bbox_per_class": {name: AP},
  ["segm": ..., "segm_per_class": ...], "checkpoint": path, "num_images": N, ...}``;
  undefined numbers (pycocotools' -1) are ``null``;
- ``detections.json``: the standard COCO results list (original image and category ids),
  exactly what was scored, so ``COCOeval`` on it reproduces the numbers;
- ``analysis.json`` (`analysis_document`): ``{"bbox": error_analysis.analyze(...), ["segm": ...],
  "checkpoint": path, "seconds": time the analysis took, "definitions": {...}}``, fractions
  like metrics.json.

Printed under the AP table when the analysis ran: `format_ap_vs_iou` (one row per checkpoint
and IoU type, AP at .50, .55, ..., .95) and `format_breakdown` (the COCO error breakdown's
areas C75 ... FN and the localization error Loc - C75 and its share (Loc - C75) / (1 - C75)).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from detector.evaluation.coco_eval import STAT_NAMES, CocoEvalResult

# The rows evaluate.py prints (the ARs/ARm/ARl numbers are in metrics.json too).
PRINTED_STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")
#: What each part of analysis.json means, written into the file itself.
DEFINITIONS = {
    "ap_per_iou": "COCOeval precision[t, :, :, area all, maxDets 100] averaged over recall thresholds and classes "
                  "with ground truth, per IoU threshold t (as summarize() computes AP50/AP75); their mean is AP",
    "per_class": "AP (.50:.95), AP50, AP75 from COCOeval precision; AR100 from COCOeval recall; num_gt = non-crowd "
                 "ground truths",
    "pr_curves": "COCOeval's interpolated precision at its 101 recall thresholds, per class",
    "confusion_matrix": "rows ground truth, columns detections (score >= score_threshold, COCOeval's top 100 per "
                        "image and class); diagonal = COCOeval's IoU .5 matches; off-diagonal = remaining detections "
                        "greedily (by score) matched to remaining other-class ground truth with IoU >= .5; last "
                        "row/column = background",
    "breakdown": "COCO analysis tool (Hoiem): areas under PR curves C75, C50 (COCOeval at IoU .75/.5), Loc (IoU .1), "
                 "Sim (supercategory confusions forgiven), Oth (all class confusions forgiven), BG (background false "
                 "positives removed), FN (misses removed); loc_error = Loc - C75; loc_share = (Loc - C75) / (1 - C75)",
}


def metrics_document(metrics: Mapping[str, CocoEvalResult], **extra: Any) -> dict[str, Any]:
    """The content of ``metrics.json`` for one checkpoint (nan -> None)."""
    doc: dict[str, Any] = {}
    for iou_type, result in metrics.items():
        doc[iou_type] = {name: _json_number(result.stats[name]) for name in STAT_NAMES}
        doc[f"{iou_type}_per_class"] = {name: _json_number(v) for name, v in result.per_class.items()}
    doc.update(extra)
    return doc


def analysis_document(analysis: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The content of ``analysis.json`` for one checkpoint (see the module doc)."""
    return {**analysis, **extra, "definitions": DEFINITIONS}


def ap_vs_iou_series(analyses: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``{label: {iou type: analysis}}`` -> the line series of `plots.plot_ap_vs_iou` (label
    alone for bbox, ``"<label> segm"`` for masks)."""
    series = []
    for label, analysis in analyses.items():
        for iou_type, a in analysis.items():
            name = label if iou_type == "bbox" and label else f"{label} {iou_type}".strip()
            series.append({"label": name, **a["ap_per_iou"]})
    return series


def format_ap_vs_iou(labels: Sequence[str], analyses: Sequence[Mapping[str, Any]]) -> str:
    """AP at each IoU threshold: a row per checkpoint and IoU type, a column per threshold."""
    rows = []
    thresholds: list[float] = []
    for label, analysis in zip(labels, analyses):
        for iou_type, a in analysis.items():
            thresholds = thresholds or a["ap_per_iou"]["iou_thresholds"]
            rows.append((f"{iou_type} {label}", [_cell(v, None) for v in a["ap_per_iou"]["AP"]]))
    header = ["AP at IoU", *(f"{t:.2f}" for t in thresholds)]
    return _grid(header, rows)


def format_breakdown(labels: Sequence[str], analyses: Sequence[Mapping[str, Any]]) -> str:
    """The COCO error breakdown per checkpoint and IoU type (areas under each PR curve)."""
    rows = []
    types: list[str] = []
    for label, analysis in zip(labels, analyses):
        for iou_type, a in analysis.items():
            b = a.get("breakdown")
            if not b:
                continue
            types = types or list(b["types"])
            rows.append((f"{iou_type} {label}", [_cell(b["AP"].get(t), None) for t in types]
                         + [_cell(b.get("loc_error"), None), _cell(b.get("loc_share"), None)]))
    header = ["error breakdown", *types, "Loc-C75", "loc share"]
    return _grid(header, rows)


def _grid(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    widths = [max(len(header[0]), *(len(name) for name, _ in rows)) if rows else len(header[0])]
    widths += [max(len(header[i + 1]), *(len(c[i]) for _, c in rows)) if rows else len(header[i + 1])
               for i in range(len(header) - 1)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for name, cells in rows:
        lines.append("  ".join([name.ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells, widths[1:])]))
    return "\n".join(lines)


def unique_labels(paths: Sequence[str]) -> list[str]:
    """Short names that tell checkpoints apart: the file stem, then parent folders as needed.

    >>> unique_labels(["runs/a/checkpoints/last.ckpt", "runs/b/checkpoints/last.ckpt"])
    ['a_checkpoints_last', 'b_checkpoints_last']
    """
    parts = [os.path.normpath(os.path.abspath(p)).split(os.sep) for p in paths]
    for p in parts:
        p[-1] = os.path.splitext(p[-1])[0]
    longest = max(len(p) for p in parts)
    for depth in range(1, longest + 1):
        labels = ["_".join(x for x in p[-depth:] if x) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{i + 1}_{os.path.splitext(os.path.basename(p))[0]}" for i, p in enumerate(paths)]


def format_table(
    labels: Sequence[str],
    metrics: Sequence[Mapping[str, CocoEvalResult]],
    per_class: bool = True,
) -> str:
    """A plain-text table: metrics as rows, checkpoints as columns, deltas against the first."""
    iou_types = [t for t in ("bbox", "segm") if all(t in m for m in metrics)]
    rows: list[tuple[str, list[float]]] = []
    for t in iou_types:
        rows += [(f"{t} {name}", [m[t].stats[name] for m in metrics]) for name in PRINTED_STATS]
    if per_class:
        for t in iou_types:
            names = list(metrics[0][t].per_class)
            rows += [(f"{t} AP[{n}]", [m[t].per_class.get(n, math.nan) for m in metrics]) for n in names]
    cells = [[_cell(values[0], None)] + [_cell(v, values[0]) for v in values[1:]] for _, values in rows]
    header = ["metric", *labels]
    widths = [max(len(header[0]), *(len(name) for name, _ in rows))]
    widths += [max(len(header[i + 1]), *(len(c[i]) for c in cells)) for i in range(len(labels))]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    for (name, _), row in zip(rows, cells):
        lines.append("  ".join([name.ljust(widths[0])] + [c.rjust(w) for c, w in zip(row, widths[1:])]))
    return "\n".join(lines)


def _cell(value: float, reference: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if reference is None or math.isnan(reference):
        return f"{value:.4f}"
    return f"{value:.4f} ({value - reference:+.4f})"


def _json_number(value: float) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
