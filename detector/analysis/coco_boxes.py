"""Ground-truth boxes of a COCO annotation file as flat arrays, for box-level analyses.

Reads the JSON directly (no pycocotools: nothing here needs its index, and it prints on
load). Boxes come back as ``(x1, y1, x2, y2)`` in the coordinates the detector sees: the
file's own, or rescaled with torchvision's ``GeneralizedRCNNTransform`` rule when
``min_size``/``max_size`` are given, because quantization error is measured in feature
cells and therefore depends on the scale the image is fed at.

Object size uses COCO's own rule (the annotation's ``area`` field, as ``COCOeval`` does:
small < 32^2 <= medium < 96^2 <= large), measured in the *original* image, so that the
categories line up with the APs/APm/APl of an evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: COCO's area thresholds (``COCOeval.Params.areaRng``), in original-image pixels^2.
SIZE_LABELS = ("small", "medium", "large")
SMALL_MAX_AREA = 32.0 ** 2
MEDIUM_MAX_AREA = 96.0 ** 2


@dataclass
class GroundTruthBoxes:
    """Flat view of the usable ground-truth boxes of one COCO file.

    boxes (float64[K, 4]): (x1, y1, x2, y2) at the analysed scale.
    image_sizes (float64[K, 2]): (W, H) of each box's image at the analysed scale.
    sizes (object[K]): "small" / "medium" / "large" by COCO area in the original image.
    image_ids, category_ids (int64[K]).
    skipped (dict[str, int]): boxes left out and why (crowd, zero width/height).
    """

    boxes: np.ndarray
    image_sizes: np.ndarray
    sizes: np.ndarray
    image_ids: np.ndarray
    category_ids: np.ndarray
    skipped: dict


def size_category(area) -> np.ndarray:
    """COCO size label per area (``object[K]``)."""
    a = np.asarray(area, dtype=np.float64)
    return np.where(a < SMALL_MAX_AREA, "small", np.where(a < MEDIUM_MAX_AREA, "medium", "large")).astype(object)


def resize_scale(width, height, min_size: float | None, max_size: float | None) -> np.ndarray:
    """Scale factor per image, as torchvision's ``GeneralizedRCNNTransform`` resizes.

    ``scale = min(min_size / short_side, max_size / long_side)``; 1 when both are None.
    """
    w = np.asarray(width, dtype=np.float64)
    h = np.asarray(height, dtype=np.float64)
    if min_size is None and max_size is None:
        return np.ones_like(w)
    for name, v in (("min_size", min_size), ("max_size", max_size)):
        if v is not None and v <= 0:
            raise ValueError(f"{name} must be positive, got {v!r}")
    scale = np.full_like(w, np.inf)
    if min_size is not None:
        scale = np.minimum(scale, min_size / np.minimum(w, h))
    if max_size is not None:
        scale = np.minimum(scale, max_size / np.maximum(w, h))
    return scale


def load_gt_boxes(annotations: str | Path, min_size: float | None = None,
                  max_size: float | None = None, include_crowd: bool = False) -> GroundTruthBoxes:
    """Load a COCO instances file's boxes (see :class:`GroundTruthBoxes`).

    Crowd regions are left out by default: the detector neither trains nor is scored on
    them. Boxes with zero width or height have no IoU and are left out (counted in
    ``skipped``). Raises ValueError naming the file when it is not a COCO instances file.
    """
    path = Path(annotations)
    if not path.is_file():
        raise ValueError(f"annotations file {str(path)!r} does not exist; pass --annotations PATH "
                         "to a COCO instances JSON")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"annotations file {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict) or "images" not in data or "annotations" not in data:
        raise ValueError(f"annotations file {str(path)!r} lacks the 'images'/'annotations' keys "
                         "of a COCO instances file")
    images = {im["id"]: (float(im.get("width", np.nan)), float(im.get("height", np.nan)))
              for im in data["images"]}
    anns = data["annotations"]
    missing = [a["image_id"] for a in anns if a["image_id"] not in images]
    if missing:
        raise ValueError(f"annotations file {str(path)!r}: annotation refers to image_id "
                         f"{missing[0]!r}, which is not in 'images'")

    n = len(anns)
    xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(n, 4)
    area = np.array([a.get("area", a["bbox"][2] * a["bbox"][3]) for a in anns], dtype=np.float64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    image_ids = np.array([a["image_id"] for a in anns], dtype=np.int64)
    category_ids = np.array([a.get("category_id", -1) for a in anns], dtype=np.int64)
    wh = np.array([images[i] for i in image_ids], dtype=np.float64).reshape(n, 2)

    degenerate = (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0)
    keep = ~degenerate & (include_crowd | ~crowd)
    skipped = {"crowd": int((crowd & ~degenerate).sum()) if not include_crowd else 0,
               "zero_size": int(degenerate.sum())}

    scale = resize_scale(wh[:, 0], wh[:, 1], min_size, max_size)[:, None]  # (K, 1)
    boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * scale  # (K, 4)
    return GroundTruthBoxes(
        boxes=boxes[keep], image_sizes=(wh * scale)[keep], sizes=size_category(area)[keep],
        image_ids=image_ids[keep], category_ids=category_ids[keep], skipped=skipped,
    )
