"""The built-in synthetic COCO dataset: shapes on clutter, written as a real COCO folder.

Nothing can be downloaded here, so the framework ships a dataset that exercises exactly what
the ROI-layer ablation measures: objects from below one 32 px cell to most of the image
(where RoIPool's rounding costs AP75 and small-object AP), occlusion, and clutter that is
not an object. See :mod:`detector.data.render` for how an image is drawn.

Layout written by :func:`generate_synthetic_coco`::

    DIR/train/000001.jpg ...            DIR/val/000001.jpg ...
    DIR/annotations/instances_train.json DIR/annotations/instances_val.json
    DIR/DONE.json                        (parameters; written last)

Masks are compressed RLE (``iscrowd = 0``) computed from the renderer's instance map, so they
match the drawn pixels exactly, occlusion included; boxes are the tight boxes of the visible
pixels. Every image draws from its own RNG seeded by ``(seed, split, index)``: generation is
deterministic, parallel, and image ``i`` does not change when the split grows.

CLI::

    python -m detector.data.synthetic --out DIR --num-train 1000 --num-val 200
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from detector.data.render import RenderConfig, render_image

#: Bump when the rendering or the file layout changes: cached folders of an older version are regenerated.
FORMAT_VERSION = 2
SPLITS = {"train": 0, "val": 1, "test": 2}
IMAGE_FORMATS = ("jpg", "png")


def _render_one(args: tuple[RenderConfig, int, str, int, str, str]) -> list[dict]:
    """Render image ``index`` of ``split``, save it, return its annotations (no ids yet)."""
    cfg, seed, split, index, image_format, out_dir = args
    rng = np.random.default_rng([seed, SPLITS[split], index])
    image, instances, labels = render_image(cfg, rng)
    path = os.path.join(out_dir, split, f"{index + 1:06d}.{image_format}")
    if image_format == "jpg":
        Image.fromarray(image).save(path, quality=92)
    else:
        Image.fromarray(image).save(path, compress_level=1)
    if not labels:
        return []
    masks = np.empty((*instances.shape, len(labels)), dtype=np.uint8, order="F")  # (H, W, N), as pycocotools wants
    for j in range(len(labels)):
        np.equal(instances, j + 1, out=masks[:, :, j], casting="unsafe")
    rles = mask_utils.encode(masks)
    boxes = mask_utils.toBbox(rles)  # (N, 4) xywh, tight around the visible pixels
    areas = mask_utils.area(rles)
    anns = []
    for label, rle, box, area in zip(labels, rles, boxes, areas):
        anns.append({
            "category_id": label,
            "bbox": [float(v) for v in box],
            "area": float(area),
            "iscrowd": 0,
            "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        })
    return anns


def _categories(cfg: RenderConfig) -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(cfg.classes)]


def generate_synthetic_coco(
    out_dir: str | os.PathLike,
    num_train: int = 1000,
    num_val: int = 200,
    width: int = 400,
    height: int = 288,
    seed: int = 0,
    num_test: int = 0,
    image_format: str = "jpg",
    workers: int | None = None,
    **render_options,
) -> Path:
    """Write a synthetic COCO folder to ``out_dir`` (created; existing files are overwritten).

    Args:
        num_train, num_val, num_test: images per split (a split with 0 images is not written,
            except train and val, which always get an annotation file).
        width, height: image size in pixels (default: half the slides' 800x576).
        seed: non-negative; the same arguments always give the same files.
        image_format: ``"jpg"`` (small, fast) or ``"png"`` (lossless: pixels equal the render).
        workers: processes (default: ``min(os.cpu_count(), 8)``; 1 renders in this process).
        render_options: further :class:`~detector.data.render.RenderConfig` fields
            (``min_object_size``, ``max_objects``, ``classes``, ...).

    Returns:
        ``Path(out_dir)``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format={image_format!r}: use one of {IMAGE_FORMATS}")
    if seed < 0:
        raise ValueError(f"seed={seed} must be a non-negative integer")
    counts = {"train": num_train, "val": num_val, "test": num_test}
    for split, n in counts.items():
        if n < 0:
            raise ValueError(f"num_{split}={n} must be >= 0")
    cfg = RenderConfig(width=width, height=height, **render_options)
    out = Path(out_dir)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    workers = min(os.cpu_count() or 1, 8) if workers is None else max(1, workers)
    pool = None
    if workers > 1 and sum(counts.values()) >= 4 * workers:
        # fork on Linux: forkserver/spawn re-import the caller's __main__ in every worker (seconds
        # when that is a torch script, an error when it lacks a __main__ guard). The children only
        # run numpy/PIL code, so a parent with torch threads is harmless. macOS/Windows: spawn.
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=mp.get_context(method))
    try:
        for split, n in counts.items():
            if n == 0 and split == "test":
                continue
            (out / split).mkdir(exist_ok=True)
            jobs = [(cfg, seed, split, i, image_format, str(out)) for i in range(n)]
            results = pool.map(_render_one, jobs, chunksize=16) if pool else map(_render_one, jobs)
            images, annotations = [], []
            for i, anns in enumerate(results):
                images.append({"id": i + 1, "file_name": f"{i + 1:06d}.{image_format}", "width": width, "height": height})
                for ann in anns:
                    annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
            data = {
                "info": {"description": "detector synthetic shapes", "format_version": FORMAT_VERSION,
                         "split": split, "seed": seed},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": _categories(cfg),
            }
            with open(out / "annotations" / f"instances_{split}.json", "w") as f:
                json.dump(data, f, separators=(",", ":"))
    finally:
        if pool is not None:
            pool.shutdown()
    return out


