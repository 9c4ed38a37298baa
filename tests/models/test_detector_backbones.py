"""Backbones: stride, channels, freezing, 1x1 reduction, weights loading (never downloading)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from detector.models import DetectorConfig, build_backbone, build_detector
from detector.models.backbones import build_fpn_backbone

CASES = [
    ("vgg16", 32, 512),
    ("vgg16", 16, 512),
    ("resnet18", 32, 512),
    ("resnet18", 16, 256),
    ("resnet34", 32, 512),
    ("resnet34", 16, 256),
    ("resnet50", 32, 2048),
    ("resnet50", 16, 1024),
]


@pytest.mark.parametrize("name,stride,channels", CASES, ids=[f"{n}-s{s}" for n, s, _ in CASES])
def test_stride_and_channels(name, stride, channels):
    backbone, c5 = build_backbone(name, stride, norm="gn")
    with torch.no_grad():
        y = backbone(torch.zeros(1, 3, 64, 96))
    assert y.shape == (1, channels, 64 // stride, 96 // stride)
    assert backbone.out_channels == channels and backbone.stride == stride
    assert (c5 is not None) == (name != "vgg16" and stride == 16)


def test_vgg16_stride16_is_conv5_3_without_pool5():
    backbone, _ = build_backbone("vgg16", 16)
    last = list(backbone.body.modules())[-1]
    assert isinstance(last, torch.nn.ReLU)  # conv5_3 -> ReLU, no pool5
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in backbone.body.modules()) == 4


def test_reduction_and_frozen_stages():
    backbone, c5 = build_backbone("resnet18", 16, norm="frozen_bn", trainable_layers=2, out_channels=32)
    assert backbone.out_channels == 32
    with torch.no_grad():
        assert backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 4, 4)
    stem, layer1, layer2, layer3 = backbone.body
    assert not any(p.requires_grad for m in (stem, layer1, layer2) for p in m.parameters())
    assert all(p.requires_grad for p in layer3.parameters()) and all(p.requires_grad for p in c5.parameters())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in backbone.modules())
    vgg, _ = build_backbone("vgg16", 32, trainable_layers=0)
    assert not any(p.requires_grad for p in vgg.body.parameters())


def _norm_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every norm layer's tensors below `module` (weight, bias, running statistics)."""
    return {f"{name}.{key}": value.detach().clone() for name, m in module.named_modules()
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d))
            for key, value in [*m.named_parameters(recurse=False), *m.named_buffers(recurse=False)]}


def test_bn_in_frozen_stages_keeps_its_statistics_in_training():
    """norm=bn, trainable_layers=2: stem, C2 and C3 are frozen, so a training-mode forward pass must
    leave their BatchNorm bitwise as it was (requires_grad_(False) alone did not: running statistics
    updated), while C4 and the C5 head keep training their BatchNorm."""
    torch.manual_seed(0)
    backbone, c5 = build_backbone("resnet18", 16, norm="bn", trainable_layers=2)
    stem, layer1, layer2, layer3 = backbone.body
    frozen, trained = (stem, layer1, layer2), (layer3, c5)
    before = [_norm_state(m) for m in (*frozen, *trained)]
    assert all(before) and not any(p.requires_grad for m in frozen for p in m.parameters())
    backbone.train()
    c5.train()
    c5(backbone(torch.randn(2, 3, 64, 64) * 3 + 1))
    after = [_norm_state(m) for m in (*frozen, *trained)]
    for old, new in zip(before[:3], after[:3]):
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    for old, new in zip(before[3:], after[3:]):
        running = [k for k in old if k.endswith("running_mean")]
        assert running and all(not torch.equal(old[k], new[k]) for k in running)
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in (layer3[0].bn1, c5[0].bn1))


