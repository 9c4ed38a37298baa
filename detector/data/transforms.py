"""Training and evaluation transforms (torchvision transforms v2 on tv_tensors).

Geometry is applied to the image, ``BoundingBoxes`` and ``Mask`` together by torchvision,
so boxes and masks follow the pixels exactly. Options are plain typed values in
:class:`TransformConfig` so they can be YAML keys of the DataModule.

Default: **no resize**. The detector resizes internally and maps its detections back to
the coordinates of the image it was given, so resizing here only pays off for huge images
(less to decode and ship between processes); when it is used, ``target["orig_size"]``
tells the evaluator the annotation file's frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


@dataclass(frozen=True)
class TransformConfig:
    """What :func:`build_transforms` does.

    Attributes:
        hflip_prob: probability of a horizontal flip (training only).
        brightness, contrast, saturation, hue: ``ColorJitter`` strengths (training only;
            0 disables each). Hue costs the most CPU, hence off by default.
        min_size: resize so the shorter side is ``min_size`` (train and eval); None = no resize.
        max_size: with ``min_size``, a cap on the longer side (must be larger than ``min_size``);
            alone, every image is resized so its longer side is ``max_size``.
    """

    hflip_prob: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0
    min_size: int | None = None
    max_size: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob={self.hflip_prob} must lie in [0, 1]")
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0 disables it)")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"hue={self.hue} must lie in [0, 0.5]")
        if self.min_size is not None and self.min_size < 1:
            raise ValueError(f"min_size={self.min_size} must be a positive number of pixels, or None for no resize")
        if self.max_size is not None and (self.max_size < 1 or (self.min_size is not None and self.max_size <= self.min_size)):
            raise ValueError(f"max_size={self.max_size} must be positive and larger than min_size={self.min_size} "
                             "(or None for no cap)")


def _resize(cfg: TransformConfig) -> list:
    if cfg.min_size is None and cfg.max_size is None:
        return []
    if cfg.min_size is None:
        return [v2.Resize(size=None, max_size=cfg.max_size)]  # longer side -> max_size
    return [v2.Resize(size=cfg.min_size, max_size=cfg.max_size)]  # shorter side -> min_size


def build_transforms(train: bool, cfg: TransformConfig | None = None) -> v2.Compose:
    """The pipeline for one split: ``(Image uint8, target) -> (Image float32 in [0, 1], target)``.

    Train: [resize] -> horizontal flip -> float -> colour jitter. Eval: [resize] -> float.
    Resizing can shrink a box below 1 px; ``SanitizeBoundingBoxes`` then removes it together
    with its label and mask.
    """
    cfg = cfg or TransformConfig()
    steps = _resize(cfg)
    if train and cfg.hflip_prob > 0:
        steps.append(v2.RandomHorizontalFlip(cfg.hflip_prob))
    # Jitter after the float conversion: a little faster than on uint8 and without rounding.
    steps.append(v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True))
    if train and (cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue):
        steps.append(v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue))
    if _resize(cfg):
        steps.append(v2.SanitizeBoundingBoxes(min_size=1.0))
    return v2.Compose(steps)
