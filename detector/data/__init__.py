"""COCO-style data: checked loading, transforms, the LightningDataModule and the synthetic dataset.

Public names (imported lazily, so ``python -m detector.data.synthetic`` and the generator's
worker processes do not pay for importing torch and Lightning):

- :class:`CocoDetection`, :class:`DetectionDataModule`, :func:`detection_collate`
- :class:`AnnotationStore` (the dataset's compact, fork-shareable annotations)
- :func:`check_coco`, :class:`CheckReport`, :class:`DatasetError`
- :class:`TransformConfig`, :func:`build_transforms`
- :func:`generate_synthetic_coco`, :func:`ensure_synthetic_coco`, :data:`SHAPES`
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "CocoDetection": "detector.data.coco",
    "AnnotationStore": "detector.data.store",
    "DetectionDataModule": "detector.data.datamodule",
    "detection_collate": "detector.data.datamodule",
    "check_coco": "detector.data.check",
    "CheckReport": "detector.data.check_report",
    "DatasetError": "detector.data.check_report",
    "load_coco_json": "detector.data.check",
    "TransformConfig": "detector.data.transforms",
    "build_transforms": "detector.data.transforms",
    "generate_synthetic_coco": "detector.data.synthetic",
    "ensure_synthetic_coco": "detector.data.synthetic",
    "SHAPES": "detector.data.shapes",
    "load_rgb": "detector.data.images",
    "read_header": "detector.data.images",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detector.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
