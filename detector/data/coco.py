"""COCO-style detection dataset: any instances JSON + image folder, through pycocotools.

What it adds to ``torchvision.datasets.CocoDetection``: targets ready for the detector
(xyxy boxes, contiguous labels, optional masks), the dataset check before anything trains,
and the data-cleaning rules that real folders need (see :class:`CocoDetection`).
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detector.data.check import (
    FULL_CHECK_MAX_IMAGES,
    DatasetError,
    Issue,
    check_coco,
    check_image_files,
    load_coco_json,
)
from detector.data.images import load_rgb, safe_image_path

# Checker warnings the dataset repeats at construction; "tiny-box" is reported by the loader itself (once).
_REPEATED_WARNINGS = {"box-outside-image", "duplicate-file-name", "exif-orientation"}
# Errors that skip_bad_images turns into "leave this image out" (the file, not the annotations, is bad).
_SKIPPABLE = {"missing-image", "unreadable-image"}


class CocoDetection(Dataset):
    """A COCO instances file as detection samples.

    Each item is ``(image, target)``:

    - ``image``: ``Tensor[3, H, W]`` float32 in [0, 1] (RGB, whatever the file's mode), upright:
      the file's EXIF orientation is applied (:func:`~detector.data.images.load_rgb` says why),
      so the annotation file's boxes and ``width``/``height`` are read in the displayed frame.
    - ``target["boxes"]``: ``Tensor[L, 4]`` float32, ``(x1, y1, x2, y2)`` in absolute pixels of
      the returned image.
    - ``target["labels"]``: ``Tensor[L]`` int64 in ``1..num_classes-1`` (0 is background).
    - ``target["image_id"]``: the original COCO image id (int).
    - ``target["orig_size"]``: ``(height, width)`` of the file, i.e. the frame of the
      annotation file; detections on a resized image must be scaled back to it.
    - ``target["masks"]``: ``Tensor[L, H, W]`` uint8, only when ``masks=True``.

    Tensors are plain ``torch.Tensor`` (transforms run on tv_tensors inside ``__getitem__``).

    Rules applied to the annotations (the evaluator keeps using the untouched file):

    - category ids of any value map to contiguous labels in sorted id order:
      label ``i`` is category id ``category_ids[i - 1]``;
    - ``iscrowd`` annotations are excluded from targets;
    - boxes are clipped to the image (corners up to 1 px left of / above it, as exports round,
      and any amount past the right / bottom border, each counted in one warning); those under
      1 px wide or high after clipping are dropped and counted in one warning per dataset;
    - segmentations are read (and checked) only when ``masks=True``;
    - images without (remaining) annotations are kept as negatives unless ``drop_empty``.

    Args:
        images_dir: folder that the JSON's ``file_name`` values are relative to.
        annotation_file: COCO instances JSON.
        transforms: ``callable(image, target) -> (image, target)`` on tv_tensors (``Image``
            uint8, ``BoundingBoxes``, ``Mask``), e.g. :func:`detector.data.transforms.build_transforms`.
        masks: decode polygons / RLE into ``target["masks"]``.
        drop_empty: leave out images that have no usable annotation.
        check: run :func:`~detector.data.check.check_coco` first and raise
            :class:`~detector.data.check.DatasetError` (a ``ValueError`` whose text is the
            readable report) when it finds errors.
        full_check: with ``check``, decode every image completely here (finds truncated files
            before the first step). None (default): only when the file lists at most
            :data:`~detector.data.check.FULL_CHECK_MAX_IMAGES` (2000) images; larger folders are
            checked from headers, and a file that fails to decode later raises a
            :class:`~detector.data.check.DatasetError` naming it.
        skip_bad_images: leave out images whose file is missing or cannot be decoded (with one
            warning listing them) instead of refusing the dataset. Every image is decoded here to
            find them, whatever the size; ``skipped_image_ids`` lists them. Their annotations are
            neither trained on nor evaluated.

    Example:
        >>> ds = CocoDetection("data/val", "data/annotations/instances_val.json")  # doctest: +SKIP
        >>> image, target = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        images_dir: str | os.PathLike,
        annotation_file: str | os.PathLike,
        transforms: Callable | None = None,
        masks: bool = False,
        drop_empty: bool = False,
        check: bool = True,
        full_check: bool | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.masks = masks
        self.skip_bad_images = skip_bad_images
        data = load_coco_json(self.annotation_file)
        records = data.get("images") if isinstance(data.get("images"), list) else []
        bad: list[Issue] = []
        if check:
            decode = skip_bad_images or (len(records) <= FULL_CHECK_MAX_IMAGES if full_check is None else full_check)
            report = check_coco(self.images_dir, self.annotation_file, data=data, decode=decode, masks=masks)
            if skip_bad_images:
                bad = [i for i in report.issues if i.kind in _SKIPPABLE]
                report.issues = [i for i in report.issues if i.kind not in _SKIPPABLE]
            if not report.ok:
                raise DatasetError(report.format(kinds={i.kind for i in report.errors}), report)
            if any(i.kind in _REPEATED_WARNINGS for i in report.warnings):
                warnings.warn(report.format(max_per_kind=3, kinds=_REPEATED_WARNINGS), stacklevel=2)
        elif skip_bad_images:
            usable = [r for r in records if isinstance(r, dict) and "id" in r and "file_name" in r]
            bad = [i for i in check_image_files(self.images_dir, self.annotation_file.name, usable, decode=True)
                   if i.kind in _SKIPPABLE]
        self.skipped_image_ids: list = [i.image_id for i in bad]
        if bad:
            listed = "\n".join(f"  image id {i.image_id}: {i.message}" for i in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            warnings.warn(
                f"{self.annotation_file}: left out {len(bad)} image(s) whose file is missing or cannot be decoded "
                f"(skip_bad_images=True); their annotations are neither trained on nor evaluated:\n{listed}{more}",
                stacklevel=2,
            )
        self.coco = COCO()
        self.coco.dataset = data
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco.createIndex()
        except (KeyError, TypeError) as e:
            raise DatasetError(
                f"{self.annotation_file}: pycocotools cannot index it ({type(e).__name__}: {e}); run "
                f"`python -m detector.data.check --images {self.images_dir} --annotations {self.annotation_file}` "
                "for a full report"
            ) from None

        self.category_ids: list = sorted(self.coco.cats)
        self.category_names: list[str] = [str(self.coco.cats[c].get("name", c)) for c in self.category_ids]
        self.category_id_to_label: dict = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self.num_classes = len(self.category_ids) + 1
        self._index_targets(drop_empty, exclude=set(self.skipped_image_ids))

    def _index_targets(self, drop_empty: bool, exclude: set) -> None:
        """Precompute each image's kept boxes, labels and annotation ids (so ``__getitem__`` is cheap)."""
        self.ids: list = []
        self._boxes: dict = {}
        self._labels: dict = {}
        self._ann_ids: dict = {}
        dropped: list = []
        for img_id in sorted(self.coco.imgs):
            if img_id in exclude:
                continue
            img = self.coco.imgs[img_id]
            w, h = float(img.get("width", np.inf)), float(img.get("height", np.inf))
            anns = [a for a in self.coco.imgToAnns.get(img_id, [])
                    if not a.get("iscrowd", 0) and a.get("category_id") in self.category_id_to_label]
            xywh = np.array([a.get("bbox", [np.nan] * 4) for a in anns], dtype=np.float64).reshape(-1, 4)
            xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)  # (L, 4)
            xyxy = np.clip(xyxy, 0.0, [w, h, w, h])
            keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)  # NaN -> dropped
            dropped += [a["id"] for a, k in zip(anns, keep) if not k]
            if drop_empty and not keep.any():
                continue
            self.ids.append(img_id)
            self._boxes[img_id] = xyxy[keep].astype(np.float32)
            self._labels[img_id] = np.array([self.category_id_to_label[a["category_id"]] for a, k in zip(anns, keep) if k],
                                            dtype=np.int64)
            self._ann_ids[img_id] = [a["id"] for a, k in zip(anns, keep) if k]
        if self.masks:
            no_mask = [a for img_id in self.ids for a in self._ann_ids[img_id]
                       if not self.coco.anns[a].get("segmentation")]
            if no_mask:
                shown = ", ".join(map(str, no_mask[:5])) + (", ..." if len(no_mask) > 5 else "")
                raise DatasetError(
                    f"{self.annotation_file}: masks=True but {len(no_mask)} annotation(s) have no 'segmentation' "
                    f"(annotation ids {shown}); fix: add polygons or RLE to them, or train without masks (masks=False)"
                )
        self.num_dropped_boxes = len(dropped)
        if dropped:
            shown = ", ".join(map(str, dropped[:5])) + (", ..." if len(dropped) > 5 else "")
            warnings.warn(
                f"{self.annotation_file}: dropped {len(dropped)} box(es) under 1 px wide or high after clipping to "
                f"their image (annotation ids {shown}); fix or delete them if they are real objects",
                stacklevel=3,
            )

    def __len__(self) -> int:
        return len(self.ids)

    def image_path(self, index: int) -> Path:
        return safe_image_path(self.images_dir, self.coco.imgs[self.ids[index]]["file_name"])

    def label_to_category_id(self, labels: torch.Tensor) -> list:
        """Map contiguous labels (``1..num_classes-1``) back to the file's category ids."""
        return [self.category_ids[int(label) - 1] for label in labels]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        img_id = self.ids[index]
        path = self.image_path(index)
        try:
            array = load_rgb(path)  # (H, W, 3) uint8, upright
        except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... for broken files
            raise DatasetError(
                f"{self.annotation_file}: image id {img_id}: cannot decode {path} ({type(e).__name__}: {e}). Fix: "
                f"replace or remove the file (`python -m detector.data.check --full --images {self.images_dir} "
                f"--annotations {self.annotation_file}` lists every such file), or train without such images: "
                "`--data.skip_bad_images true` (skip_bad_images=True) finds and leaves them out before the first "
                "epoch, with a warning"
            ) from None
        h, w = array.shape[:2]
        image = tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())  # (H, W, 3) -> (3, H, W)
        boxes = np.clip(self._boxes[img_id], 0.0, [w, h, w, h]).astype(np.float32)
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor(self._labels[img_id]),  # a copy: transforms may edit it
            "image_id": img_id,
            "orig_size": (h, w),
        }
        if self.masks:
            anns = [self.coco.anns[a] for a in self._ann_ids[img_id]]
            stack = np.zeros((len(anns), h, w), dtype=np.uint8)
            for k, ann in enumerate(anns):  # every one has a segmentation (checked in __init__)
                with warnings.catch_warnings():  # pycocotools 2.0.x + numpy 2: a harmless copy= deprecation
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = self.coco.annToMask(ann)
                stack[k, : min(h, m.shape[0]), : min(w, m.shape[1])] = m[:h, :w]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stack))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255)
        target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
        return image.as_subclass(torch.Tensor), target

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.images_dir)!r}, {str(self.annotation_file)!r}: {len(self)} images, "
                f"{self.num_classes - 1} categories, masks={self.masks})")
