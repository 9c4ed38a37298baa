"""How much does RoIPool's quantization cost on *your* boxes? Measured before any training.

For every ground-truth box of a COCO file, at a backbone stride, this computes the image
region each ROI layer reads (:mod:`.regions`, the rules of ``docs/roi_ops.md``) and reports,
by COCO object size:

- the IoU between the true box and that region (the slides' box at stride 32: 0.652, so a
  third of what the classifier sees is not the object);
- the misalignment of each edge in pixels (region minus box). RoIPool's rounding moves x1/y1
  up to half a cell either way (mean |shift| a quarter cell), while its inclusive cell count
  ends the region at the far side of cell ``round(x2*s)``: x2/y2 move out by 0.5 to 1.5 cells,
  one whole cell on average, so the region is biased a cell too wide and too tall;
- for RoIPool, the mean IoU of its ``PH x PW`` bins with the ideal bins (the second,
  width/height quantization, which depends on the output size).

RoIWarp and RoIAlign rows are measured with ``aligned=True`` by default: with it, a bilinear
sample reads exactly where the footprint model of :mod:`.regions` puts the pixel, so their
rows isolate *rounding* (RoIWarp) from no rounding at all (RoIAlign: IoU 1). Whether
``aligned=False`` (torchvision's default) is half a cell off depends on where a backbone's
padded convolutions put each cell's centre, so that comparison is opt-in (``--no-aligned``).

With a feature pyramid (``--fpn``, or a config with ``model.detector.fpn: true``) each box is
read from the level FPN Eq. 1 assigns it (P2-P5, strides 4-32, the pooler's own
`detector.models.poolers.assign_levels`), so the rows are per level (``P2`` ... ``P5``: the
boxes that level pools, at its stride) and for the pyramid as a whole (level ``all``): small
boxes are pooled from fine levels, which is where FPN should shrink RoIPool's rounding.

Run it::

    python -m detector.analysis.quantization                      # built-in synthetic data
    python -m detector.analysis.quantization --config configs/quickstart.yaml   # a run's data/scale
    python -m detector.analysis.quantization --annotations instances_val2017.json \
        --stride 16 32 --min-size 800 --max-size 1333 --out runs/quantization
    python -m detector.analysis.quantization --config configs/ablation.yaml --fpn   # per FPN level

It writes ``quantization.csv`` (every statistic), ``quantization.json`` (the same plus the
settings), ``quantization.md`` (the readable subset, also printed) and ``quantization.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from detector.io import write_json
from detector.models.backbones import (
    FPN_LEVELS,  # the pyramid levels ROIs are pooled from (P2-P5)
)

from .coco_boxes import SIZE_LABELS, GroundTruthBoxes, load_gt_boxes
from .regions import paired_iou, read_region, region_ops, roi_pool_bin_iou
from .sources import Source, default_dataset, from_config
from .tables import markdown_table, write_csv

EDGES = ("x1", "y1", "x2", "y2")
#: Columns of the printed/Markdown table (the CSV and JSON carry every statistic).
DISPLAY_COLUMNS = ("stride", "op", "size", "n", "iou_mean", "iou_p10", "iou_median",
                   "frac_iou_below_0.7", "abs_shift_x1", "abs_shift_y1", "abs_shift_x2",
                   "abs_shift_y2", "max_abs_shift", "bin_iou_mean")
DISPLAY_HEADERS = ("stride", "op", "size", "boxes", "IoU mean", "IoU p10", "IoU median",
                   "IoU<0.7", "|dx1| px", "|dy1| px", "|dx2| px", "|dy2| px", "max |d| px",
                   "bin IoU")


def measure(boxes: np.ndarray, stride: float, output_size=7, image_sizes=None,
            aligned: bool = True, ops=None) -> dict:
    """Per-box measurements for each op: ``{op: {"region", "iou", "shift"[, "bin_iou"]}}``.

    boxes (float[K, 4]) as (x1, y1, x2, y2); image_sizes (float[K, 2]) as (W, H) or None.
    ``shift`` (float[K, 4]) is region minus box per edge, in image pixels. ``ops``: names
    from the variant table; None = every op with a read region (:func:`.regions.region_ops`).
    """
    out = {}
    for op in region_ops() if ops is None else ops:
        region = read_region(boxes, stride, op, image_sizes=image_sizes, aligned=aligned)
        rec = {"region": region, "iou": paired_iou(boxes, region), "shift": region - boxes}
        if op == "roi_pool":
            rec["bin_iou"] = roi_pool_bin_iou(boxes, stride, output_size, image_sizes)
        out[op] = rec
    return out


#: The ``stride`` column of the rows that describe the whole pyramid.
FPN_LABEL = "FPN"


def measure_fpn(boxes: np.ndarray, levels=FPN_LEVELS, output_size=7, image_sizes=None,
                aligned: bool = True, ops=None) -> tuple[dict, np.ndarray]:
    """`measure` under a feature pyramid: each box at the stride ``2**k`` of the level ``k``
    FPN Eq. 1 assigns it (the pooler's `assign_levels`, so degenerate boxes land where the
    model puts them). Returns ``(per_box, level)``: ``per_box`` as `measure`'s (every array
    in the boxes' order) and ``level`` (int[K]), each box's pyramid level.
    """
    import torch

    from detector.models.poolers import assign_levels

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    level = np.asarray(levels)[assign_levels(torch.from_numpy(boxes), levels).numpy()]  # (K,)
    per_box: dict = {}
    for k in levels:  # one vectorized `measure` per level, scattered back into box order
        sel = level == k
        if not sel.any():
            continue
        part = measure(boxes[sel], 2.0 ** k, output_size, None if image_sizes is None else image_sizes[sel],
                       aligned, ops)
        for op, rec in part.items():
            dst = per_box.setdefault(op, {key: np.full((len(boxes), *v.shape[1:]), np.nan) for key, v in rec.items()})
            for key, v in rec.items():
                dst[key][sel] = v
    return per_box, level


def summarize_fpn(per_box: dict, level: np.ndarray, sizes: np.ndarray, levels=FPN_LEVELS) -> list[dict]:
    """Rows of `measure_fpn`: the pyramid as a whole (``stride`` "FPN", ``level`` "all"), then
    each level with boxes (``stride`` its ``2**k``, ``level`` "P<k>"), by op and size."""
    rows = [{**r, "level": "all"} for r in summarize(per_box, sizes, FPN_LABEL)]
    for k in levels:
        sel = level == k
        if not sel.any():
            continue
        part = {op: {key: v[sel] for key, v in rec.items()} for op, rec in per_box.items()}
        rows += [{**r, "level": f"P{k}"} for r in summarize(part, sizes[sel], 2 ** k)]
    return rows


def display_columns(rows: list[dict]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(columns, headers) of the printed table: with a ``level`` column when FPN rows are present."""
    if any("level" in r for r in rows):
        return DISPLAY_COLUMNS[:1] + ("level",) + DISPLAY_COLUMNS[1:], DISPLAY_HEADERS[:1] + ("level",) + DISPLAY_HEADERS[1:]
    return DISPLAY_COLUMNS, DISPLAY_HEADERS


