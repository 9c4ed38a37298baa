"""``ablation.png``: AP per variant with every seed, differences to RoIPool, and time;
``ap_vs_iou.png``: box AP at each IoU threshold, one curve per variant (mean +- std band).

Built with matplotlib's object API (see :mod:`detector.analysis.plots`), from the rows of
:mod:`.results` (``summary`` and per-run ``rows``), so notebooks can redraw it from
``results.json`` alone.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.figure import Figure

from .columns import IOU_COLUMNS, IOU_THRESHOLDS, METRICS
from .variants import REFERENCE, parse_variant


def _color(variant: str) -> str:
    """The op's colour from the ROI variant table; gray for an op no longer registered (a
    plugin's, in an old results.json), so an old table still draws."""
    try:
        return parse_variant(variant).color
    except ValueError:
        return "tab:gray"


def _nan0(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def _block(s: dict) -> str:
    """The panel row a summary entry belongs to: its stride and grid combination (``block``,
    :mod:`.results`); ``stride N`` for a results.json written before grids existed."""
    return s.get("block") or f"stride {s['stride']}"


def _blocks(summary: list[dict]) -> list[str]:
    return list(dict.fromkeys(_block(s) for s in sorted(summary, key=lambda s: s["stride"])))


def _seed_values(s: dict, rows: list[dict], metric: str) -> list[float]:
    """``metric`` of each run averaged into summary entry ``s``."""
    names = s.get("runs")
    if names is None:  # older results.json: runs of the variant at the stride
        return [r[metric] for r in rows if r["variant"] == s["variant"] and r["stride"] == s["stride"]]
    names = set(names.split())
    return [r[metric] for r in rows if r["name"] in names]


def plot_ablation(summary: list[dict], rows: list[dict]) -> Figure:
    """One row of three panels per stride (and grid combination; see the module doc)."""
    blocks = _blocks(summary)
    fig = Figure(figsize=(16, 4.3 * max(len(blocks), 1)), layout="constrained")
    axes = fig.subplots(max(len(blocks), 1), 3, squeeze=False)
    for ax_row, block in zip(axes, blocks):
        ss = [s for s in summary if _block(s) == block]
        x = np.arange(len(ss))
        names = [s["label"] for s in ss]

        ax = ax_row[0]
        means = [_nan0(s["AP_mean"]) for s in ss]
        stds = [_nan0(s["AP_std"]) for s in ss]
        ax.bar(x, means, yerr=stds, capsize=4, color=[_color(s["variant"]) for s in ss], alpha=0.75)
        for i, s in enumerate(ss):
            seeds = _seed_values(s, rows, "AP")
            ax.scatter(np.full(len(seeds), i) + np.linspace(-0.15, 0.15, len(seeds)), seeds, color="k", s=12, zorder=3)
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set(title=f"{block}: box AP (bars: mean ± std, dots: seeds)", ylabel="AP [%]")

        ax = ax_row[1]
        if any(s["variant"] == REFERENCE for s in ss):
            _draw_deltas(ax, block, [s for s in ss if s["variant"] != REFERENCE])
        else:  # no RoIPool trained in this block: bars of 0 would read as "no difference"
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"{block}: no RoIPool runs,\nno difference to show", ha="center", va="center",
                    transform=ax.transAxes)

        ax = ax_row[2]
        train = [_nan0(s["train_time_min_mean"]) for s in ss]
        infer = [_nan0(s["infer_ms_per_image_mean"]) for s in ss]
        ax.bar(x - 0.2, train, 0.4, color="tab:gray", label="train [min]")
        ax.set_ylabel("train time [min]")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, infer, 0.4, color="tab:brown", label="inference [ms/image]")
        ax2.set_ylabel("inference [ms / image]")
        ax.set_xticks(x, names, rotation=30, ha="right")
        ax.set_title(f"{block}: cost (gray: train, brown: inference)")
    return fig


def _draw_deltas(ax, block: str, others: list[dict]) -> None:
    """Grouped bars: each variant's Δ to RoIPool per metric (NaN drawn as 0, e.g. APl without large objects)."""
    width = 0.8 / max(len(others), 1)
    for j, s in enumerate(others):
        deltas = [_nan0(s[f"{m}_delta"]) for m in METRICS]
        ax.bar(np.arange(len(METRICS)) + (j - (len(others) - 1) / 2) * width, deltas, width,
               color=_color(s["variant"]), alpha=0.85, edgecolor="k", lw=0.3,
               hatch="//" if s["variant"].endswith("_max") else None, label=s["label"])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(range(len(METRICS)), METRICS)
    ax.set(title=f"{block}: difference to RoIPool (mean over seeds)", ylabel="Δ AP [points]")
    if others:
        ax.legend(fontsize=7)


def plot_ap_vs_iou_variants(summary: list[dict]) -> Figure:
    """One panel per stride: box AP [%] at IoU .50 ... .95 per variant, mean +- std over seeds
    (variants without analysis columns are left out)."""
    from detector.evaluation.plots import draw_ap_vs_iou

    blocks = _blocks(summary)
    fig = Figure(figsize=(6.8 * max(len(blocks), 1), 4.6), layout="constrained")
    axes = fig.subplots(1, max(len(blocks), 1), squeeze=False)[0]
    for ax, block in zip(axes, blocks):
        series = [{"label": s["label"], "iou_thresholds": IOU_THRESHOLDS, "color": _color(s["variant"]),
                   "linestyle": "--" if s["variant"].endswith("_max") else "-",
                   "AP": [s[f"{c}_mean"] for c in IOU_COLUMNS], "std": [s[f"{c}_std"] for c in IOU_COLUMNS]}
                  for s in summary if _block(s) == block and math.isfinite(s.get(f"{IOU_COLUMNS[0]}_mean", math.nan))]
        draw_ap_vs_iou(ax, series, title=f"{block}: box AP at each IoU (mean ± std over seeds)",
                       ylabel="AP [%]")
    return fig
