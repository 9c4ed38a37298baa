"""`DetectorConfig`: every choice that defines a detector, as plain typed values.

Plain values (strings, ints, tuples, a small options dict) and no built modules, so the
same object can come from YAML through LightningCLI, appear in `--help`, be stored by
`save_hyperparameters()` and rebuild the identical model with `build_detector(cfg)`.

Fields left at `None` mean "the sensible default for the rest of this config"; the
`resolved_*` properties compute those defaults in one place, so the builder and the
user read the same numbers. `spatial_scale` is never a field: it is `1 / stride`.

The ROI layer is named, not enumerated: `roi_op` is any key of the ROI variant table
(`detector.ops.ROI_OPS`, which plugins extend), and `roi_options` are checked and completed
by that table's entry (`RoiOpSpec.resolve_options`), so a typo in a YAML file fails when the
config is read, with the same rule the op itself applies, not inside the first forward.

This class is the one declaration of the detector's settings: `DetectorModule` takes it
whole (``model.detector.*`` in YAML and on the command line) and checkpoints store
`to_dict()`; `from_dict` reads that back.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from detector.ops import ROI_OPS, get_roi_op

BACKBONES = ("vgg16", "resnet18", "resnet34", "resnet50")
STRIDES = (16, 32)
BOX_HEADS = ("mlp", "res5")
#: With ``fpn``: the RPN's anchor size per level P2..P6 (torchvision's FPN default).
FPN_ANCHOR_SIZES = (32, 64, 128, 256, 512)
NORMS = ("frozen_bn", "bn", "gn")


def torchvision_weight_names(backbone: str) -> tuple[str, ...]:
    """Names accepted as `weights=` for `backbone` besides a file path (e.g. "DEFAULT")."""
    from torchvision.models import get_model_weights

    enum = get_model_weights(backbone)
    return ("DEFAULT",) + tuple(w.name for w in enum)


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"DetectorConfig.{name}={value!r} is invalid: expected {allowed}.")


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        rng = f">= {low}" if high is None else f"in [{low}, {high}]"
        _fail(name, value, f"an int {rng}")


def _check_fraction(name: str, value: Any, closed_low: bool = True) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (0.0 <= value <= 1.0 if closed_low else 0.0 < value <= 1.0)
    if not ok:
        _fail(name, value, "a float in [0, 1]" if closed_low else "a float in (0, 1]")


@dataclass
class DetectorConfig:
    """A two-stage detector (Faster R-CNN, or Mask R-CNN with `mask=True`).

    Example:
        >>> from detector.models import DetectorConfig, build_detector
        >>> cfg = DetectorConfig(backbone="resnet18", stride=32, num_classes=3, roi_op="roi_pool", min_size=128, max_size=192)
        >>> model = build_detector(cfg)  # random init; nothing is downloaded
    """

    # --- backbone ------------------------------------------------------------------
    backbone: Literal["vgg16", "resnet18", "resnet34", "resnet50"] = "resnet18"
    stride: Literal[16, 32] = 32
    """32: VGG16 through pool5 / ResNet through C5 (the slides). 16: VGG16 conv5_3 /
    ResNet through C4, with C5 as the ROI box head (Faster R-CNN C4)."""
    weights: str | None = None
    """None = random init; a path = a local state-dict file of the torchvision
    classification model (strict load); "DEFAULT" / "IMAGENET1K_V1" ... = download through
    torchvision, only when asked, with a clear error if the network refuses."""
    norm: Literal["frozen_bn", "bn", "gn"] | None = None
    """ResNet normalization. None = frozen_bn with pretrained weights (the standard for
    fine-tuning: statistics of tiny detection batches are too noisy to train), gn at random
    init (a frozen BN is the identity there, and a deep ResNet without normalization
    diverges; GroupNorm(32) does not depend on the batch, so train and eval agree).
    bn trains BatchNorm statistics in the trainable stages (frozen stages get FrozenBatchNorm2d). VGG16 has no normalization layers and ignores it."""
    trainable_layers: int | None = None
    """Backbone stages trained, counted from the top (0..5). None = 5 (all) at random init,
    3 with pretrained weights (torchvision's default)."""
    out_channels: int | None = None
    """Optional 1x1 conv reducing the backbone output to this many channels (None = keep);
    with ``fpn`` the pyramid's width (None = 256, as in the FPN paper)."""
    fpn: bool = False
    """A feature pyramid (ResNets only; torchvision's `BackboneWithFPN`): P2-P5 (strides
    4-32) for the ROI layer, each box pooled from the level its size picks (FPN Eq. 1, see
    `detector.models.poolers`), plus P6 for the RPN. `stride` has no meaning then (leave 32)."""

    # --- classes and the model's own resize ------------------------------------------
    num_classes: int = 91
    """Background included (torchvision convention): labels live in [1, num_classes)."""
    min_size: int | tuple[int, ...] = 800
    """Short side after resizing (a tuple = random choice per training batch)."""
    max_size: int = 1333

    # --- anchors --------------------------------------------------------------------
    anchor_sizes: tuple[int, ...] | None = None
    """None = powers of two from 16 px (half a stride-32 cell) up to the short side."""
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)

    # --- RPN ------------------------------------------------------------------------
    rpn_pre_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_test: int = 1000
    rpn_nms_thresh: float = 0.7
    rpn_fg_iou_thresh: float = 0.7
    rpn_bg_iou_thresh: float = 0.3
    rpn_batch_size_per_image: int = 256
    rpn_positive_fraction: float = 0.5
    rpn_score_thresh: float = 0.0

    # --- ROI layer (the ablated part) -----------------------------------------------------
    roi_op: str = "roi_align"
    """A key of the ROI variant table `detector.ops.ROI_OPS`: roi_pool, roi_warp, roi_align,
    prroi_pool, or an op a plugin registered (docs/roi_ops.md)."""
    roi_options: dict[str, Any] | None = None
    """The op's options (e.g. ``{mode: max, sampling_ratio: 2, aligned: false}`` for
    roi_align); keys left out take the table's defaults (sampling_ratio 2, as torchvision's
    MultiScaleRoIAlign; aligned false; mode avg). None = all defaults."""
    roi_output_size: int | None = None
    """None = 7 for the MLP head, 14 for the res5 head (which strides it to 7)."""

    # --- box head -------------------------------------------------------------------
    box_head: Literal["mlp", "res5"] | None = None
    """None = res5 for ResNet at stride 16, mlp otherwise."""
    representation_size: int = 1024
    box_fg_iou_thresh: float = 0.5
    box_bg_iou_thresh: float = 0.5
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100

    # --- mask branch ----------------------------------------------------------------
    mask: bool = False
    mask_roi_op: str | None = None
    """None = same op as the box branch."""
    mask_roi_options: dict[str, Any] | None = None
    """None = the box branch's resolved options when the op is the same, else op defaults."""
    mask_roi_output_size: int = 14
    mask_head_layers: tuple[int, ...] = (256, 256, 256, 256)
    mask_dim_reduced: int = 256

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            _fail("backbone", self.backbone, f"one of {BACKBONES}")
        if self.stride not in STRIDES or isinstance(self.stride, bool):
            _fail("stride", self.stride, f"one of {STRIDES}")
        if self.weights is not None:
            if not isinstance(self.weights, str) or not self.weights:
                _fail("weights", self.weights, "None, a local state-dict path, or a torchvision weights name")
            names = torchvision_weight_names(self.backbone)
            if self.weights not in names and not os.path.isfile(self.weights):
                _fail("weights", self.weights, f"None, an existing local state-dict file, or one of {names}")
        if self.norm is not None and self.norm not in NORMS:
            _fail("norm", self.norm, f"None or one of {NORMS}")
        if self.norm == "gn" and self.weights is not None and self.backbone != "vgg16":
            _fail("norm", self.norm, "'frozen_bn' or 'bn' with pretrained weights (they hold BatchNorm statistics)")
        if self.trainable_layers is not None:
            _check_int("trainable_layers", self.trainable_layers, 0, 5)
        if self.out_channels is not None:
            _check_int("out_channels", self.out_channels, 1)
        if not isinstance(self.fpn, bool):
            _fail("fpn", self.fpn, "True or False")
        if self.fpn and self.backbone == "vgg16":
            _fail("fpn", self.fpn, "False with vgg16 (the pyramid is built on ResNet stages C2-C5; use resnet18/34/50)")
        if self.fpn and self.stride != 32:
            _fail("stride", self.stride, "32 with fpn=True (the pyramid pools every box from P2-P5 by its size, "
                  "so a single stride has no meaning; leave stride at 32)")
        _check_int("num_classes", self.num_classes, 2)
        if isinstance(self.min_size, list):
            self.min_size = tuple(self.min_size)  # YAML gives lists
        sizes = self.min_size if isinstance(self.min_size, tuple) else (self.min_size,)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            _fail("min_size", self.min_size, "a positive int or a non-empty tuple of positive ints")
        _check_int("max_size", self.max_size, max(sizes))
        if self.anchor_sizes is not None:
            self.anchor_sizes = tuple(self.anchor_sizes)
            if not self.anchor_sizes or any(
                isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0 for s in self.anchor_sizes
            ):
                _fail("anchor_sizes", self.anchor_sizes, "None or a non-empty tuple of positive sizes in pixels")
            if self.fpn and len(self.anchor_sizes) != len(FPN_ANCHOR_SIZES):
                _fail("anchor_sizes", self.anchor_sizes, f"{len(FPN_ANCHOR_SIZES)} sizes with fpn=True, one per RPN "
                      "level P2-P6 (None = 32, 64, 128, 256, 512)")
        self.aspect_ratios = tuple(self.aspect_ratios)
        if not self.aspect_ratios or any(
            isinstance(r, bool) or not isinstance(r, (int, float)) or not r > 0 for r in self.aspect_ratios
        ):
            _fail("aspect_ratios", self.aspect_ratios, "a non-empty tuple of positive height/width ratios")
        for name in (
            "rpn_pre_nms_top_n_train",
            "rpn_pre_nms_top_n_test",
            "rpn_post_nms_top_n_train",
            "rpn_post_nms_top_n_test",
            "rpn_batch_size_per_image",
            "box_batch_size_per_image",
            "box_detections_per_img",
            "representation_size",
            "mask_roi_output_size",
            "mask_dim_reduced",
        ):
            _check_int(name, getattr(self, name), 1)
        for name in (
            "rpn_nms_thresh",
            "rpn_fg_iou_thresh",
            "rpn_bg_iou_thresh",
            "rpn_score_thresh",
            "box_fg_iou_thresh",
            "box_bg_iou_thresh",
            "box_score_thresh",
            "box_nms_thresh",
        ):
            _check_fraction(name, getattr(self, name))
        _check_fraction("rpn_positive_fraction", self.rpn_positive_fraction, closed_low=False)
        _check_fraction("box_positive_fraction", self.box_positive_fraction, closed_low=False)
        if self.rpn_bg_iou_thresh > self.rpn_fg_iou_thresh:
            _fail("rpn_bg_iou_thresh", self.rpn_bg_iou_thresh, f"<= rpn_fg_iou_thresh ({self.rpn_fg_iou_thresh})")
        if self.box_bg_iou_thresh > self.box_fg_iou_thresh:
            _fail("box_bg_iou_thresh", self.box_bg_iou_thresh, f"<= box_fg_iou_thresh ({self.box_fg_iou_thresh})")
        _check_roi_op("roi_op", self.roi_op)
        _check_roi_options("roi_options", self.roi_op, self.roi_options)
        if self.roi_output_size is not None:
            _check_int("roi_output_size", self.roi_output_size, 1)
        if self.box_head is not None and self.box_head not in BOX_HEADS:
            _fail("box_head", self.box_head, f"None or one of {BOX_HEADS}")
        if self.box_head == "res5" and (self.backbone == "vgg16" or self.stride != 16):
            _fail(
                "box_head",
                self.box_head,
                "'mlp' (or None): the res5 head is the C5 stage, so it needs a ResNet at stride 16",
            )
        if self.resolved_box_head == "res5":
            if self.out_channels is not None:
                _fail(
                    "out_channels", self.out_channels, "None with the res5 head (C5 takes the C4 channels as they are)"
                )
            if self.roi_output_size is not None and self.roi_output_size % 2:
                _fail(
                    "roi_output_size",
                    self.roi_output_size,
                    "an even size with the res5 head (C5 halves it; 14 is standard)",
                )
        if not isinstance(self.mask, bool):
            _fail("mask", self.mask, "True or False")
        if self.mask_roi_op is not None:
            _check_roi_op("mask_roi_op", self.mask_roi_op)
        _check_roi_options("mask_roi_options", self.resolved_mask_roi_op, self.mask_roi_options)
        self.mask_head_layers = tuple(self.mask_head_layers)
        if not self.mask_head_layers or any(
            isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in self.mask_head_layers
        ):
            _fail("mask_head_layers", self.mask_head_layers, "a non-empty tuple of positive channel counts")

    # --- resolved defaults ------------------------------------------------------------
    @property
    def spatial_scale(self) -> float:
        """Image -> feature-map coordinates: `1 / stride`, derived, never configured."""
        return 1.0 / self.stride

    @property
    def resolved_box_head(self) -> str:
        if self.box_head is not None:
            return self.box_head
        return "res5" if self.backbone.startswith("resnet") and self.stride == 16 else "mlp"

    @property
    def resolved_roi_output_size(self) -> int:
        if self.roi_output_size is not None:
            return self.roi_output_size
        return 14 if self.resolved_box_head == "res5" else 7

    @property
    def resolved_roi_options(self) -> dict[str, Any]:
        """Every option of `roi_op`, the table's defaults completed by `roi_options`."""
        return get_roi_op(self.roi_op).resolve_options(self.roi_options)

    @property
    def resolved_mask_roi_op(self) -> str:
        return self.roi_op if self.mask_roi_op is None else self.mask_roi_op

    @property
    def resolved_mask_roi_options(self) -> dict[str, Any]:
        if self.mask_roi_options is None and self.resolved_mask_roi_op == self.roi_op:
            return self.resolved_roi_options
        return get_roi_op(self.resolved_mask_roi_op).resolve_options(self.mask_roi_options)

    @property
    def resolved_norm(self) -> str:
        return _resolved_norm(self.norm, self.weights)

    @property
    def resolved_trainable_layers(self) -> int:
        return _resolved_trainable_layers(self.trainable_layers, self.weights)

    @property
    def resolved_anchor_sizes(self) -> tuple[float, ...]:
        """Powers of two from 16 px (below one stride-32 cell) up to the short side; with
        ``fpn`` one size per RPN level P2-P6: 32, 64, 128, 256, 512 (torchvision's)."""
        if self.anchor_sizes is not None:
            return self.anchor_sizes
        if self.fpn:
            return FPN_ANCHOR_SIZES
        short = max(self.min_size) if isinstance(self.min_size, tuple) else self.min_size
        sizes, s = [], 16
        while s <= max(short, 16):
            sizes.append(s)
            s *= 2
        return tuple(sizes)

    def replace(self, **changes: Any) -> DetectorConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def of_trained(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """`from_dict` for a detector whose checkpoint replaces every weight: ``weights=None``.

        The run's initial-weights file may not exist on this machine and a weights *name*
        would download, so it is never read (nor checked); the defaults that depend on
        `weights` (norm: frozen_bn with weights, gn without; trainable_layers) are pinned
        first, so the architecture stays the one that was trained.
        """
        values = dict(values)
        weights = values.get("weights")
        values["norm"] = _resolved_norm(values.get("norm"), weights)
        values["trainable_layers"] = _resolved_trainable_layers(values.get("trainable_layers"), weights)
        values["weights"] = None
        return cls.from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        """Plain values only (lists, not tuples): YAML-, JSON- and ``weights_only``-safe, what
        checkpoints store as ``hyper_parameters["detector"]``."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> DetectorConfig:
        """Inverse of `to_dict` (lists become tuples); an unknown key is a ValueError naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            raise ValueError(f"DetectorConfig has no field {', '.join(map(repr, unknown))}; its fields: {', '.join(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    @classmethod
    def small(cls, **overrides: Any) -> DetectorConfig:
        """A CPU-friendly configuration that trains in minutes: ResNet-18 at stride 32
        (the slides' setting), 256 px images, 128 channels, small proposal budgets."""
        base: dict[str, Any] = dict(
            backbone="resnet18",
            stride=32,
            num_classes=4,
            min_size=256,
            max_size=384,
            out_channels=128,
            representation_size=256,
            rpn_pre_nms_top_n_train=600,
            rpn_post_nms_top_n_train=300,
            rpn_pre_nms_top_n_test=300,
            rpn_post_nms_top_n_test=100,
            rpn_batch_size_per_image=128,
            box_batch_size_per_image=128,
            mask_head_layers=(128, 128),
            mask_dim_reduced=128,
        )
        base.update(overrides)
        return cls(**base)


def _resolved_norm(norm: str | None, weights: str | None) -> str:
    if norm is not None:
        return norm
    return "gn" if weights is None else "frozen_bn"


def _resolved_trainable_layers(trainable_layers: int | None, weights: str | None) -> int:
    if trainable_layers is not None:
        return trainable_layers
    return 5 if weights is None else 3


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _check_roi_op(name: str, op: Any) -> None:
    if not isinstance(op, str) or op not in ROI_OPS:
        _fail(name, op, f"a registered ROI op, one of {tuple(ROI_OPS)} (plugins: docs/roi_ops.md)")


def _check_roi_options(name: str, op: str, options: Any) -> None:
    """The table's own check (`RoiOpSpec.resolve_options`), reported under this field's name."""
    if options is None:
        return
    if not isinstance(options, Mapping):
        _fail(name, options, "None or a dict of ROI-op options")
    try:
        get_roi_op(op).resolve_options(options)
    except (TypeError, ValueError) as err:
        raise ValueError(f"DetectorConfig.{name}={dict(options)!r} is invalid: {err}") from None
