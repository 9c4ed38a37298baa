"""``model.init_from``: start a training from another run's weights (fine-tuning).

`init_from(model, config, path)` reads a local file and loads what fits into `model` through
`detector.models.transfer.transfer_weights` (non-strict: matching name and shape). Accepted:

- a checkpoint of ours (``train.py``'s ``.ckpt``, format 1 or 2): its ``state_dict`` under
  ``model.``; its backbone is read from its hyperparameters (`detector.checkpointing.module_hparams`);
- a torchvision detection state dict (``torch.save(fasterrcnn_resnet50_fpn(...).state_dict())``,
  or wrapped as ``{"model": ...}`` / ``{"state_dict": ...}`` as torchvision's reference scripts
  save it); its ResNet keys are renamed to ours (`detector.models.transfer.torchvision_to_ours`);
- our network's own state dict (``module.model.state_dict()``, or the module's, ``model.``-prefixed).

Read with ``torch.load(weights_only=True)`` (`detector.checkpointing.load_checkpoint`); a local
file only, never a download. Every problem is an `InitFromError` naming ``model.init_from``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from detector.checkpointing import DETECTOR_KEY, MODEL_PREFIX, load_checkpoint, module_hparams
from detector.models import DetectorConfig
from detector.models.transfer import (
    BackboneMismatch,
    TransferReport,
    describe_backbone,
    is_torchvision_layout,
    match_stride,
    torchvision_to_ours,
    transfer_weights,
)

KEY = "model.init_from"


class InitFromError(ValueError):
    """``model.init_from`` names no usable file; the message names the key, the file and the fix."""


def read_init_state(path: str, stride: int) -> tuple[dict[str, torch.Tensor], str, str]:
    """``(state dict in our key names, what the file is, its backbone)`` of `path`."""
    where = f"{KEY}={path!r}"
    if not os.path.isfile(path):
        raise InitFromError(f"{where}: no such file (a local .ckpt of train.py or a torchvision detection "
                            "state dict; nothing is downloaded)")
    try:
        data: Any = load_checkpoint(path)
    except ValueError as err:
        raise InitFromError(f"{where}: {err}") from None
    if "state_dict" in data and "hyper_parameters" in data and DETECTOR_KEY in data:  # a train.py checkpoint
        try:
            detector = module_hparams(data["hyper_parameters"], where=where)["detector"]
        except ValueError as err:
            raise InitFromError(str(err)) from None
        state = {k[len(MODEL_PREFIX):]: v for k, v in data["state_dict"].items() if k.startswith(MODEL_PREFIX)}
        backbone = f"{detector.get('backbone')} stride {detector.get('stride')}"
        return state, f"checkpoint of ours ({int(detector.get('num_classes', 0))} classes)", backbone
    if len(data) == 1 and next(iter(data)) in ("model", "state_dict") and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))  # torchvision's references save {"model": state_dict, ...}
    if not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InitFromError(f"{where}: holds neither a checkpoint of train.py nor a state dict (a dict of "
                            f"tensors); its keys: {sorted(map(str, data))[:6]}")
    if all(k.startswith(MODEL_PREFIX) for k in data):  # DetectorModule.state_dict()
        data = {k[len(MODEL_PREFIX):]: v for k, v in data.items()}
    if is_torchvision_layout(data):
        # described at stride 32: torchvision's ResNet detectors keep layer4 in the backbone
        return torchvision_to_ours(data, stride), "torchvision detection state dict", describe_backbone(
            torchvision_to_ours(data, 32))
    return dict(data), "state dict", describe_backbone(data)


def init_from(model: nn.Module, config: DetectorConfig, path: str) -> tuple[TransferReport, str]:
    """Load what fits of `path` into `model` (see the module doc); ``(report, printable text)``.

    Raises:
        InitFromError: missing or unreadable file, not a state dict, or another backbone.
    """
    state, kind, source_backbone = read_init_state(os.fspath(path), config.stride)
    state = match_stride(state, config.stride)  # a ResNet's C5: backbone at stride 32, box head at 16
    model_backbone = f"{config.backbone} stride {config.stride}"
    try:
        report = transfer_weights(model, state, source=f"{KEY}={path!r}", source_backbone=source_backbone,
                                  model_backbone=model_backbone)
    except BackboneMismatch as err:
        raise InitFromError(str(err)) from None
    classes = ""
    if report.source_classes is not None and report.source_classes != report.model_classes:
        classes = (f"; {report.source_classes} -> {report.model_classes} classes: the class-specific "
                   "predictor is re-initialised")
    text = (f"{KEY}: {path} ({kind}, {source_backbone}) -> model ({model_backbone}){classes}\n"
            f"{report.table()}")
    if any(k.endswith("running_mean") for k in state) and not any(k.endswith("running_mean") for k in model.state_dict()):
        text += (f"\nnote: the file's norm layers are BatchNorm, the model's are not (model.detector.norm="
                 f"{config.resolved_norm}): only their affine weights loaded; set model.detector.norm: frozen_bn "
                 "to keep the file's statistics")
    return report, text
