"""COCO-style detection dataset: any instances JSON + image folder, held in a compact store.

What it adds to ``torchvision.datasets.CocoDetection``: targets ready for the detector
(xyxy boxes, contiguous labels, optional masks), the dataset check before anything trains,
and the data-cleaning rules that real folders need (see :class:`CocoDetection`). The parsed
JSON is dropped once built: images and annotations live in numpy arrays
(:class:`~detector.data.store.AnnotationStore`), which forked DataLoader workers share
instead of copying page by page; pycocotools' own index is built only on request (``.coco``).
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset
from torchvision import tv_tensors

from detector.data.check import (
    FULL_CHECK_MAX_IMAGES,
    KINDS,
    DatasetError,
    Issue,
    check_coco,
    check_image_files,
    load_coco_json,
)
from detector.data.columns import AnnotationColumns, int_ids
from detector.data.images import SWAPS_WIDTH_AND_HEIGHT, exif_orientation, load_rgb, safe_image_path
from detector.data.store import AnnotationStore

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
    - images without (remaining) annotations are kept as negatives unless ``drop_empty``;
    - an image whose decoded (upright) size is not the JSON's ``width`` x ``height`` raises a
      :class:`~detector.data.check.DatasetError` naming the file and both sizes when it is read,
      whatever ``check`` says: its boxes would sit on the wrong pixels (a missing or non-numeric
      size, possible with ``check=False``, is not compared).

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
        header_cache: where the check remembers each file's header (and decoding) by file size +
            mtime, so a rebuild (the next run, every DDP rank) reads only changed files: None
            (default) ``$DETECTOR_CACHE/headers`` for 1000 images or more, a folder, or False
            (see :mod:`detector.data.header_cache`).

    Memory: once built, the dataset holds no Python object per image or annotation
    (``store``, an :class:`~detector.data.store.AnnotationStore`: numpy arrays, about 60
    bytes per annotation), so forked DataLoader workers keep sharing its pages over an epoch.
    ``ids`` builds a list on each call; ``coco`` (pycocotools' index of the file) is built
    only when asked for.

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
        header_cache: str | os.PathLike | bool | None = None,
    ) -> None:
        self.images_dir = Path(images_dir)
        self.annotation_file = Path(annotation_file)
        self.transforms = transforms
        self.masks = masks
        self.skip_bad_images = skip_bad_images
        data = load_coco_json(self.annotation_file)
        records = data.get("images") if isinstance(data.get("images"), list) else []
        bad: list[Issue] = []
        anns = data.get("annotations")
        columns = AnnotationColumns.extract(anns) if isinstance(anns, list) else None  # for the check and the store
        if check:
            decode = skip_bad_images or (len(records) <= FULL_CHECK_MAX_IMAGES if full_check is None else full_check)
            report = check_coco(self.images_dir, self.annotation_file, data=data, decode=decode, masks=masks,
                                header_cache=header_cache, columns=columns)
            if skip_bad_images:
                bad = [i for i in report.issues if i.kind in _SKIPPABLE]
                report.issues = [i for i in report.issues if i.kind not in _SKIPPABLE]
            if not report.ok:
                raise DatasetError(report.format(kinds={i.kind for i in report.errors}), report)
            if any(i.kind in _REPEATED_WARNINGS for i in report.warnings):
                warnings.warn(report.format(max_per_kind=3, kinds=_REPEATED_WARNINGS), stacklevel=2)
        elif skip_bad_images:
            usable = [r for r in records if isinstance(r, dict) and "id" in r and "file_name" in r]
            bad = [i for i in check_image_files(self.images_dir, self.annotation_file.name, usable, decode=True,
                                                header_cache=header_cache) if i.kind in _SKIPPABLE]
        self.skipped_image_ids: list = [i.image_id for i in bad]
        if bad:
            listed = "\n".join(f"  image id {i.image_id}: {i.message}" for i in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            warnings.warn(
                f"{self.annotation_file}: left out {len(bad)} image(s) whose file is missing or cannot be decoded "
                f"(skip_bad_images=True); their annotations are neither trained on nor evaluated:\n{listed}{more}",
                stacklevel=2,
            )
        if not check or columns is None or any(c is None for c in (columns.ids, columns.image_ids, columns.category_ids)):
            _require_int_ids(data, self.annotation_file, self.images_dir)  # the check refused the rest
        cats = {c["id"]: c for c in data.get("categories") or []}  # duplicates: the last wins, as in pycocotools
        self.category_ids: list = sorted(cats)
        self.category_names: list[str] = [str(cats[c].get("name", c)) for c in self.category_ids]
        self.category_id_to_label: dict = {c: i + 1 for i, c in enumerate(self.category_ids)}
        self.num_classes = len(self.category_ids) + 1
        self.store, dropped = AnnotationStore.from_coco(data, self.category_ids, exclude=set(self.skipped_image_ids),
                                                        drop_empty=drop_empty, segmentations=masks, columns=columns)
        del data, records, anns, columns  # the parsed JSON goes now: the store holds what items need
        self._category_array = np.asarray(self.category_ids, dtype=np.int64)  # sorted: labels by searchsorted
        if masks:
            self._refuse_missing_segmentations()
        self.num_dropped_boxes = len(dropped)
        if len(dropped):
            shown = ", ".join(map(str, dropped[:5].tolist())) + (", ..." if len(dropped) > 5 else "")
            warnings.warn(
                f"{self.annotation_file}: dropped {len(dropped)} box(es) under 1 px wide or high after clipping to "
                f"their image (annotation ids {shown}); fix or delete them if they are real objects",
                stacklevel=2,
            )

    def _refuse_missing_segmentations(self) -> None:
        """masks=True: every target needs a segmentation (a falsy one, e.g. ``[]``, is held as empty)."""
        store = self.store
        rows = np.flatnonzero(store.target & (np.diff(store.segm_offsets) == 0))
        missing = self.store.ann_ids[rows].tolist()
        if missing:
            shown = ", ".join(map(str, missing[:5])) + (", ..." if len(missing) > 5 else "")
            raise DatasetError(
                f"{self.annotation_file}: masks=True but {len(missing)} annotation(s) have no 'segmentation' "
                f"(annotation ids {shown}); fix: add polygons or RLE to them, or train without masks (masks=False)"
            )

    @property
    def ids(self) -> list:
        """The image ids in item order (a new list per call: the store holds them as ``int64[N]``)."""
        return self.store.image_ids.tolist()

    @functools.cached_property
    def coco(self) -> COCO:
        """pycocotools' index of the untouched annotation file, built on first use.

        Not used by the dataset itself: it costs the memory the store saves (see
        :mod:`detector.data.store`), so build it only where pycocotools is needed.
        """
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            return COCO(str(self.annotation_file))

    def __len__(self) -> int:
        return len(self.store)

    def image_path(self, index: int) -> Path:
        return safe_image_path(self.images_dir, self.store.file_name(index))

    def label_to_category_id(self, labels: torch.Tensor) -> list:
        """Map contiguous labels (``1..num_classes-1``) back to the file's category ids."""
        return [self.category_ids[int(label) - 1] for label in labels]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict]:
        store = self.store
        img_id = int(store.image_ids[index])
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
        stated_w, stated_h = store.widths[index], store.heights[index]  # the JSON's (NaN/inf: not stated)
        if (w != stated_w or h != stated_h) and np.isfinite(stated_w) and np.isfinite(stated_h):
            raise self._size_mismatch(img_id, path, (w, h), (float(stated_w), float(stated_h)))
        image = tv_tensors.Image(torch.from_numpy(array).permute(2, 0, 1).contiguous())  # (H, W, 3) -> (3, H, W)
        rows = store.target_rows(index)  # (L,)
        boxes = np.clip(store.target_boxes(index), 0.0, [w, h, w, h]).astype(np.float32)  # (L, 4)
        labels = np.searchsorted(self._category_array, store.category_ids[rows]) + 1  # (L,) int64
        target = {
            "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes), format="XYXY", canvas_size=(h, w)),
            "labels": torch.from_numpy(labels.astype(np.int64)),  # a new array: transforms may edit it
            "image_id": img_id,
            "orig_size": (h, w),
        }
        if self.masks:
            stack = np.zeros((len(rows), h, w), dtype=np.uint8)
            size = (int(store.heights[index]), int(store.widths[index]))  # the JSON's frame, as annToMask uses
            for k, row in enumerate(rows):  # every one has a segmentation (checked in __init__)
                m = segmentation_to_mask(store.segmentation(row), *size)
                stack[k, : min(h, m.shape[0]), : min(w, m.shape[1])] = m[:h, :w]
            target["masks"] = tv_tensors.Mask(torch.from_numpy(stack))
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        if image.dtype == torch.uint8:
            image = image.to(torch.float32).div_(255)
        target = {k: v.as_subclass(torch.Tensor) if isinstance(v, torch.Tensor) else v for k, v in target.items()}
        return image.as_subclass(torch.Tensor), target

    def _size_mismatch(self, img_id: int, path: Path, size: tuple[int, int],
                       stated: tuple[float, float]) -> DatasetError:
        """The error for a decoded image whose ``(width, height)`` is not the JSON's ``stated`` one.

        Why check every item, after the build's check: boxes are in the JSON's frame, so a
        different decoded size puts them on the wrong pixels and the AP is silently wrong. The
        build's check cannot see every case: ``check=False``; a header-only check (over
        :data:`~detector.data.check.FULL_CHECK_MAX_IMAGES` images) of a PNG whose EXIF chunk
        follows its pixels (turned only when decoded); a file replaced after the build, or with its
        size and mtime kept, which the header cache trusts. The test costs two comparisons of a
        size known after decoding anyway; only this error path opens the file again, to say
        whether its EXIF orientation explains the difference.
        """
        (w, h), (sw, sh) = size, stated
        try:
            with Image.open(path) as im:
                im.load()  # a PNG's eXIf chunk may follow its pixels, where a header read misses it
                orientation, (rw, rh) = exif_orientation(im), im.size
        except Exception:  # noqa: BLE001 - the file just decoded; if it fails now, say less
            orientation, rw, rh = 1, w, h
        kind, exif = "size-mismatch", ""
        if orientation != 1:
            exif = f" (EXIF orientation {orientation}: raw pixels {rw}x{rh}, turned upright when decoded)"
            if orientation in SWAPS_WIDTH_AND_HEIGHT and (sw, sh) == (rw, rh):
                kind = "exif-size-mismatch"
        return DatasetError(
            f"{self.annotation_file}: image id {img_id}: the JSON says width={sw:g}, height={sh:g} but {path} "
            f"decodes to {w}x{h}{exif}, so its boxes would land on the wrong pixels. Fix: {KINDS[kind][2]}; or, if "
            f"the file was replaced after annotating, put back the image the boxes were drawn on (`python -m "
            f"detector.data.check --full --images {self.images_dir} --annotations {self.annotation_file}` lists "
            "every such image)"
        )

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({str(self.images_dir)!r}, {str(self.annotation_file)!r}: {len(self)} images, "
                f"{self.num_classes - 1} categories, masks={self.masks})")