def _stats(rec: dict, mask: np.ndarray) -> dict:
    n = int(mask.sum())
    row = {"n": n}
    iou = rec["iou"][mask]
    shift = rec["shift"][mask]  # (n, 4)
    nan = float("nan")
    row.update({
        "iou_mean": float(iou.mean()) if n else nan,
        "iou_std": float(iou.std()) if n else nan,
        "iou_min": float(iou.min()) if n else nan,
        "iou_p10": float(np.percentile(iou, 10)) if n else nan,
        "iou_median": float(np.median(iou)) if n else nan,
        "iou_p90": float(np.percentile(iou, 90)) if n else nan,
        "frac_iou_below_0.7": float((iou < 0.7).mean()) if n else nan,
        "frac_iou_below_0.5": float((iou < 0.5).mean()) if n else nan,
    })
    for j, e in enumerate(EDGES):
        row[f"shift_{e}"] = float(shift[:, j].mean()) if n else nan  # signed: bias
        row[f"abs_shift_{e}"] = float(np.abs(shift[:, j]).mean()) if n else nan
    row["mean_abs_shift"] = float(np.abs(shift).mean()) if n else nan
    row["max_abs_shift"] = float(np.abs(shift).max()) if n else nan
    row["bin_iou_mean"] = float(rec["bin_iou"][mask].mean()) if ("bin_iou" in rec and n) else nan
    return row


def summarize(per_box: dict, sizes: np.ndarray, stride: float) -> list[dict]:
    """Table rows: one per (op, size) with size in ("all", "small", "medium", "large")."""
    rows = []
    for op, rec in per_box.items():
        for size in ("all",) + SIZE_LABELS:
            mask = np.ones(len(sizes), bool) if size == "all" else (sizes == size)
            rows.append({"stride": stride, "op": op, "size": size, **_stats(rec, mask)})
    return rows


