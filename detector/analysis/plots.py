"""Figures for the analyses, built on matplotlib's object API (no pyplot, no global backend).

Functions return a :class:`matplotlib.figure.Figure`; :func:`save_figure` renders it with the
Agg canvas. Not touching ``pyplot`` keeps these usable from scripts on headless machines
*and* from notebooks (where a returned Figure displays inline) without changing anyone's
backend.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter, ScalarFormatter

from detector.ops import ROI_OPS

from .coco_boxes import SIZE_LABELS

#: Colour of an op not in the variant table.
UNKNOWN_OP_COLOR = "tab:gray"


def op_color(op: str) -> str:
    """The op's colour from the variant table (``RoiOpSpec.color``); gray for an unknown name."""
    spec = ROI_OPS.get(op)
    return UNKNOWN_OP_COLOR if spec is None else spec.color


SIZE_COLORS = {"small": "tab:purple", "medium": "tab:olive", "large": "tab:cyan"}


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Render ``fig`` to ``path`` (PNG by extension) with the Agg canvas."""
    FigureCanvasAgg(fig)
    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """``fig`` rendered as PNG bytes: ``IPython.display.Image(png_bytes(fig))`` shows it in a
    notebook (a pyplot-free Figure has no rich display of its own)."""
    import io

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def plot_quantization(per_stride: dict, sizes: np.ndarray, max_points: int = 4000,
                      seed: int = 0) -> Figure:
    """One row per stride: RoIPool IoU histogram by size, IoU vs box size per op, edge shifts.

    per_stride: ``{stride: measure(...)}`` from :mod:`.quantization`; sizes (object[K]).
    The scatter shows at most ``max_points`` boxes (a fixed random subset) to stay legible.
    """
    strides = list(per_stride)
    fig = Figure(figsize=(15, 4.2 * len(strides)), layout="constrained")
    axes = fig.subplots(len(strides), 3, squeeze=False)
    rng = np.random.default_rng(seed)
    for row, stride in zip(axes, strides):
        per_box = per_stride[stride]
        pool = per_box["roi_pool"]
        boxes = pool["region"] - pool["shift"]  # (K, 4) true boxes back
        side = np.sqrt(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))  # (K,)

        ax = row[0]
        bins = np.linspace(0, 1, 41)
        for size in SIZE_LABELS:
            m = sizes == size
            if m.any():
                ax.hist(pool["iou"][m], bins=bins, histtype="step", lw=2,
                        color=SIZE_COLORS[size], label=f"{size} ({int(m.sum())})")
        where = f"stride {stride}" if isinstance(stride, (int, float)) else f"{stride} (each box at its level)"
        ax.set(title=f"{where}: IoU(true box, RoIPool region)", xlabel="IoU",
               ylabel="boxes")
        ax.legend(loc="upper left")

        ax = row[1]
        idx = np.arange(len(side))
        if len(idx) > max_points:
            idx = rng.choice(idx, max_points, replace=False)
        for op, rec in per_box.items():
            ax.scatter(side[idx], rec["iou"][idx], s=6, alpha=0.5, color=op_color(op), label=op)
        ax.set(xscale="log", ylim=(0, 1.02), title=f"{where}: IoU vs object size",
               xlabel="sqrt(box area) [px, at the analysed scale]", ylabel="IoU")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(loc="lower right", markerscale=3)

        ax = row[2]
        width = 0.8 / len(SIZE_LABELS)
        for i, size in enumerate(SIZE_LABELS):
            m = sizes == size
            if m.any():
                mean_abs = np.abs(pool["shift"][m]).mean(axis=0)  # (4,)
                ax.bar(np.arange(4) + (i - 1) * width, mean_abs, width, color=SIZE_COLORS[size],
                       label=size)
        numeric = isinstance(stride, (int, float))
        for frac in (0.5, 1.0) if numeric else ():  # under FPN a cell is each box's level stride
            ax.axhline(stride * frac, color="gray", ls=":", lw=1)
        ax.set_xticks(range(4), ["x1", "y1", "x2", "y2"])
        ax.set(title=f"{where}: RoIPool mean |edge shift|" + (" (dotted: 1/2, 1 cell)" if numeric else ""),
               ylabel="pixels")
        ax.legend()
    return fig
