"""``model.init_from``: start a training from another run's weights (fine-tuning).

`init_from(model, config, path)` reads a local file and loads what fits into `model` through
`detector.models.transfer.transfer_weights` (non-strict: matching name and shape). Accepted:

- a checkpoint of ours (``train.py``'s ``.ckpt``, format 1 or 2): its ``state_dict`` under
  ``model.``; its backbone and ``fpn`` are read from its hyperparameters
  (`detector.checkpointing.module_hparams`), its category table from ``checkpoint["detector"]``;
- a torchvision detection state dict (``torch.save(fasterrcnn_resnet50_fpn(...).state_dict())``,
  or wrapped as ``{"model": ...}`` / ``{"state_dict": ...}`` as torchvision's reference scripts
  save it); for a single-level model its ResNet keys are renamed to ours
  (`detector.models.transfer.torchvision_to_ours`); an FPN model has torchvision's layout itself;
- our network's own state dict (``module.model.state_dict()``, or the module's, ``model.``-prefixed).

FPN. A model with ``model.detector.fpn: true`` takes a file of the same layout (an FPN
checkpoint of ours, a torchvision FPN detector). A checkpoint of ours whose ``fpn`` differs from
the model's, and a single-level state dict into an FPN model, are refused: almost nothing would
load. A torchvision FPN *state dict* into a single-level model stays accepted (its ResNet loads,
its pyramid is reported unused): that is how torchvision's detectors are fine-tuned here.

Categories. Label ``i`` of the class-specific predictor (`detector.models.transfer.CLASS_SPECIFIC`)
means the ``i``-th category of the file's table. The file's table and this run's
(``category_ids`` / ``category_names``) are compared: the same categories load; the same names in
another order (or under other ids) load with the rows moved to follow the names; where the tables
share only some names (COCO's 80 categories into a 'person, car, dog' dataset, of any class count),
the shared categories load their rows by name and the others are re-initialised (`detector.lit.category_match.shared_rows`,
`detector.models.transfer.select_classes`; an `InitFromWarning` when the class counts match,
since the same count suggests the same categories); with nothing shared the class rows are
re-initialised (a warning when the counts match). When either table is unknown (a state dict, a
checkpoint saved without one, no table given) and the counts match, the rows load as before, with
a warning that they could not be compared; with other counts they are re-initialised.

Read with ``torch.load(weights_only=True)`` (`detector.checkpointing.load_checkpoint`); a local
file only, never a download. Every refusal is an `InitFromError` naming ``model.init_from``.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from detector.checkpointing import DETECTOR_KEY, MODEL_PREFIX, load_checkpoint, module_hparams
from detector.lit.category_match import (
    Table,
    class_order,
    differences,
    examples,
    make_table,
    shared_clause,
    shared_rows,
)
from detector.models import DetectorConfig
from detector.models.transfer import (
    BackboneMismatch,
    TransferReport,
    describe_backbone,
    is_torchvision_layout,
    match_stride,
    num_classes_of,
    permute_classes,
    select_classes,
    torchvision_to_ours,
    transfer_weights,
)

KEY = "model.init_from"


class InitFromError(ValueError):
    """``model.init_from`` names no usable file; the message names the key, the file and the fix."""


class InitFromWarning(UserWarning):
    """``model.init_from`` loaded, but the class-specific rows deserve a look (categories differ or unknown)."""


@dataclass
class InitSource:
    """What `read_init_state` found in a file."""

    state: dict[str, torch.Tensor]  #: in our key names (torchvision's layout kept for an FPN model)
    kind: str  #: what the file is, for the printed line
    backbone: str  #: its backbone, as `describe_backbone` words it
    fpn: bool  #: its network has a feature pyramid
    checkpoint: bool  #: a train.py checkpoint (its ``fpn`` read from its hyperparameters, not guessed)
    categories: Table | None  #: its category table; None when the file stores none


def read_init_state(path: str, stride: int, fpn: bool = False) -> InitSource:
    """The weights of `path` in the key names of a model of `stride` / `fpn`, and what the file says about them."""
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
        source_fpn = bool(detector.get("fpn", False))  # format 1 predates fpn: single-level
        backbone = f"{detector.get('backbone')} stride {detector.get('stride')}{' + FPN' if source_fpn else ''}"
        record = data[DETECTOR_KEY] or {}
        return InitSource(state, f"checkpoint of ours ({int(detector.get('num_classes', 0))} classes)", backbone,
                          source_fpn, True, make_table(record.get("category_ids"), record.get("category_names")))
    if len(data) == 1 and next(iter(data)) in ("model", "state_dict") and isinstance(next(iter(data.values())), dict):
        data = next(iter(data.values()))  # torchvision's references save {"model": state_dict, ...}
    if not data or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise InitFromError(f"{where}: holds neither a checkpoint of train.py nor a state dict (a dict of "
                            f"tensors); its keys: {sorted(map(str, data))[:6]}")
    if all(k.startswith(MODEL_PREFIX) for k in data):  # DetectorModule.state_dict()
        data = {k[len(MODEL_PREFIX):]: v for k, v in data.items()}
    source_fpn = any(k.startswith("backbone.fpn.") for k in data)
    if is_torchvision_layout(data):
        # described at stride 32: torchvision's ResNet detectors keep layer4 in the backbone
        backbone = describe_backbone(torchvision_to_ours(data, 32))
        state = dict(data) if fpn else torchvision_to_ours(data, stride)  # an FPN model has this layout
        return InitSource(state, "torchvision detection state dict", backbone, source_fpn, False, None)
    return InitSource(dict(data), "state dict", describe_backbone(data), source_fpn, False, None)


def init_from(model: nn.Module, config: DetectorConfig, path: str, *, category_ids: Sequence[int] | None = None,
              category_names: Sequence[str] | None = None) -> tuple[TransferReport, str]:
    """Load what fits of `path` into `model` (see the module doc); ``(report, printable text)``.

    Args:
        model, config: the freshly built detector and its `DetectorConfig`.
        path: the file (``model.init_from``).
        category_ids, category_names: this run's category table (label ``i`` is ``category_ids[i - 1]``,
            as `DetectorModule` keeps it); None when unknown: the class rows then load uncompared.

    Raises:
        InitFromError: missing or unreadable file, not a state dict, another backbone, or another
            ``fpn`` than the model's (see the module doc).

    Warns:
        InitFromWarning: the class counts match but the categories differ (the class rows are
            re-initialised) or could not be compared (they load as they are).
    """
    path = os.fspath(path)
    where = f"{KEY}={path!r}"
    source = read_init_state(path, config.stride, config.fpn)
    model_backbone = f"{config.backbone} stride {config.stride}{' + FPN' if config.fpn else ''}"
    if source.fpn != config.fpn and (source.checkpoint or config.fpn):
        raise InitFromError(_fpn_message(where, source, model_backbone, config.fpn))
    state = match_stride(source.state, config.stride)  # a ResNet's C5: backbone at stride 32, box head at 16
    reinit, classes = False, ""
    ours, n_file = make_table(category_ids, category_names), num_classes_of(state)
    if n_file == config.num_classes:
        state, reinit, classes = _match_categories(state, source.categories, ours, where, source.checkpoint,
                                                   model.state_dict())
    elif n_file is not None and source.categories is not None and ours is not None \
            and len(source.categories) == n_file - 1 and (rows := shared_rows(source.categories, ours)) is not None:
        state = select_classes(state, model.state_dict(), rows)  # the shared categories keep their rows
        classes = f"; {n_file} -> {config.num_classes} classes: {shared_clause(rows, ours)}"
    try:
        report = transfer_weights(model, state, source=where, source_backbone=source.backbone,
                                  model_backbone=model_backbone, reinit_classes=reinit)
    except BackboneMismatch as err:
        raise InitFromError(str(err)) from None
    if report.source_classes is not None and report.source_classes != report.model_classes:
        classes = (f"; {report.source_classes} -> {report.model_classes} classes: the class-specific "
                   "predictor is re-initialised")
    text = (f"{KEY}: {path} ({source.kind}, {source.backbone}) -> model ({model_backbone}){classes}\n"
            f"{report.table()}")
    if any(k.endswith("running_mean") for k in state) and not any(k.endswith("running_mean") for k in model.state_dict()):
        text += (f"\nnote: the file's norm layers are BatchNorm, the model's are not (model.detector.norm="
                 f"{config.resolved_norm}): only their affine weights loaded; set model.detector.norm: frozen_bn "
                 "to keep the file's statistics")
    return report, text


def _match_categories(state: dict[str, torch.Tensor], source: Table | None, model: Table | None, where: str,
                      checkpoint: bool, fresh: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], bool, str]:
    """``(state, re-initialise the class rows?, clause for the printed line)`` for equal class counts
    (`fresh`: the model's own state, for the rows of categories the file lacks)."""
    if source is None or model is None:
        why = ("this run's category table was not given (no datamodule with category_ids)" if model is None else
               "the file stores no category table" + (" (a checkpoint saved without a datamodule that has "
                                                      "category_ids)" if checkpoint else " (a state dict)"))
        warnings.warn(
            f"{where}: the categories could not be compared: {why}. The class counts match, so the class-specific "
            "predictor loads as it is: label i keeps the category the file learned for label i. If this run's "
            "categories are other ones, or in another order, those rows score the wrong classes: fine-tune from a "
            "train.py checkpoint (it stores its category table), or check that the data's categories are the file's, "
            "in the same order", InitFromWarning, stacklevel=3)
        return state, False, "; categories not compared (no table): the class-specific predictor loaded as is"
    order = class_order(source, model)
    if order is None and (rows := shared_rows(source, model)) is not None:
        clause = shared_clause(rows, model)
        warnings.warn(
            f"{where}: the file's categories differ from this run's ({differences(source, model)}): {clause}; "
            "each row follows its category's name, so no row scores another category than the one it learned",
            InitFromWarning, stacklevel=3)
        return select_classes(state, fresh, rows), False, f"; categories differ: {clause}"
    if order is None:
        differ = differences(source, model)
        warnings.warn(
            f"{where}: the file's categories differ from this run's ({differ}), so its class-specific predictor "
            "(box_predictor.cls_score / bbox_pred, mask_predictor.mask_fcn_logits) is re-initialised, not loaded: "
            "otherwise label i would score this run's category i with the weights learned for the file's. Nothing to "
            "do to fine-tune on the new categories; to reuse the file's class weights, train on data with its "
            f"category table ({examples(source)})", InitFromWarning, stacklevel=3)
        return state, True, f"; categories differ ({differ}): the class-specific predictor is re-initialised"
    if order == sorted(order):
        same = [i for i, _ in source] == [i for i, _ in model]
        return state, False, "" if same else "; other category ids, same names: the class rows loaded by name"
    moved = [f"{model[j - 1][1]!r} {order[j]} -> {j}" for j in range(1, len(order)) if order[j] != j]
    return (permute_classes(state, order), False,
            f"; same categories in another order: the class rows follow the names (file label -> label: "
            f"{', '.join(moved[:3])}{', ...' if len(moved) > 3 else ''})")


def _fpn_message(where: str, source: InitSource, model_backbone: str, model_fpn: bool) -> str:
    def layout(fpn: bool) -> str:
        return "a feature pyramid (fpn: true)" if fpn else "one feature map (fpn: false)"

    return (f"{where}: the file ({source.kind}, {source.backbone}) has {layout(source.fpn)}, the model ({model_backbone}) "
            f"{layout(model_fpn)}: model.detector.fpn differs, and the backbone, RPN and box head of the two are laid "
            "out differently, so almost nothing would load. Fix: set model.detector.fpn: "
            f"{str(source.fpn).lower()} (as the file was trained), or init_from a file of a model with "
            f"model.detector.fpn: {str(model_fpn).lower()}")