def segmentation_to_mask(segmentation: object, height: int, width: int) -> np.ndarray:
    """``uint8[height, width]`` of a COCO segmentation, exactly as pycocotools' ``COCO.annToMask``.

    Polygons (merged into one mask), uncompressed RLE (``counts`` a list) and compressed RLE
    are read the same way ``annToRLE`` reads them, with the image size from the JSON.
    """
    with warnings.catch_warnings():  # pycocotools 2.0.x + numpy 2: a harmless copy= deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        if isinstance(segmentation, list):
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        return mask_utils.decode(rle)


def _require_int_ids(data: dict, annotation_file: Path, images_dir: Path) -> None:
    """The store's one demand on an unchecked file (``check=False``): lists of records with int ids.

    Raises:
        DatasetError: naming the file, the first record at fault and the key, with the fix.
    """
    for key, fields in (("images", ("id",)), ("annotations", ("id", "image_id", "category_id")),
                        ("categories", ("id",))):
        records = data.get(key, [])
        if not isinstance(records, list):
            problem = f"{key!r} is not a list"
        else:
            bad = [f for f in fields if int_ids(records, f) is None]
            problem = next((f"{key}[{i}] has no integer {f!r} (got {_shown(r, f)})" for f in bad
                            for i, r in enumerate(records)
                            if not isinstance(r, dict) or type(r.get(f)) is not int), None)
            if bad and problem is None:
                problem = f"{key} have {bad[0]!r} values beyond the 64-bit integer range"
        if problem:
            raise DatasetError(
                f"{annotation_file}: cannot index it: {problem}; fix: give every record its integer ids (run "
                f"`python -m detector.data.check --images {images_dir} --annotations {annotation_file}` "
                "for a full report)"
            )


def _shown(record: object, key: str) -> str:
    if not isinstance(record, dict):
        return f"a {type(record).__name__}, not an object"
    return f"{record[key]!r:.40}" if key in record else "<missing>"