def _params(num_train, num_val, width, height, seed, num_test, image_format, render_options) -> dict:
    cfg = RenderConfig(width=width, height=height, **render_options)
    return {"format_version": FORMAT_VERSION, "num_train": num_train, "num_val": num_val, "num_test": num_test,
            "image_format": image_format, "seed": seed, "render": dataclasses.asdict(cfg)}


def cache_root() -> Path:
    """``$DETECTOR_CACHE`` if set, else ``~/.cache/detector``."""
    env = os.environ.get("DETECTOR_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "detector"


def _is_complete(folder: Path, params: dict) -> bool:
    try:
        if json.loads((folder / "DONE.json").read_text()) != json.loads(json.dumps(params)):
            return False
    except (OSError, ValueError):
        return False
    for split in ("train", "val", "test"):
        n = params[f"num_{split}"]
        if split == "test" and n == 0:
            continue
        if not (folder / "annotations" / f"instances_{split}.json").is_file():
            return False
        if sum(1 for _ in (folder / split).glob(f"*.{params['image_format']}")) != n:
            return False
    return True


def ensure_synthetic_coco(
    num_train: int = 1000,
    num_val: int = 200,
    width: int = 400,
    height: int = 288,
    seed: int = 0,
    num_test: int = 0,
    image_format: str = "jpg",
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    **render_options,
) -> Path:
    """Return the cached synthetic folder for these parameters, generating it when missing or incomplete.

    The folder lives in ``cache_dir`` (default :func:`cache_root`) under
    ``synthetic/shapes-<W>x<H>-<train>-<val>-s<seed>-<hash of all parameters>``. Generation
    happens in a temporary sibling folder that is renamed into place only when complete, so
    a killed run never leaves a folder that looks finished; concurrent callers (DDP ranks)
    each generate and the first rename wins.
    """
    params = _params(num_train, num_val, width, height, seed, num_test, image_format, render_options)
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    base = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    name = f"shapes-{width}x{height}-{num_train}-{num_val}-s{seed}-{digest}"
    final = base / "synthetic" / name
    if _is_complete(final, params):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".tmp-{name}-*"):  # left by killed runs over an hour ago
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp = final.parent / f".tmp-{name}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        generate_synthetic_coco(tmp, num_train, num_val, width, height, seed, num_test, image_format, workers,
                                **render_options)
        (tmp / "DONE.json").write_text(json.dumps(params, indent=1))
        if final.exists() and not _is_complete(final, params):
            shutil.rmtree(final, ignore_errors=True)  # incomplete or damaged: replace it
        try:
            os.rename(tmp, final)
        except OSError:
            if not _is_complete(final, params):  # lost a race to a complete folder: fine; else a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detector.data.synthetic",
                                description="Write the synthetic shapes dataset as a COCO folder.")
    p.add_argument("--out", required=True, help="folder to write (train/, val/, annotations/)")
    p.add_argument("--num-train", type=int, default=1000)
    p.add_argument("--num-val", type=int, default=200)
    p.add_argument("--num-test", type=int, default=0)
    p.add_argument("--width", type=int, default=400)
    p.add_argument("--height", type=int, default=288)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=IMAGE_FORMATS, default="jpg", dest="image_format")
    p.add_argument("--workers", type=int, default=None, help="processes (default: CPU count, at most 8)")
    p.add_argument("--min-object-size", type=float, default=RenderConfig.min_object_size)
    p.add_argument("--max-objects", type=int, default=RenderConfig.max_objects)
    a = p.parse_args(argv)
    start = time.perf_counter()
    try:
        out = generate_synthetic_coco(a.out, a.num_train, a.num_val, a.width, a.height, a.seed, a.num_test,
                                      a.image_format, a.workers, min_object_size=a.min_object_size,
                                      max_objects=a.max_objects)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = a.num_train + a.num_val + a.num_test
    dt = time.perf_counter() - start
    print(f"wrote {n} images to {out} in {dt:.1f} s ({n / dt:.0f} images/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
