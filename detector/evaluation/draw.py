"""Detections drawn on their image: boxes, ``class score`` labels and masks, with torchvision's own drawing.

`draw_detections` takes COCO result records (what ``predictions.json`` / ``detections.json``
hold: ``bbox`` as ``[x, y, w, h]`` in the image's pixels, ``category_id``, ``score``, and an
RLE ``segmentation`` when the model has a mask head) and returns the picture with every
record at or above ``score_threshold`` drawn, via ``torchvision.utils.draw_segmentation_masks``
and ``draw_bounding_boxes``. Colours are fixed per category id (one palette, the same class
has the same colour in every picture), and the line width and label size grow with the
image (a 4000 px photo gets readable labels), like detectron2's Visualizer. Labels use the
DejaVu Sans font that matplotlib ships when it is installed, else Pillow's default font.

The records are drawn lowest score first, so the most confident box ends up on top.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch

#: Colours per category (cycled by category id): the 10 of matplotlib's "tab10".
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)
#: Masks are blended in groups of this many (`draw_segmentation_masks` holds a bool mask per object).
_MASKS_PER_CALL = 8


def category_color(category_id: int) -> tuple[int, int, int]:
    """The colour of `category_id` (ids 1, 2, ... take the palette in order)."""
    return PALETTE[(int(category_id) - 1) % len(PALETTE)]


@lru_cache(maxsize=1)
def label_font() -> str | None:
    """Path of a TrueType font for the labels (matplotlib's DejaVuSans.ttf), or None (Pillow's default)."""
    spec = importlib.util.find_spec("matplotlib")  # found without importing matplotlib
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, "mpl-data", "fonts", "ttf", "DejaVuSans.ttf")
        if os.path.isfile(path):
            return path
    return None


def drawing_sizes(height: int, width: int) -> tuple[int, int]:
    """``(line width, font size)`` in pixels for an image of this size (detectron2's rule of thumb)."""
    font_size = max(10, int(math.sqrt(height * width) // 60))
    return max(1, font_size // 6), font_size


def draw_detections(image: np.ndarray | torch.Tensor, records: Sequence[Mapping[str, Any]],
                    category_names: Mapping[int, str], score_threshold: float = 0.5) -> np.ndarray:
    """`image` (``uint8[H, W, 3]`` array or ``uint8[3, H, W]`` tensor) with `records` drawn; ``uint8[H, W, 3]``.

    Records below `score_threshold` are left out; one without ``segmentation`` gets its box
    only. A ``category_id`` missing from `category_names` is labelled by its id.
    """
    from pycocotools import mask as mask_utils
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    canvas = torch.as_tensor(image)
    if canvas.ndim == 3 and canvas.shape[-1] == 3 and canvas.shape[0] != 3:
        canvas = canvas.permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    if canvas.dtype != torch.uint8 or canvas.ndim != 3 or canvas.shape[0] != 3:
        raise ValueError(f"draw_detections wants a uint8 RGB image, (H, W, 3) or (3, H, W); got "
                         f"{tuple(canvas.shape)} {canvas.dtype}")
    canvas = canvas.contiguous()
    height, width = canvas.shape[1:]
    kept = sorted((r for r in records if float(r["score"]) >= score_threshold), key=lambda r: float(r["score"]))
    if not kept:
        return canvas.permute(1, 2, 0).numpy().copy()
    colors = [category_color(r["category_id"]) for r in kept]
    with_masks = [(r, c) for r, c in zip(kept, colors) if r.get("segmentation")]
    for start in range(0, len(with_masks), _MASKS_PER_CALL):
        group = with_masks[start:start + _MASKS_PER_CALL]
        masks = np.stack([mask_utils.decode(r["segmentation"]) for r, _ in group])  # (K, H, W) uint8
        if masks.shape[1:] != (height, width):
            raise ValueError(f"a segmentation of size {masks.shape[1:]} does not fit the image of size {(height, width)}")
        canvas = draw_segmentation_masks(canvas, torch.from_numpy(masks).bool(), alpha=0.45, colors=[c for _, c in group])
    xywh = torch.tensor([[float(v) for v in r["bbox"]] for r in kept], dtype=torch.float32).reshape(-1, 4)
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)  # (x, y, w, h) -> (x1, y1, x2, y2)
    xyxy[:, 0::2] = xyxy[:, 0::2].clamp(0, width - 1)
    xyxy[:, 1::2] = xyxy[:, 1::2].clamp(0, height - 1)
    labels = [f"{category_names.get(int(r['category_id']), str(r['category_id']))} {float(r['score']):.2f}" for r in kept]
    line_width, font_size = drawing_sizes(height, width)
    font = label_font()
    canvas = draw_bounding_boxes(canvas, xyxy, labels=labels, colors=colors, width=line_width, font=font,
                                 font_size=font_size if font else None, fill_labels=True, label_colors="white")
    return canvas.permute(1, 2, 0).numpy().copy()  # (3, H, W) -> (H, W, 3)
