"""Detections in the frame of the image the model saw -> the frame of the annotation file.

The model's own ``GeneralizedRCNNTransform`` maps its outputs back to the size of the tensor it
was given. With a data-side resize (``data.min_size`` / ``data.max_size``, a
`detector.data.transforms` step) that tensor is *smaller or larger than the file*, while COCO's
ground truth, and every result a user writes, is in the file's pixels (``target["orig_size"]``).
Scoring resized-frame boxes against file-frame ground truth gives a wrong AP with no error (a
perfect detector scored AP 0 at ``min_size=50``), so every evaluation path calls
`to_annotation_frame` before making COCO results.

Boxes scale per axis by ``orig / input`` (torchvision's ``resize_boxes``, what its own
``postprocess`` does); mask probabilities are resized bilinearly (``align_corners=False``: pixel
centres map to pixel centres) and thresholded afterwards, so a mask is cut at 0.5 in the
file's pixels, not upsampled as a blocky binary image. Without a resize the output is returned
unchanged (the same objects: no copy, no rounding).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torchvision.models.detection.transform import resize_boxes


def to_annotation_frame(output: Mapping[str, torch.Tensor], input_size: Sequence[int],
                        orig_size: Sequence[int]) -> Mapping[str, torch.Tensor]:
    """One image's detector output with ``boxes`` (and ``masks``) moved from `input_size` to `orig_size`.

    Args:
        output: ``{"boxes": (K, 4) xyxy, "labels", "scores", optional "masks": (K, 1, H, W)}`` in the
            frame of the model's input image, as torchvision's detectors return it.
        input_size: ``(H, W)`` of the image tensor given to the model.
        orig_size: ``(height, width)`` of the file (``target["orig_size"]``).
    """
    input_size = (int(input_size[0]), int(input_size[1]))
    orig_size = (int(orig_size[0]), int(orig_size[1]))
    if input_size == orig_size:
        return output
    moved = dict(output)
    moved["boxes"] = resize_boxes(output["boxes"], list(input_size), list(orig_size))
    masks = output.get("masks")
    if masks is not None:
        if len(masks):
            moved["masks"] = F.interpolate(masks.float(), size=orig_size, mode="bilinear", align_corners=False)
        else:
            moved["masks"] = masks.new_zeros((0, 1, *orig_size))
    return moved
