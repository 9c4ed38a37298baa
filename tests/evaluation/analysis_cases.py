"""Hand-made COCO ground truth and detections for the error-analysis tests (no model, no files)."""

from __future__ import annotations

import contextlib
import io

import numpy as np
from pycocotools.coco import COCO

CATEGORIES = [{"id": 1, "name": "cat", "supercategory": "animal"},
              {"id": 2, "name": "dog", "supercategory": "animal"},
              {"id": 3, "name": "car"}]  # no supercategory: its own


def coco(images: list[dict], annotations: list[dict], categories=CATEGORIES) -> COCO:
    anns = []
    for i, a in enumerate(annotations, 1):
        _, _, w, h = a["bbox"]
        anns.append({"id": i, "iscrowd": 0, "area": float(w * h), **a})
    gt = COCO()
    gt.dataset = {"images": images, "categories": [dict(c) for c in categories], "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt


def hand_case() -> tuple[COCO, list[dict]]:
    """One image: a cat found as cat, a dog found as cat (scored above the right hit), a missed car,
    a car detected on nothing, and a dog detection on the cat below the 0.5 score threshold."""
    gt = coco([{"id": 1, "width": 100, "height": 100, "file_name": "a.png"}],
              [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
               {"image_id": 1, "category_id": 2, "bbox": [50, 50, 20, 20]},
               {"image_id": 1, "category_id": 3, "bbox": [10, 60, 20, 20]}])
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
            {"image_id": 1, "category_id": 1, "bbox": [51, 50, 20, 20], "score": 0.95},
            {"image_id": 1, "category_id": 3, "bbox": [80, 5, 10, 10], "score": 0.7},
            {"image_id": 1, "category_id": 2, "bbox": [10, 10, 20, 20], "score": 0.3}]
    return gt, dets


def random_case(seed: int = 0, images: int = 25) -> tuple[COCO, list[dict]]:
    """Boxes of three classes, detections jittered (some far off), some with the wrong class
    (often a class of the same supercategory), some on background, scores noisy."""
    rng = np.random.default_rng(seed)
    imgs, anns, dets = [], [], []
    for i in range(1, images + 1):
        imgs.append({"id": i, "width": 200, "height": 200, "file_name": f"{i}.png"})
        for _ in range(rng.integers(1, 6)):
            w, h = rng.uniform(8, 80, size=2)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 200 - h)
            c = int(rng.integers(1, 4))
            anns.append({"image_id": i, "category_id": c, "bbox": [x, y, w, h]})
            if rng.random() < 0.85:
                s = rng.choice([0.03, 0.1, 0.3]) * np.array([w, h, w, h])
                box = [x, y, w, h] + rng.normal(0, 1, 4) * s
                box[2:] = np.maximum(box[2:], 2.0)
                dc = c if rng.random() < 0.75 else (3 - c if c < 3 and rng.random() < 0.7 else int(rng.integers(1, 4)))
                dets.append({"image_id": i, "category_id": dc, "bbox": [float(v) for v in box],
                             "score": float(rng.uniform(0.2, 1.0))})
        for _ in range(rng.integers(0, 3)):
            w, h = rng.uniform(8, 60, size=2)
            dets.append({"image_id": i, "category_id": int(rng.integers(1, 4)),
                         "bbox": [float(rng.uniform(0, 140)), float(rng.uniform(0, 140)), float(w), float(h)],
                         "score": float(rng.uniform(0.0, 0.8))})
    return coco(imgs, anns), dets
