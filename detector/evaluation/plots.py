"""Figures of the error analysis, drawn from the JSON of `detector.evaluation.error_analysis`.

matplotlib's object API with the Agg canvas (no pyplot, no global backend): each function
returns a `matplotlib.figure.Figure` built from plain dicts and lists, so a notebook can redraw
any figure from ``analysis.json`` alone; `write_png` renders one through
`detector.io.atomic_write_bytes` (never a half-written PNG in place of an older one).

- `plot_ap_vs_iou`: AP at IoU .50:.95, one line per checkpoint (or per ablation variant, with a
  mean +- std band);
- `plot_pr_curves`: per-class precision-recall curves (IoU .50, .75 and the .50:.95 mean);
- `plot_confusion`: the confusion matrix as a heatmap (counts; colour = share of the row);
- `plot_breakdown`: the stacked PR areas of the COCO analysis tool (C75 ... FN).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from detector.analysis.plots import png_bytes
from detector.io import atomic_write_bytes

# The analysis tool's colours: white for C75 and C50 (lines only), then blue, red, green, purple, orange.
BREAKDOWN_COLORS = ((1, 1, 1), (1, 1, 1), (0.31, 0.51, 0.74), (0.75, 0.31, 0.30), (0.36, 0.90, 0.38),
                    (0.50, 0.39, 0.64), (1, 0.6, 0))


def write_png(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> None:
    """Render `fig` to `path` atomically (OSError names the file)."""
    atomic_write_bytes(path, png_bytes(fig, dpi=dpi))


def _finite(values: Sequence[Any]) -> np.ndarray:
    return np.array([math.nan if v is None else float(v) for v in values], dtype=float)


def plot_ap_vs_iou(series: Sequence[Mapping[str, Any]], title: str = "AP at each IoU threshold",
                   scale: float = 1.0, ylabel: str = "AP") -> Figure:
    """One line per entry of `series` (see `draw_ap_vs_iou`)."""
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    draw_ap_vs_iou(fig.subplots(), series, title, scale, ylabel)
    return fig


def draw_ap_vs_iou(ax: Any, series: Sequence[Mapping[str, Any]], title: str = "AP at each IoU threshold",
                   scale: float = 1.0, ylabel: str = "AP") -> None:
    """On `ax`, one line per ``{"label", "iou_thresholds", "AP", ["std"], ["color"], ["linestyle"]}`` (values
    times `scale`; ``std`` draws a mean +- std band). Missing values (None/nan) are gaps."""
    for s in series:
        x = _finite(s["iou_thresholds"])
        y = _finite(s["AP"]) * scale
        line, = ax.plot(x, y, marker="o", ms=3.5, label=s["label"], color=s.get("color"),
                        linestyle=s.get("linestyle", "-"))
        if s.get("std") is not None:
            sd = np.nan_to_num(_finite(s["std"]) * scale)
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.18, lw=0)
    ax.set(xlabel="IoU threshold", ylabel=ylabel, title=title, xlim=(0.48, 0.97))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=8)


def plot_pr_curves(analysis: Mapping[str, Any], max_classes: int = 30) -> Figure:
    """A grid of per-class PR curves from ``analysis["pr_curves"]`` and ``["per_class"]``; a class
    without ground truth gets an empty panel that says so (the first `max_classes` classes)."""
    curves = analysis["pr_curves"]
    recall = _finite(curves["recall"])
    rows = {r["name"]: r for r in analysis.get("per_class", [])}
    names = list(curves["classes"])[:max_classes] or ["(no class)"]
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, name in zip(axes, names):
        c = curves["classes"].get(name)
        row = rows.get(name, {})
        if not c or c.get("IoU50") is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes, color="gray")
        else:
            for key, style in (("IoU50", "-"), ("IoU75", "--"), ("IoU50:95", ":")):
                ax.plot(recall, _finite(c[key]), style, label=key.replace("IoU", "IoU ."))
        ap = row.get("AP")
        ax.set_title(f"{name}" + (f"  AP {ap:.3f}" if isinstance(ap, float) and math.isfinite(ap) else ""), fontsize=9)
        ax.set(xlim=(0, 1), ylim=(0, 1.02))
        ax.tick_params(labelsize=7)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if axes[0].get_legend_handles_labels()[0]:
        axes[0].legend(fontsize=7, loc="lower left")
    fig.supxlabel("recall")
    fig.supylabel("precision")
    return fig


def plot_confusion(analysis: Mapping[str, Any]) -> Figure:
    """Heatmap of ``analysis["confusion_matrix"]``: counts in the cells, colour = share of the row."""
    cm = analysis["confusion_matrix"]
    labels = cm["labels"]
    matrix = np.array(cm["matrix"], dtype=float).reshape(len(labels), len(labels))
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    n = len(labels)
    fig = Figure(figsize=(1.6 + 0.55 * n, 1.2 + 0.5 * n), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, f"{int(matrix[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set(xlabel=f"detected class (score >= {cm['score_threshold']:g})", ylabel="ground-truth class",
           title=f"confusion at IoU {cm['iou_threshold']:g} (colour: share of the row)")
    fig.colorbar(image, ax=ax, shrink=0.8)
    return fig


def plot_breakdown(analysis: Mapping[str, Any], title: str | None = None) -> Figure:
    """The COCO analysis figure: stacked areas between the PR curves C75, C50, Loc, Sim, Oth, BG,
    FN (overall), the legend giving each curve's area."""
    b = analysis["breakdown"]
    recall = _finite(b["recall"])
    curves = [np.nan_to_num(_finite(b["precision"][t])) for t in b["types"]]
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    below = np.zeros_like(recall)
    for t, curve, color in zip(b["types"], curves, BREAKDOWN_COLORS):
        ap = b["AP"].get(t)
        label = f"[{ap:.3f}] {t}" if isinstance(ap, float) and math.isfinite(ap) else f"[-] {t}"
        ax.fill_between(recall, below, curve, color=color, label=label, lw=0)
        ax.plot(recall, curve, color="k", lw=0.5)
        below = np.maximum(below, curve)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="recall", ylabel="precision",
           title=title or f"{analysis.get('iou_type', '')} error breakdown "
                          f"({b.get('classes_averaged', '?')} classes averaged)")
    ax.legend(loc="lower left", fontsize=8, framealpha=0.9)
    return fig
