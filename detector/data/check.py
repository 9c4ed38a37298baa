"""Validate a COCO-style dataset and explain every problem in one readable report.

Users bring folders that are never as clean as COCO. Rather than a ``KeyError`` from deep
inside pycocotools at step 3000, :func:`check_coco` reads the annotation file and the image
headers once and lists what is wrong, where (file and id) and how to fix it. The same check
runs when :class:`~detector.data.coco.CocoDetection` is built (so before training starts).

CLI (exit status 0 when clean, 1 with errors)::

    python -m detector.data.check --images DIR --annotations FILE
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from detector.data.images import UnsafePathError, safe_image_path
from detector.data.report import KINDS, CheckReport, DatasetError, Issue

__all__ = ["KINDS", "CheckReport", "DatasetError", "Issue", "check_coco", "load_coco_json", "main"]

def load_coco_json(annotation_file: str | os.PathLike) -> dict:
    """Parse a COCO JSON file, turning I/O and syntax errors into a :class:`DatasetError`."""
    report = CheckReport("", str(annotation_file))
    data = _load_json(Path(annotation_file), report)
    if data is None:
        raise DatasetError(report.format(), report)
    return data


def _load_json(path: Path, report: CheckReport) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        report.add("malformed-json", str(path), f"line {e.lineno}, column {e.colno}: {e.msg}")
        return None
    except UnicodeDecodeError as e:
        report.add("malformed-json", str(path), f"byte {e.start}: not UTF-8 text ({e.reason})")
        return None
    except OSError as e:
        report.add("annotation-file", str(path), e.strerror or str(e))
        return None
    if not isinstance(data, dict):
        report.add("structure", str(path), f"top level is a JSON {type(data).__name__}, not an object")
        return None
    return data


def _finite_nonneg(values: object, n: int | None = None) -> str | None:
    """None when ``values`` is a list of finite numbers >= 0 (of length ``n``), else what is wrong."""
    if not isinstance(values, list) or (n is not None and len(values) != n):
        return f"expected a list of {n} numbers, got {values!r:.80}"
    if len(values) > 8:  # polygons: one vectorized test (COCO has millions of coordinates)
        try:
            arr = np.asarray(values, dtype=np.float64)
            if arr.ndim == 1 and np.isfinite(arr).all() and (arr >= 0).all():
                return None
        except (TypeError, ValueError):
            pass  # fall through to find the culprit
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"{v!r:.40} is not a number"
        if not math.isfinite(v):
            return f"contains {v}"
        if v < 0:
            return f"contains the negative value {v}"
    return None


def _check_records(data: dict, name: str, report: CheckReport) -> tuple[list, list, list] | None:
    lists = []
    for key in ("images", "annotations", "categories"):
        value = data.get(key)
        if not isinstance(value, list):
            report.add("structure", name, f"key {key!r} is {'missing' if key not in data else 'not a list'}")
            return None
        lists.append(value)
    required = {"images": ("id", "file_name", "width", "height"), "annotations": ("id", "image_id", "category_id"),
                "categories": ("id", "name")}
    bad = False
    for key, records in zip(("images", "annotations", "categories"), lists):
        singular = key[:-1] if key != "categories" else "category"
        for idx, rec in enumerate(records):
            if not isinstance(rec, dict):
                report.add("structure", name, f"{key}[{idx}] is not an object")
                bad = True
                continue
            missing = [k for k in required[key] if k not in rec]
            ident = f"{singular} id {rec['id']!r:.40}" if "id" in rec else f"{key}[{idx}]"
            if missing:
                report.add("structure", f"{name}: {ident}", f"missing {', '.join(map(repr, missing))}")
                bad = True
            not_ids = [k for k in ("id", "image_id", "category_id")
                       if k in rec and (isinstance(rec[k], bool) or not isinstance(rec[k], int))]
            if not_ids:
                report.add("structure", f"{name}: {ident}", f"{', '.join(map(repr, not_ids))} must be integers")
                bad = True
        ids = Counter(rec.get("id") for rec in records if isinstance(rec, dict) and "id" in rec)
        for ident, count in ids.items():
            if count > 1:
                report.add("duplicate-id", f"{name}: {singular} id {ident}", f"used by {count} {key}")
    return None if bad else tuple(lists)


def _check_image_file(images_dir: Path, name: str, img: dict) -> Issue | None:
    where = f"{name}: image id {img['id']}"
    try:
        path = safe_image_path(images_dir, img["file_name"])
    except UnsafePathError as e:
        return Issue("unsafe-path", where, str(e))
    if not path.is_file():
        return Issue("missing-image", where, f"file_name {img['file_name']!r} -> {path} does not exist")
    try:
        with Image.open(path) as im:
            size = im.size
    except Exception as e:  # PIL raises many types for broken files
        return Issue("unreadable-image", where, f"{path}: {type(e).__name__}: {e}")
    stored = (img.get("width"), img.get("height"))
    if stored != size:
        return Issue("size-mismatch", where,
                     f"JSON says width={stored[0]}, height={stored[1]} but {path} is {size[0]}x{size[1]}")
    return None


def check_coco(
    images_dir: str | os.PathLike,
    annotation_file: str | os.PathLike,
    data: dict | None = None,
    check_files: bool = True,
) -> CheckReport:
    """Check a COCO instances file and its image folder; never raises for bad data.

    Args:
        images_dir: folder the images' ``file_name`` values are relative to.
        annotation_file: the JSON file (named in every message).
        data: the already-parsed JSON (saves parsing it twice); read from the file when None.
        check_files: open every image header (existence, decodability, size). Headers only:
            a truncated pixel stream is found when the image is loaded.

    Returns:
        A :class:`CheckReport`; ``report.format()`` is the readable text.
    """
    images_dir, annotation_file = Path(images_dir), Path(annotation_file)
    report = CheckReport(str(images_dir), str(annotation_file))
    name = annotation_file.name
    if data is None:
        data = _load_json(annotation_file, report)
        if data is None:
            return report
    records = _check_records(data, name, report)
    if records is None:
        return report
    images, annotations, categories = records
    report.parsed = True
    report.num_images, report.num_annotations, report.num_categories = len(images), len(annotations), len(categories)
    imgs = {img["id"]: img for img in images}
    cat_ids = {cat["id"] for cat in categories}

    for img in images:
        w, h = img.get("width"), img.get("height")
        if isinstance(w, bool) or isinstance(h, bool) or not (isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0):
            report.add("structure", f"{name}: image id {img['id']}", f"width={w!r}, height={h!r} are not positive integers")
    names = Counter(img["file_name"] for img in images if isinstance(img["file_name"], str))
    for fname, count in names.items():
        if count > 1:
            report.add("duplicate-file-name", f"{name}: file_name {fname!r}", f"used by {count} images")

    annotated = set()
    for ann in annotations:
        where = f"{name}: annotation id {ann['id']}"
        img = imgs.get(ann["image_id"])
        if img is None:
            report.add("unknown-image", where, f"image_id {ann['image_id']!r} is not in 'images'")
        if ann["category_id"] not in cat_ids:
            report.add("unknown-category", where, f"category_id {ann['category_id']!r} is not in 'categories'")
        bbox = ann.get("bbox")
        problem = _finite_nonneg(bbox, 4) if bbox is not None else "has no 'bbox'"
        if problem:
            report.add("bad-coordinates", where, f"bbox {problem}")
        elif img is not None and isinstance(img.get("width"), int) and isinstance(img.get("height"), int):
            x, y, bw, bh = bbox
            W, H = img["width"], img["height"]
            if x + bw > W + 0.5 or y + bh > H + 0.5:
                report.add("box-outside-image", where, f"bbox {bbox} reaches past the {W}x{H} image (image id {img['id']})")
            if not ann.get("iscrowd", 0) and (min(x + bw, W) - min(x, W) < 1 or min(y + bh, H) - min(y, H) < 1):
                report.add("tiny-box", where, f"bbox {bbox} is under 1 px after clipping to {W}x{H}")
        if img is not None and not ann.get("iscrowd", 0):
            annotated.add(img["id"])
        _check_segmentation(ann, img, where, report)
    report.num_empty_images = len(imgs) - len(annotated)

    if check_files:
        if not images_dir.is_dir():
            report.add("images-dir", str(images_dir), "is not a folder")
        else:
            with ThreadPoolExecutor(8) as pool:  # header reads are I/O bound; map keeps the order
                found = pool.map(lambda img: _check_image_file(images_dir, name, img), images)
                report.issues.extend(issue for issue in found if issue is not None)
    return report


def _check_segmentation(ann: dict, img: dict | None, where: str, report: CheckReport) -> None:
    seg = ann.get("segmentation")
    if seg is None or seg == []:
        return
    if isinstance(seg, list):
        for poly in seg:
            problem = _finite_nonneg(poly)
            if problem is None and (len(poly) < 6 or len(poly) % 2):
                problem = f"has {len(poly)} values; a polygon needs an even number >= 6"
            if problem:
                report.add("bad-coordinates", where, f"segmentation polygon {problem}")
                return
    elif isinstance(seg, dict):
        size = seg.get("size")
        if "counts" not in seg or not (isinstance(size, list) and len(size) == 2):
            report.add("bad-segmentation", where, "RLE needs 'size' [height, width] and 'counts'")
        elif img is not None and size != [img.get("height"), img.get("width")]:
            report.add("bad-segmentation", where,
                       f"RLE size {size} differs from image id {img['id']}'s [height, width] "
                       f"[{img.get('height')}, {img.get('width')}]")
    else:
        report.add("bad-segmentation", where, f"segmentation is a {type(seg).__name__}, not a list or an RLE object")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.data.check",
                                description="Check a COCO-style dataset; exit 0 when clean, 1 with errors.")
    p.add_argument("--images", required=True, help="folder that file_name values are relative to")
    p.add_argument("--annotations", required=True, help="COCO instances JSON file")
    p.add_argument("--max-per-kind", type=int, default=20, help="cases listed per kind of problem")
    a = p.parse_args(argv)
    report = check_coco(a.images, a.annotations)
    print(report.format(max_per_kind=a.max_per_kind))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
