"""What is at stake before any training: the quantization analysis of the ablation's own data.

The ablation's table says how much AP each ROI layer gains over RoIPool; this says how far
RoIPool's read region is from the true boxes of the same validation split, at the same scale
and strides (``detector.analysis.quantization`` on the ablation's config and overrides). Put
side by side, a user can see whether a small AP difference comes from little quantization
(large objects, fine stride) or from a detector that has not learned to use the alignment.
"""

from __future__ import annotations

from pathlib import Path

from detector.analysis.coco_boxes import SIZE_LABELS, load_gt_boxes
from detector.analysis.quantization import FPN_LABEL, analyze, display_columns
from detector.analysis.sources import from_config
from detector.analysis.tables import markdown_table, write_csv
from detector.io import atomic_write_text, write_json


def quantization_at_stake(configs, overrides, strides, out: Path) -> dict:
    """Run the analysis into ``out`` (csv/json/md); return ``{"rows": RoIPool rows, "line": text}``.

    Never raises: an ablation must not fail because its side analysis could not run (for
    example, data only the training process can reach); the line then says why.
    """
    try:
        source = from_config(configs, "val", overrides)
        gt = load_gt_boxes(source.annotations, source.min_size, source.max_size)
        rows, _ = analyze(gt, strides, fpn=source.fpn)  # under FPN: each box at its level's stride
        strides = [FPN_LABEL] if source.fpn else strides
    except (ValueError, OSError) as e:
        return {"rows": [], "line": f"Quantization analysis not available: {e}"}
    out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, out / "quantization.csv")
    write_json(out / "quantization.json", {"settings": {"annotations": str(source.annotations), "strides": list(strides),
                                                        "fpn": source.fpn, "min_size": source.min_size,
                                                        "max_size": source.max_size},
                                           "rows": rows}, indent=2)
    atomic_write_text(out / "quantization.md", markdown_table(rows, *display_columns(rows)))
    pool = [r for r in rows if r["op"] == "roi_pool"]
    parts = []
    for stride in strides:
        by_size = {r["size"]: r for r in pool if r["stride"] == stride}
        sizes = ", ".join(f"{size} {by_size[size]['iou_mean']:.2f}" for size in ("all",) + SIZE_LABELS
                          if by_size.get(size, {}).get("n"))
        if stride == FPN_LABEL:
            counts = ", ".join(f"{r['level']} {r['n']}" for r in pool if r["size"] == "all" and r.get("level") != "all")
            parts.append(f"FPN, each box at its Eq. 1 level (boxes per level: {counts}): {sizes}")
        else:
            parts.append(f"stride {stride}: {sizes}")
    line = (f"At stake before training: mean IoU between each validation box and the region RoIPool reads "
            f"({len(gt.boxes)} boxes at the detector's scale; RoIAlign reads the box itself) - "
            + "; ".join(parts) + f". Details: {out.name}/quantization.md")
    return {"rows": pool, "line": line}
