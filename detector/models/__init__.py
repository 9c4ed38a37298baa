"""Faster / Mask R-CNN with a swappable ROI layer on VGG16 / ResNet at stride 16 or 32.

Public API:
    DetectorConfig   typed dataclass describing a detector (validated on creation)
    build_detector   DetectorConfig -> TwoStageDetector (torchvision detection I/O)

Building blocks, for tests and for users who inject their own parts:
    build_backbone, Backbone, SingleLevelRoIPooler, Res5Head, TwoStageDetector,
    validate_targets
"""

from .backbones import Backbone, build_backbone
from .config import DetectorConfig
from .detector import TwoStageDetector, build_detector
from .heads import Res5Head, SingleLevelRoIPooler
from .targets import validate_images, validate_targets

__all__ = [
    "Backbone",
    "DetectorConfig",
    "Res5Head",
    "SingleLevelRoIPooler",
    "TwoStageDetector",
    "build_backbone",
    "build_detector",
    "validate_images",
    "validate_targets",
]
