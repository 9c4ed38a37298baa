"""Backbones at a chosen stride: VGG16 and ResNet-18/34/50 cut at stride 32 or 16.

Stride 32 is the slides' setting (five stride-2 stages: VGG16 through pool5, ResNet
through C5); stride 16 drops the last halving (VGG16 conv5_3, ResNet through C4), which
makes each feature cell cover 16 x 16 px and so halves the quantization error of RoIPool.
At stride 16 a ResNet's C5 stage is not thrown away: it becomes the ROI box head
(Faster R-CNN "C4"), see `heads.Res5Head`.

The layers are torchvision's own (`torchvision.models.*` built with `weights=None`);
weights are loaded by `weights.load_backbone_weights`, never downloaded implicitly.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torchvision
from torch import nn
from torchvision.models.vgg import cfgs as vgg_cfgs
from torchvision.models.vgg import make_layers
from torchvision.ops.misc import FrozenBatchNorm2d

from .weights import check_state_dict, load_backbone_weights, read_backbone_state

# Number of output channels of the last kept stage, per (backbone, stride).
BODY_CHANNELS = {
    ("vgg16", 32): 512,
    ("vgg16", 16): 512,
    ("resnet18", 32): 512,
    ("resnet18", 16): 256,
    ("resnet34", 32): 512,
    ("resnet34", 16): 256,
    ("resnet50", 32): 2048,
    ("resnet50", 16): 1024,
}


def _group_norm(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


# "frozen_bn": fixed affine (fine-tuning); "bn": trained BatchNorm (in the trainable stages:
# frozen stages get FrozenBatchNorm2d, see `_freeze`); "gn": GroupNorm(32), batch-independent
# (training from scratch with a few images per batch).
NORM_LAYERS: dict[str, Callable[..., nn.Module]] = {
    "frozen_bn": FrozenBatchNorm2d,
    "bn": nn.BatchNorm2d,
    "gn": _group_norm,
}
# Indices that end each VGG16 conv block in `vgg16().features` (the max-pools).
_VGG16_POOLS = (4, 9, 16, 23, 30)


class Backbone(nn.Module):
    """`body` (a stride-`stride` CNN) followed by an optional 1x1 channel reduction.

    Args:
        body: maps `Tensor[N, 3, H, W]` to `Tensor[N, body_channels, H/stride, W/stride]`.
        body_channels: channels `body` produces.
        stride: total downsampling of `body`; the ROI ops use `spatial_scale = 1 / stride`.
        out_channels: None keeps `body_channels`; an int adds a 1x1 conv (no activation,
            like an FPN lateral) so the RPN and box head see fewer channels.

    Attributes:
        out_channels (int), stride (int): read by the RPN and heads when they are built.
    """

    def __init__(self, body: nn.Module, body_channels: int, stride: int, out_channels: int | None = None) -> None:
        super().__init__()
        self.body = body
        self.stride = stride
        if out_channels is None:
            self.reduce = nn.Identity()
            self.out_channels = body_channels
        else:
            self.reduce = nn.Conv2d(body_channels, out_channels, kernel_size=1)
            nn.init.kaiming_uniform_(self.reduce.weight, a=1)
            nn.init.zeros_(self.reduce.bias)
            self.out_channels = out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """`Tensor[N, 3, H, W]` -> `Tensor[N, out_channels, H/stride, W/stride]`.

        Exact when H and W are multiples of 32, which GeneralizedRCNNTransform's padding
        (size_divisible=32) guarantees; otherwise ResNet rounds up and VGG rounds down.
        """
        return self.reduce(self.body(images))


def _freeze(stages: list[nn.Module], trainable_layers: int) -> None:
    """Freeze all but the top `trainable_layers` of `stages` (ordered bottom to top).

    Frozen means no gradient *and* no state that changes in training: a `BatchNorm2d` in a
    frozen stage becomes a `FrozenBatchNorm2d` holding the same statistics and affine values
    (as torchvision's `resnet_fpn_backbone` does), because `requires_grad_(False)` alone leaves
    its running mean and variance updating on every training-mode forward pass, and normalizes
    with the batch's statistics instead of the stored ones. The swap happens in place, inside
    each stage, so the stage objects the caller holds stay valid.
    """
    for i, stage in enumerate(stages):
        trainable = i >= len(stages) - trainable_layers
        if not trainable:
            _freeze_batchnorm(stage)
        stage.requires_grad_(trainable)


def _freeze_batchnorm(module: nn.Module) -> None:
    """Replace every `nn.BatchNorm2d` below `module` by a `FrozenBatchNorm2d` with its values.

    It computes what the BatchNorm computes in eval mode (up to rounding); the state-dict keys stay the same (weight, bias,
    running_mean, running_var; `FrozenBatchNorm2d` drops `num_batches_tracked` when loading), so
    weights files and checkpoints load either way.
    """
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):  # torchvision's: affine, tracking statistics, on the CPU at build
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(frozen, key).copy_(getattr(child, key))
            setattr(module, name, frozen)
        else:
            _freeze_batchnorm(child)


def _resnet_stages(name: str, weights: str | None, norm: str, trainable_layers: int) -> tuple[nn.Module, list]:
    """torchvision's ResNet `name` with `weights` loaded and its bottom stages frozen.

    Returns:
        (net, [stem, layer1, layer2, layer3, layer4]): the stem is `net`'s own conv1, bn1, relu
        and maxpool in a `nn.Sequential`, so `net` (which `BackboneWithFPN` runs) and the stages
        share every module.
    """
    net = getattr(torchvision.models, name)(weights=None, norm_layer=NORM_LAYERS[norm])
    if weights is not None:
        load_backbone_weights(net, name, weights)
    stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
    stages = [stem, net.layer1, net.layer2, net.layer3, net.layer4]
    _freeze(stages, trainable_layers)
    net.bn1 = stem[1]  # a frozen stem's BatchNorm was swapped inside `stem`: `net` must run the same one
    return net, stages


def _resnet(
    name: str, stride: int, weights: str | None, norm: str, trainable_layers: int, out_channels: int | None
) -> tuple[Backbone, nn.Module | None]:
    net, (stem, *_) = _resnet_stages(name, weights, norm, trainable_layers)
    if stride == 32:
        body = nn.Sequential(stem, net.layer1, net.layer2, net.layer3, net.layer4)
        return Backbone(body, BODY_CHANNELS[(name, 32)], 32, out_channels), None
    body = nn.Sequential(stem, net.layer1, net.layer2, net.layer3)
    return Backbone(body, BODY_CHANNELS[(name, 16)], 16, out_channels), net.layer4


#: Channels of ResNet stages C2-C5 (torchvision's layer1-layer4), the FPN's inputs.
FPN_IN_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}
#: The pyramid levels the ROI layer pools from (P2-P5) and their feature-dict keys in BackboneWithFPN's output.
FPN_LEVELS = (2, 3, 4, 5)
FPN_FEATURE_NAMES = ("0", "1", "2", "3")


def build_fpn_backbone(name: str, *, weights: str | None = None, norm: str = "frozen_bn", trainable_layers: int = 5,
                       out_channels: int | None = None) -> nn.Module:
    """ResNet `name` with torchvision's `BackboneWithFPN` over C2-C5: ``Tensor[N, 3, H, W]`` ->
    ``{"0": P2, "1": P3, "2": P4, "3": P5, "pool": P6}``, each ``out_channels`` wide (None = 256).

    The ResNet, its norm layers, its weights and its frozen stages are built exactly as for
    the single-level backbone; only the pyramid (1x1 laterals + 3x3 outputs) is new.
    """
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    if name not in FPN_IN_CHANNELS:
        raise ValueError(f"fpn needs a ResNet backbone ({sorted(FPN_IN_CHANNELS)}), got {name!r}")
    net, _ = _resnet_stages(name, weights, norm, trainable_layers)
    return_layers = {f"layer{i + 1}": key for i, key in enumerate(FPN_FEATURE_NAMES)}
    return BackboneWithFPN(net, return_layers, list(FPN_IN_CHANNELS[name]), out_channels or 256)


def _vgg16(stride: int, weights: str | None, trainable_layers: int, out_channels: int | None) -> Backbone:
    # Only `features` is used: building the 120M-parameter classifier for real would cost
    # seconds and half a gigabyte, so the full model exists on the meta device only, to
    # check a weights file against (keys and shapes, strictly).
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None)
    features = make_layers(vgg_cfgs["D"])
    for m in features.modules():  # torchvision's VGG initialisation of its conv layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    if weights is not None:
        state = read_backbone_state("vgg16", weights)
        check_state_dict(reference, state, f"vgg16 weights {weights!r}")
        features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
    bounds = (0,) + tuple(p + 1 for p in _VGG16_POOLS)
    blocks = [features[a:b] for a, b in itertools.pairwise(bounds)]
    if stride == 16:
        blocks[-1] = blocks[-1][:-1]  # conv5_3 + ReLU, without pool5
    _freeze(blocks, trainable_layers)
    return Backbone(nn.Sequential(*blocks), 512, stride, out_channels)


def build_backbone(
    name: str,
    stride: int,
    *,
    weights: str | None = None,
    norm: str = "frozen_bn",
    trainable_layers: int = 5,
    out_channels: int | None = None,
) -> tuple[Backbone, nn.Module | None]:
    """Build `name` cut at `stride`.

    Returns:
        (backbone, c5): `c5` is the ResNet C5 stage (`layer4`) when a ResNet is cut at
        stride 16, to be used as the ROI head (`heads.Res5Head`); None otherwise. Its
        trainability follows `trainable_layers` like any other stage.

    Frozen stages (all but the top `trainable_layers` of stem, C2-C5) take no gradient and,
    with `norm="bn"`, keep their BatchNorm statistics fixed too (`FrozenBatchNorm2d`), so
    nothing in them changes while training.

    Example:
        >>> backbone, c5 = build_backbone("resnet18", 16)
        >>> backbone(torch.zeros(1, 3, 64, 96)).shape
        torch.Size([1, 256, 4, 6])
    """
    if (name, stride) not in BODY_CHANNELS:
        raise ValueError(f"unknown backbone/stride {name!r}/{stride}: expected one of {sorted(BODY_CHANNELS)}")
    if norm not in NORM_LAYERS:
        raise ValueError(f"norm={norm!r} must be one of {sorted(NORM_LAYERS)}")
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers={trainable_layers} must be in [0, 5]")
    if name == "vgg16":
        return _vgg16(stride, weights, trainable_layers, out_channels), None
    return _resnet(name, stride, weights, norm, trainable_layers, out_channels)
