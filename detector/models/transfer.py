"""Non-strict weight transfer into a detector: what fine-tuning (``model.init_from``) loads.

`transfer_weights(model, state, ...)` copies every tensor of `state` whose name and shape
match one of `model`'s, leaves the rest at the model's fresh initialisation, and returns a
`TransferReport` that counts, per parameter group, what happened to each tensor of the model:

- ``loaded``: same name, same shape: copied;
- ``skipped (shape)``: same name, other shape (another ``out_channels``, anchor count, ...):
  kept at its fresh init;
- ``re-initialised``: the class-specific predictor (``box_predictor.cls_score``,
  ``box_predictor.bbox_pred``, ``mask_predictor.mask_fcn_logits``) when the file was trained
  for another class count, or (``reinit_classes=True``) for other categories of the same
  count: kept at its fresh init on purpose (the usual fine-tuning recipe);
- ``missing``: no tensor of that name in the file (e.g. our 1x1 ``backbone.reduce``);
- ``unused``: tensors of the file with no counterpart in the model (e.g. torchvision's FPN).

Key names. Our network is torchvision's `GeneralizedRCNN` with torchvision's RPN and
RoIHeads, so ``rpn.*`` and ``roi_heads.*`` are spelled alike; only the backbone differs.
torchvision's ResNet detectors (``fasterrcnn_resnet50_fpn[_v2]``, ``maskrcnn_resnet50_fpn[_v2]``,
``keypointrcnn_resnet50_fpn`` ...) keep the ResNet as ``backbone.body.{conv1,bn1,layer1..4}``
(IntermediateLayerGetter); ours is ``backbone.body.{0.0,0.1,1..4}`` (stem, stages), and at
stride 16 ``layer4`` is our box head (``roi_heads.box_head.c5``). `torchvision_to_ours` renames
those; ``backbone.fpn.*`` has no counterpart in a single-level model. Their RPN head has 3
anchors per location where ours has sizes x ratios (usually 15), their box head is ``fc6``
from 256 x 7 x 7: both load only where our config has the same shapes (``out_channels: 256``,
``representation_size: 1024``, 3 anchors). Our FPN model (``fpn: true``) is built from
torchvision's own parts (`BackboneWithFPN`, one anchor size per level), so its keys *are*
torchvision's layout: nothing is renamed for it (the caller decides; see `torchvision_to_ours`).
A MobileNet detector (``fasterrcnn_mobilenet_v3_large_fpn``) has no backbone of ours to map to:
refused (see `BackboneMismatch`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

#: Parameter groups of the report, in table order: (name, key prefix).
GROUPS = (
    ("backbone", "backbone."),
    ("rpn", "rpn."),
    ("box head", "roi_heads.box_head."),
    ("box predictor", "roi_heads.box_predictor."),
    ("mask head", "roi_heads.mask_head."),
    ("mask predictor", "roi_heads.mask_predictor."),
)
#: Tensors whose first dimension is the class count (background included).
CLASS_SPECIFIC = ("roi_heads.box_predictor.cls_score.", "roi_heads.box_predictor.bbox_pred.",
                  "roi_heads.mask_predictor.mask_fcn_logits.")
COLUMNS = ("loaded", "skipped (shape)", "missing", "re-initialised", "unused")
#: Below this fraction of the model's backbone tensors loaded, the file is another backbone.
MIN_BACKBONE_FRACTION = 0.5
_RESNETS = {(False, 2): "resnet18", (False, 6): "resnet34", (True, 6): "resnet50", (True, 23): "resnet101",
            (True, 36): "resnet152"}


class BackboneMismatch(ValueError):
    """The file's backbone is not the model's: almost none of its backbone tensors would load."""


def group_of(key: str) -> str:
    return next((name for name, prefix in GROUPS if key.startswith(prefix)), "other")


def torchvision_to_ours(state: Mapping[str, torch.Tensor], stride: int) -> dict[str, torch.Tensor]:
    """torchvision detection keys renamed to our single-level layout (see the module doc); other
    keys unchanged. Not for a model with ``fpn: true``: its keys already are torchvision's.

    Example:
        >>> sorted(torchvision_to_ours({"backbone.body.layer4.0.conv1.weight": torch.zeros(1)}, stride=16))
        ['roi_heads.box_head.c5.0.conv1.weight']
    """
    layer4 = "backbone.body.4." if stride == 32 else "roi_heads.box_head.c5."
    renames = {"backbone.body.conv1.": "backbone.body.0.0.", "backbone.body.bn1.": "backbone.body.0.1.",
               "backbone.body.layer1.": "backbone.body.1.", "backbone.body.layer2.": "backbone.body.2.",
               "backbone.body.layer3.": "backbone.body.3.", "backbone.body.layer4.": layer4}
    out = {}
    for key, value in state.items():
        prefix = next((p for p in renames if key.startswith(p)), None)
        out[renames[prefix] + key[len(prefix):] if prefix else key] = value
    return out


def match_stride(state: Mapping[str, torch.Tensor], stride: int) -> dict[str, torch.Tensor]:
    """A ResNet's C5 stage moved to where a model of `stride` keeps it: ``backbone.body.4`` at
    stride 32, the box head ``roi_heads.box_head.c5`` at stride 16 (same tensors, other place).

    Example:
        >>> sorted(match_stride({"roi_heads.box_head.c5.0.conv1.weight": torch.zeros(1)}, stride=32))
        ['backbone.body.4.0.conv1.weight']
    """
    at32, at16 = "backbone.body.4.", "roi_heads.box_head.c5."
    old, new = (at16, at32) if stride == 32 else (at32, at16)
    if any(k.startswith(new) for k in state):
        return dict(state)
    return {(new + k[len(old):] if k.startswith(old) else k): v for k, v in state.items()}


def is_torchvision_layout(state: Mapping[str, torch.Tensor]) -> bool:
    """True for a torchvision ResNet detector's keys (``backbone.body.layer1...``)."""
    return any(k.startswith(("backbone.body.layer1.", "backbone.body.conv1.")) for k in state)


