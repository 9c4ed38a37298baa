"""Run a detector over a loader and keep COCO results per image: the evaluation's one inference loop.

`batch_results` turns one batch of detector outputs into COCO result dicts, keyed by the
dataset's image id; the Lightning module's ``validation_step`` and `detect` (evaluate.py's
loop, plain PyTorch) both use it, so a validation during training and an evaluation of the
saved checkpoint produce the same records from the same outputs.

`detect` runs in eval mode under ``torch.inference_mode`` on one device, optionally under
autocast (`autocast_dtype`: ``bfloat16`` / ``float16``; ``None`` = float32, evaluate.py's
default). Batches come from the loader as they are: batch composition decides the padding
inside torchvision's ``GeneralizedRCNNTransform``, so the same loader gives the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from detector.evaluation.coco_eval import to_coco_results
from detector.evaluation.frame import to_annotation_frame

PerImage = dict[int, list[dict[str, Any]]]

#: evaluate.py's ``--precision`` values and the autocast dtype each means (None: float32). Lightning's
#: spellings are accepted too, so a run's ``trainer.precision`` can be passed on unchanged.
PRECISIONS: dict[str, torch.dtype | None] = {
    "32": None, "32-true": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16,
    "16": torch.float16, "16-mixed": torch.float16,
}


def batch_results(images: Sequence[torch.Tensor], targets: Sequence[Mapping[str, Any]],
                  outputs: Sequence[Mapping[str, torch.Tensor]], category_ids: Sequence[int], masks: bool) -> PerImage:
    """``{image_id: [COCO result, ...]}`` for one batch (an image without detections maps to ``[]``).

    `images` are the tensors the model was given: with a data-side resize their size differs
    from the file's (``target["orig_size"]``), and each output is moved back to the file's
    pixels first (`detector.evaluation.frame`), the frame of the ground truth. A target without
    ``orig_size`` is taken to be in the frame of its image.
    """
    results: PerImage = {}
    for image, target, output in zip(images, targets, outputs):
        size = tuple(image.shape[-2:])  # (C, H, W) -> (H, W)
        output = to_annotation_frame(output, size, target.get("orig_size", size))
        results[int(target["image_id"])] = to_coco_results(int(target["image_id"]), output, category_ids, masks=masks)
    return results


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; anything else as torch reads it.

    Raises ValueError for a CUDA device on a machine without one (instead of a late crash).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device torch knows ({err}); use auto, cpu or cuda[:N]") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name!r}: this machine has no CUDA GPU; use --device cpu (or auto)")
    return device


def detect(model: nn.Module, batches: Iterable[tuple[Sequence[torch.Tensor], Sequence[Mapping[str, Any]]]],
           category_ids: Sequence[int], *, masks: bool = False, device: torch.device | str = "cpu",
           autocast_dtype: torch.dtype | None = None, progress: bool = False, total: int | None = None,
           description: str = "detect") -> PerImage:
    """Detections of `model` for every image of `batches` (``(images, targets)`` pairs), per image id.

    The model is moved to `device` and put in eval mode (its training flag is restored after).
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    per_image: PerImage = {}
    try:
        autocast = nullcontext() if autocast_dtype is None else torch.autocast(device.type, dtype=autocast_dtype)
        with torch.inference_mode(), autocast:
            for images, targets in tqdm(batches, desc=description, total=total, disable=None if progress else True, leave=False):  # None: off when not a terminal
                outputs = model([image.to(device, non_blocking=True) for image in images])
                per_image.update(batch_results(images, targets, outputs, category_ids, masks))
    finally:
        model.train(was_training)
    return per_image
