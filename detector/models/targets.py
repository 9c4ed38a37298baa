"""Checks on training inputs, run before the forward.

torchvision checks some of this deep inside the forward, after resizing, with
`torch._assert` (an AssertionError, or nothing at all for labels out of range, which
silently index the wrong row of the class scores or crash in a CUDA kernel). Here every
problem is a `ValueError` that names the image's index in the batch, what is wrong, and
how to fix it, in the original image coordinates the user passed.
"""

from __future__ import annotations

import torch


def _where(index: int) -> str:
    return f"targets[{index}] (image {index} of the batch)"


def validate_images(images: object) -> None:
    """`images` must be a list of float `Tensor[3, H, W]`."""
    if not isinstance(images, (list, tuple)) or not images:
        raise ValueError(f"images must be a non-empty list of Tensor[3, H, W], got {type(images).__name__}")
    for i, img in enumerate(images):
        if not isinstance(img, torch.Tensor) or img.dim() != 3 or img.shape[0] != 3:
            shape = tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
            raise ValueError(f"images[{i}] must be a Tensor[3, H, W] (RGB, channels first), got {shape}")
        if not img.is_floating_point():
            raise ValueError(f"images[{i}] must be float in [0, 1], got dtype {img.dtype}: use img.float() / 255")


def validate_targets(images: list[torch.Tensor], targets: object, num_classes: int, need_masks: bool) -> None:
    """Raise `ValueError` naming the first bad image, for training targets.

    Contract per image i (torchvision's detection format):
        boxes: float `Tensor[L, 4]`, (x1, y1, x2, y2) in pixels, finite, x2 > x1 and y2 > y1;
            an image with no objects has `torch.zeros((0, 4))`.
        labels: int64 `Tensor[L]` in [1, num_classes) (0 is the background class).
        masks (when the model has a mask head): `Tensor[L, H, W]` of the image's H, W.
    """
    if targets is None:
        raise ValueError("training needs targets: a list of dicts with 'boxes' and 'labels', one per image")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list with one dict per image: {len(images)} images, got {n}")
    for i, (img, t) in enumerate(zip(images, targets)):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"{_where(i)} must be a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if not isinstance(boxes, torch.Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, torch.Tensor) else type(boxes).__name__
            raise ValueError(
                f"{_where(i)}['boxes'] must be a Tensor[L, 4] (x1, y1, x2, y2), got {shape}; "
                "an image with no objects takes torch.zeros((0, 4))"
            )
        if not boxes.is_floating_point():
            raise ValueError(f"{_where(i)}['boxes'] must be float, got {boxes.dtype}: use boxes.float()")
        if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
            shape = tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ValueError(f"{_where(i)}['labels'] must be a Tensor[{boxes.shape[0]}] (one per box), got {shape}")
        if labels.dtype != torch.int64:
            raise ValueError(f"{_where(i)}['labels'] must be int64, got {labels.dtype}: use labels.long()")
        if labels.numel():
            bad = (labels < 1) | (labels >= num_classes)
            if bad.any():
                j = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"{_where(i)}['labels'][{j}] = {int(labels[j])} is outside [1, {num_classes}): label 0 is the "
                    f"background and num_classes={num_classes} counts it; remap labels or raise num_classes"
                )
        if boxes.numel():
            finite = torch.isfinite(boxes).all(dim=1)
            if not finite.all():
                j = int((~finite).nonzero()[0, 0])
                raise ValueError(f"{_where(i)}['boxes'][{j}] = {boxes[j].tolist()} is not finite: drop or fix that box")
            degenerate = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
            if degenerate.any():
                j = int(degenerate.nonzero()[0, 0])
                raise ValueError(
                    f"{_where(i)}['boxes'][{j}] = {boxes[j].tolist()} is degenerate (needs x2 > x1 and y2 > y1, "
                    "boxes are (x1, y1, x2, y2), not (x, y, w, h)): drop it or convert the format"
                )
        if need_masks:
            masks = t.get("masks")
            expected = (boxes.shape[0], img.shape[-2], img.shape[-1])
            if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != expected:
                shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
                raise ValueError(
                    f"{_where(i)}['masks'] must be a Tensor{list(expected)} (one mask per box, image-sized) "
                    f"for the mask head, got {shape}; an image with no objects takes "
                    f"torch.zeros((0, {img.shape[-2]}, {img.shape[-1]}), dtype=torch.uint8)"
                )