def describe_backbone(state: Mapping[str, torch.Tensor]) -> str:
    """The backbone a state dict in *our* key names holds, as far as its keys tell
    (``"resnet50 stride 16"``, ``"vgg16"``, ``"mobilenet_v3 (torchvision)"``...)."""
    keys = [k for k in state if k.startswith(("backbone.", "roi_heads.box_head.c5."))]
    extra = " + FPN" if any(k.startswith("backbone.fpn.") for k in keys) else ""
    if "backbone.body.1.0.conv1.weight" in state or "backbone.body.3.0.conv1.weight" in state:
        bottleneck = "backbone.body.1.0.conv3.weight" in state
        blocks = {int(m.group(1)) for k in keys if (m := re.match(r"backbone\.body\.3\.(\d+)\.", k))}
        name = _RESNETS.get((bottleneck, len(blocks)), f"resnet ({'bottleneck' if bottleneck else 'basic'} blocks)")
        stride = 32 if any(k.startswith("backbone.body.4.") for k in keys) else 16
        return f"{name} stride {stride}{extra}"
    if "backbone.body.0.2.weight" in state and "backbone.body.0.0.weight" in state:
        return f"vgg16{extra}"
    if any(".block." in k for k in keys):
        return f"mobilenet_v3 (torchvision){extra}"
    return f"unknown (backbone keys e.g. {keys[:2] or sorted(state)[:2]})"