def test_frozen_bn_keeps_the_loaded_statistics_and_the_eval_output(tmp_path):
    """Freezing swaps BatchNorm for FrozenBatchNorm2d with the same values: the eval-mode function
    is unchanged, and a weights file's statistics survive, in the plain and the FPN backbone."""
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for i, m in enumerate(m for m in reference.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            m.running_mean.normal_(0, 0.1, generator=torch.Generator().manual_seed(i))
            m.running_var.uniform_(0.5, 2.0, generator=torch.Generator().manual_seed(100 + i))
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    weights = str(tmp_path / "resnet18.pth")
    trained, _ = build_backbone("resnet18", 32, weights=weights, norm="bn", trainable_layers=5)
    frozen, _ = build_backbone("resnet18", 32, weights=weights, norm="bn", trainable_layers=0)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    torch.testing.assert_close(frozen.body[1][0].bn1.running_var, reference.layer1[0].bn1.running_var, rtol=0, atol=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(frozen.eval()(x), trained.eval()(x), rtol=1e-4, atol=1e-5)
    fpn = build_fpn_backbone("resnet18", weights=weights, norm="bn", trainable_layers=3)
    assert isinstance(fpn.body.bn1, FrozenBatchNorm2d) and isinstance(fpn.body.layer1[0].bn1, FrozenBatchNorm2d)
    assert isinstance(fpn.body.layer2[0].bn1, torch.nn.BatchNorm2d)
    torch.testing.assert_close(fpn.body.bn1.running_mean, reference.bn1.running_mean, rtol=0, atol=0)


@pytest.mark.parametrize(
    "norm,layer", [("frozen_bn", FrozenBatchNorm2d), ("bn", torch.nn.BatchNorm2d), ("gn", torch.nn.GroupNorm)]
)
def test_norm_choice(norm, layer):
    backbone, _ = build_backbone("resnet18", 32, norm=norm)
    assert any(isinstance(m, layer) for m in backbone.modules())


def test_local_state_dict_loads_strictly(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        reference.conv1.weight.fill_(0.125)
        reference.layer3[0].bn1.running_var.fill_(4.0)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    cfg = DetectorConfig(backbone="resnet18", stride=16, weights=str(path), num_classes=3, min_size=64, max_size=96)
    assert cfg.resolved_norm == "frozen_bn" and cfg.resolved_trainable_layers == 3
    model = build_detector(cfg)
    assert torch.all(model.backbone.body[0][0].weight == 0.125)
    assert torch.all(model.backbone.body[3][0].bn1.running_var == 4.0)
    # Trainable layers 3 with a pretrained file: stem and layer1 frozen, layer2+ trained.
    assert (
        not model.backbone.body[1][0].conv1.weight.requires_grad
        and model.backbone.body[2][0].conv1.weight.requires_grad
    )
    # A wrapped checkpoint {"state_dict": ...} is accepted too.
    torch.save({"state_dict": reference.state_dict()}, tmp_path / "wrapped.pth")
    build_backbone("resnet18", 32, weights=str(tmp_path / "wrapped.pth"))


def _vgg16_state_without_memory() -> dict[str, torch.Tensor]:
    """A full vgg16 state dict whose tensors are stride-0 views of one number each, so
    saving it costs bytes, not the 528 MB of the real classifier."""
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).state_dict().items()}
    return {k: torch.full((1,), 0.5 if k.startswith("features.") else 0.0).expand(shape) for k, shape in shapes.items()}


def test_vgg16_state_dict_loads_features_and_checks_the_classifier(tmp_path):
    state = _vgg16_state_without_memory()
    torch.save(state, tmp_path / "vgg16.pth")
    backbone, _ = build_backbone("vgg16", 16, weights=str(tmp_path / "vgg16.pth"))
    assert all(torch.all(p == 0.5) for p in backbone.body.parameters())
    state["classifier.0.weight"] = torch.zeros(1).expand(10, 10)
    state["classifier.9.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        ValueError, match=r"unexpected keys: classifier\.9\.weight.*wrong shapes: classifier\.0\.weight \(10, 10\)"
    ):
        build_backbone("vgg16", 32, weights=str(tmp_path / "bad.pth"))


def test_wrong_state_dict_lists_missing_and_unexpected_keys(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"unexpected keys: layer1\.2\.") as info:
        build_backbone("resnet18", 32, weights=str(path))
    assert "missing keys: none" in str(info.value)
    partial = tmp_path / "vgg_partial.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    with pytest.raises(ValueError, match=r"missing keys: features\.0\.bias"):
        build_backbone("vgg16", 32, weights=str(partial))
    junk = tmp_path / "junk.pth"
    torch.save([1, 2, 3], junk)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        build_backbone("vgg16", 32, weights=str(junk))


def test_weights_name_download_failure_says_pass_a_local_file(monkeypatch):
    """A torchvision weights name downloads only on request; here the 'network' refuses."""
    from torchvision.models._api import WeightsEnum

    def refuse(self, *args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", refuse)
    cfg = DetectorConfig(backbone="resnet18", weights="IMAGENET1K_V1", num_classes=3)
    with pytest.raises(RuntimeError, match=r"could not download.*pass its local path as weights='/path/to/resnet18-"):
        build_detector(cfg)
    with pytest.raises(RuntimeError, match="could not download"):
        build_backbone("vgg16", 16, weights="DEFAULT")
    with pytest.raises(ValueError, match="DetectorConfig.weights='IMAGENET1K_V9'"):
        DetectorConfig(backbone="resnet18", weights="IMAGENET1K_V9")