def analyze(gt: GroundTruthBoxes, strides=(32,), output_size=7, aligned: bool = True, fpn: bool = False):
    """Measure and summarize ``gt`` at each stride -> ``(rows, {stride: per_box})``; with
    ``fpn``, at the pyramid's levels instead (`measure_fpn`; the dict's key is "FPN")."""
    if fpn:
        per_box, level = measure_fpn(gt.boxes, FPN_LEVELS, output_size, gt.image_sizes, aligned)
        return summarize_fpn(per_box, level, gt.sizes), {FPN_LABEL: per_box}
    rows, per_stride = [], {}
    for stride in strides:
        per_box = measure(gt.boxes, stride, output_size, gt.image_sizes, aligned)
        per_stride[stride] = per_box
        rows += summarize(per_box, gt.sizes, stride)
    return rows, per_stride


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detector.analysis.quantization",
        description="IoU between each ground-truth box and the region RoIPool (RoIWarp, RoIAlign) "
                    "reads, and per-edge misalignment in pixels, by COCO object size.")
    p.add_argument("--config", type=Path, help="a train.py config: its data, model.stride and model.min_size/"
                   "max_size (flags below override them)")
    p.add_argument("--annotations", type=Path, help="COCO instances JSON (default: the --config's data, "
                   "else the built-in data)")
    p.add_argument("--images", type=Path, help="image folder (only checked to exist; sizes are "
                   "read from the annotations' width/height)")
    p.add_argument("--split", default="val", help="split of the config's or built-in data (train/val)")
    p.add_argument("--cache-dir", type=Path, help="cache folder of the built-in data "
                   "(default: $DETECTOR_CACHE, else ~/.cache/detector)")
    p.add_argument("--stride", type=int, nargs="+", help="backbone stride(s) (default: the config's, else 32)")
    p.add_argument("--output-size", type=int, nargs="+", default=[7],
                   help="ROI output size PH [PW] (for the per-bin IoU)")
    p.add_argument("--min-size", type=float, help="resize like the detector: short side to this "
                   "(default: the config's model.min_size, else no resize)")
    p.add_argument("--max-size", type=float, help="... long side at most this (default: the config's)")
    p.add_argument("--aligned", action=argparse.BooleanOptionalAction, default=True,
                   help="RoIWarp/RoIAlign sample with aligned=True (default), the pixel convention "
                        "that matches RoIPool's cell footprint; --no-aligned shows the half-cell "
                        "shift of aligned=False under that footprint model")
    p.add_argument("--fpn", action=argparse.BooleanOptionalAction, default=None,
                   help="a feature pyramid (P2-P5): each box at the level FPN Eq. 1 assigns it, rows per "
                        "level (default: the config's model.detector.fpn, else off); excludes --stride")
    p.add_argument("--include-crowd", action="store_true", help="also analyse iscrowd boxes")
    p.add_argument("--out", type=Path, default=Path("runs/quantization"), help="output folder")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    return p


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if len(args.output_size) > 2:
        raise ValueError(f"--output-size takes 1 or 2 numbers, got {args.output_size}")
    output_size = tuple(args.output_size) if len(args.output_size) == 2 else args.output_size[0]
    if args.config is not None:
        source = from_config(args.config, args.split)
    elif args.annotations is None:
        source = default_dataset(args.split, args.cache_dir)
    else:
        source = Source(args.images, args.annotations)
    if args.annotations is not None:  # explicit files win over the config's data
        source.images, source.annotations = args.images, args.annotations
    fpn = source.fpn if args.fpn is None else args.fpn
    if fpn and args.stride:
        raise ValueError("--stride has no meaning with --fpn (each box is read at its FPN level's stride, "
                         "P2-P5 = 4-32); drop --stride, or pass --no-fpn")
    strides = [FPN_LABEL] if fpn else (args.stride or [source.stride or 32])
    min_size = args.min_size if args.min_size is not None else source.min_size
    max_size = args.max_size if args.max_size is not None else source.max_size
    images, annotations = source.images, source.annotations
    if images is not None and not Path(images).is_dir():
        raise ValueError(f"--images {str(images)!r} is not a folder")
    gt = load_gt_boxes(annotations, min_size, max_size, args.include_crowd)
    if len(gt.boxes) == 0:
        raise ValueError(f"{str(annotations)!r} has no usable boxes (skipped: {gt.skipped})")
    rows, per_stride = analyze(gt, strides, output_size, args.aligned, fpn=bool(fpn))

    args.out.mkdir(parents=True, exist_ok=True)
    settings = {"annotations": str(annotations), "config": None if args.config is None else str(args.config),
                "strides": strides, "output_size": args.output_size, "min_size": min_size,
                "max_size": max_size, "aligned": args.aligned, "fpn": bool(fpn), "boxes": len(gt.boxes),
                "skipped": gt.skipped}
    md = markdown_table(rows, *display_columns(rows))
    write_csv(rows, args.out / "quantization.csv")
    write_json(args.out / "quantization.json", {"settings": settings, "rows": rows}, indent=2)
    (args.out / "quantization.md").write_text(
        f"Quantization analysis of {annotations} ({len(gt.boxes)} boxes, skipped {gt.skipped}), "
        f"resize min_size={min_size} max_size={max_size}, output size {output_size}, "
        f"aligned={args.aligned}" + (", FPN P2-P5 (Eq. 1 levels)" if fpn else "") + "\n\n" + md)
    print(md)
    if not args.no_plot:
        from .plots import plot_quantization, save_figure
        fig = plot_quantization(per_stride, gt.sizes)
        save_figure(fig, args.out / "quantization.png")
    print(f"wrote {args.out}/quantization.{{csv,json,md{'' if args.no_plot else ',png'}}}")
    return {"rows": rows, "settings": settings}


if __name__ == "__main__":
    try:
        main()
    except ValueError as e:  # user input errors: one line, no traceback
        sys.exit(f"error: {e}")