@dataclass
class TransferReport:
    """What `transfer_weights` did: per group, ``{column: count}``; the class counts involved."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    source_classes: int | None = None
    model_classes: int | None = None

    def add(self, group: str, column: str) -> None:
        self.counts.setdefault(group, dict.fromkeys(COLUMNS, 0))[column] += 1

    def total(self, column: str) -> int:
        return sum(row[column] for row in self.counts.values())

    def table(self) -> str:
        """One text table: groups x `COLUMNS` (tensors, buffers included), and a total row."""
        order = [name for name, _ in GROUPS] + ["other"]
        rows = [(g, self.counts[g]) for g in order if g in self.counts]
        rows.append(("total", {c: self.total(c) for c in COLUMNS}))
        width = max(len(g) for g, _ in rows)
        lines = ["group".ljust(width) + "".join(f"  {c:>15}" for c in COLUMNS)]
        lines += [g.ljust(width) + "".join(f"  {row[c]:>15}" for c in COLUMNS) for g, row in rows]
        return "\n".join(lines)


def num_classes_of(state: Mapping[str, torch.Tensor]) -> int | None:
    """The class count (background included) of a state dict in our key names; None without a box predictor."""
    weight = state.get("roi_heads.box_predictor.cls_score.weight")
    return None if weight is None else int(weight.shape[0])


def permute_classes(state: Mapping[str, torch.Tensor], order: Sequence[int]) -> dict[str, torch.Tensor]:
    """`state` with the class-specific rows (`CLASS_SPECIFIC`) reordered: the result's label ``j``
    holds the file's label ``order[j]`` (``order[0] == 0``: background stays first); other tensors
    unchanged. Why: a checkpoint whose categories are this run's in another order keeps each
    category's weights when its rows follow the category, not the label number.

    A tensor of ``K * m`` rows (``K = len(order)``) moves in blocks of ``m``: ``m = 1`` for the
    class scores and mask logits, ``m = 4`` for ``bbox_pred`` (``dx, dy, dw, dh`` per class).

    Example:
        >>> state = {"roi_heads.box_predictor.cls_score.bias": torch.tensor([0.0, 1.0, 2.0]),
        ...          "roi_heads.box_predictor.bbox_pred.bias": torch.arange(12.0)}
        >>> out = permute_classes(state, [0, 2, 1])
        >>> out["roi_heads.box_predictor.cls_score.bias"]
        tensor([0., 2., 1.])
        >>> out["roi_heads.box_predictor.bbox_pred.bias"].tolist()[4:]
        [8.0, 9.0, 10.0, 11.0, 4.0, 5.0, 6.0, 7.0]
    """
    order = [int(i) for i in order]
    if order[:1] != [0] or sorted(order) != list(range(len(order))):
        raise ValueError(f"order={order} must be a permutation of 0..{len(order) - 1} starting with 0 (background)")
    index = torch.tensor(order)
    out = dict(state)
    for key, value in state.items():
        if not key.startswith(CLASS_SPECIFIC):
            continue
        if value.shape[0] % len(order):
            raise ValueError(f"{key} has {value.shape[0]} rows, not a multiple of the {len(order)} classes of order")
        blocks = value.reshape(len(order), -1, *value.shape[1:])  # (K*m, ...) -> (K, m, ...)
        out[key] = blocks[index].reshape(value.shape)  # (K, m, ...) -> (K*m, ...)
    return out


def select_classes(state: Mapping[str, torch.Tensor], fresh: Mapping[str, torch.Tensor],
                   rows: Sequence[int | None]) -> dict[str, torch.Tensor]:
    """`state` with each class-specific tensor (`CLASS_SPECIFIC`) rebuilt at the model's class count
    ``len(rows)``: label ``j`` holds the file's label ``rows[j]``, or keeps `fresh`'s rows (the
    model's own initialisation) where ``rows[j]`` is None. Why: a checkpoint trained on other
    categories that share some with this run (COCO's 80 into a 'person, car' dataset) keeps what
    it learned for the shared ones instead of dropping every class row.

    Blocks of ``m`` rows move together as in `permute_classes`. A tensor whose per-class block
    has another shape (another mask resolution, a class-agnostic box regressor) is left as it is,
    for `transfer_weights` to report.

    Example:
        >>> state = {"roi_heads.box_predictor.cls_score.weight": torch.tensor([[0.0], [1.0], [2.0], [3.0]])}
        >>> fresh = {"roi_heads.box_predictor.cls_score.weight": torch.full((3, 1), -1.0)}
        >>> select_classes(state, fresh, [0, 3, None])["roi_heads.box_predictor.cls_score.weight"].flatten()
        tensor([ 0.,  3., -1.])
    """
    n_source = num_classes_of(state)
    if n_source is None:
        return dict(state)
    take = [j for j, r in enumerate(rows) if r is not None]
    index = torch.tensor([rows[j] for j in take], dtype=torch.long)
    out = dict(state)
    for key, value in state.items():
        if not key.startswith(CLASS_SPECIFIC) or key not in fresh or value.shape[0] % n_source:
            continue
        target = fresh[key]
        if target.shape[0] % len(rows):
            continue
        source = value.reshape(n_source, -1, *value.shape[1:])  # (K_file*m, ...) -> (K_file, m, ...)
        blocks = target.reshape(len(rows), -1, *target.shape[1:]).clone()  # (K*m, ...) -> (K, m, ...)
        if source.shape[1:] != blocks.shape[1:]:
            continue
        blocks[take] = source[index].to(blocks.dtype)
        out[key] = blocks.reshape(target.shape)  # (K, m, ...) -> (K*m, ...)
    return out


def architecture(description: str) -> str | None:
    """``"resnet50"`` of ``"resnet50 stride 16 + FPN"``; None when the description names no known one."""
    name = description.split(" ")[0]
    return name if name in {*(n for n in _RESNETS.values()), "vgg16", "mobilenet_v3"} else None


def transfer_weights(model: nn.Module, state: Mapping[str, torch.Tensor], *, source: str,
                     source_backbone: str | None = None, model_backbone: str | None = None,
                     reinit_classes: bool = False) -> TransferReport:
    """Load the tensors of `state` (our key names) that fit `model` by name and shape; report the rest.

    Args:
        model: the detector (`TwoStageDetector`), freshly built.
        state: a state dict in our key names (see `torchvision_to_ours`).
        source: how to name the file in errors (``"model.init_from='x.ckpt'"``).
        source_backbone, model_backbone: descriptions for the error (default: `describe_backbone`).
        reinit_classes: keep the class-specific tensors (`CLASS_SPECIFIC`) at their fresh init even
            where their shapes fit: the file's classes are other categories (the caller compared
            the category tables; this function sees only tensors).

    Raises:
        BackboneMismatch: the two backbones are known architectures that differ (ResNet-34's
            first blocks would fit a ResNet-18 by name and shape), or fewer than
            `MIN_BACKBONE_FRACTION` of the model's backbone tensors fit; the message names
            example keys and shapes on both sides and both backbones.
    """
    source_backbone = source_backbone or describe_backbone(state)
    model_backbone = model_backbone or describe_backbone(model.state_dict())
    own = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    report = TransferReport(source_classes=num_classes_of(state), model_classes=num_classes_of(own))
    other_classes = report.source_classes is not None and report.source_classes != report.model_classes
    load = {}
    for key, value in own.items():
        group = group_of(key)
        if key not in state:
            report.add(group, "missing")
        elif reinit_classes and key.startswith(CLASS_SPECIFIC):
            report.add(group, "re-initialised")
        elif tuple(state[key].shape) == tuple(value.shape):
            load[key] = state[key]
            report.add(group, "loaded")
        elif other_classes and key.startswith(CLASS_SPECIFIC):
            report.add(group, "re-initialised")
        else:
            report.add(group, "skipped (shape)")
    for key in state:
        if key not in own:
            report.add(group_of(key), "unused")
    backbone = report.counts.get("backbone", dict.fromkeys(COLUMNS, 0))
    in_model = sum(backbone[c] for c in ("loaded", "skipped (shape)", "missing", "re-initialised"))
    archs = architecture(source_backbone), architecture(model_backbone)
    if (in_model and backbone["loaded"] < MIN_BACKBONE_FRACTION * in_model) or (None not in archs and archs[0] != archs[1]):
        raise BackboneMismatch(_mismatch_message(own, state, backbone["loaded"], in_model, source, source_backbone,
                                                 model_backbone, archs[0] != archs[1] and None not in archs))
    model.load_state_dict(load, strict=False)
    return report


def _mismatch_message(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], loaded: int, total: int,
                      source: str, source_backbone: str, model_backbone: str, other_architecture: bool) -> str:
    def examples(tensors: Mapping[str, torch.Tensor]) -> str:
        keys = [k for k in tensors if k.startswith("backbone.")][:3] or list(tensors)[:3]
        return ", ".join(f"{k} {tuple(tensors[k].shape)}" for k in keys)

    fit = (f"{loaded} of the model's {total} backbone tensors fit by name and shape, but the layers are another "
           "network's" if other_architecture else f"only {loaded} of the model's {total} backbone tensors fit by name "
           "and shape")
    return (f"{source}: its backbone ({source_backbone}) is not the model's ({model_backbone}): {fit}. File keys e.g. {examples(state)}; model "
            f"keys e.g. {examples(own)}. Fix: set model.detector.backbone / model.detector.stride to the file's "
            "backbone, or init_from a checkpoint of this backbone (an ImageNet classification state dict goes to "
            "model.detector.weights instead)")
