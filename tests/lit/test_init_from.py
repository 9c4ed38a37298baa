"""model.init_from: non-strict loading of our checkpoints and torchvision detection state dicts.

Every test builds its source in memory or in tmp_path (weights=None: nothing is downloaded).
"""

from __future__ import annotations

import pytest
import torch
from tiny_run import tiny_detector
from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from detector.checkpointing import load_checkpoint
from detector.lit.init_from import InitFromError, init_from
from detector.models import build_detector
from detector.models.transfer import BackboneMismatch, torchvision_to_ours, transfer_weights

PREDICTOR = ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.cls_score.bias",
             "roi_heads.box_predictor.bbox_pred.weight", "roi_heads.box_predictor.bbox_pred.bias")


def _count(model, prefix: str) -> int:
    return sum(k.startswith(prefix) and not k.endswith("num_batches_tracked") for k in model.state_dict())


def _row(report, group):
    return report.counts[group]


def _fresh(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_our_8_class_checkpoint_into_a_4_class_model(trained_run, capsys):
    path = str(trained_run / "checkpoints" / "last.ckpt")
    stored = {k[len("model."):]: v for k, v in load_checkpoint(path)["state_dict"].items()}
    config = tiny_detector(num_classes=4)
    model = build_detector(config)
    fresh = _fresh(model)
    report, text = init_from(model, config, path)

    n_backbone, n_rpn, n_head = _count(model, "backbone."), _count(model, "rpn."), _count(model, "roi_heads.box_head.")
    assert _row(report, "backbone") == {"loaded": n_backbone, "skipped (shape)": 0, "missing": 0, "re-initialised": 0, "unused": 0}
    assert _row(report, "rpn")["loaded"] == n_rpn and _row(report, "box head")["loaded"] == n_head
    assert _row(report, "box predictor") == {"loaded": 0, "skipped (shape)": 0, "missing": 0, "re-initialised": 4, "unused": 0}
    assert (report.source_classes, report.model_classes) == (8, 4)
    state = model.state_dict()
    assert all(torch.equal(state[k], stored[k]) for k in state if not k.startswith("roi_heads.box_predictor."))
    assert all(torch.equal(state[k], fresh[k]) for k in PREDICTOR)  # kept at the model's fresh init
    assert "8 -> 4 classes: the class-specific predictor is re-initialised" in text
    lines = text.splitlines()
    assert lines[1].split() == ["group", "loaded", "skipped", "(shape)", "missing", "re-initialised", "unused"]
    assert lines[-2].split() == ["box", "predictor", "0", "0", "0", "4", "0"]
    assert lines[-1].split() == ["total", str(n_backbone + n_rpn + n_head), "0", "0", "4", "0"]


def test_same_class_count_loads_the_predictor_too(trained_run):
    config = tiny_detector()  # 8 classes, like the checkpoint
    model = build_detector(config)
    report, text = init_from(model, config, str(trained_run / "checkpoints" / "last.ckpt"))
    assert _row(report, "box predictor")["loaded"] == 4 and report.total("re-initialised") == 0
    assert report.total("skipped (shape)") == report.total("missing") == 0
    assert "re-initialised" not in text.splitlines()[0]


def test_our_network_state_dict_with_or_without_the_module_prefix(tmp_path):
    config = tiny_detector(num_classes=4)
    source = build_detector(config)
    for name, state in (("inner.pth", source.state_dict()),
                        ("module.pth", {f"model.{k}": v for k, v in source.state_dict().items()})):
        torch.save(state, tmp_path / name)
        model = build_detector(config)
        report, _ = init_from(model, config, str(tmp_path / name))
        assert report.total("loaded") == len(model.state_dict()) and report.total("re-initialised") == 0
        assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def _torchvision_resnet18_fpn():
    """A torchvision detection model of the fasterrcnn_resnet50_fpn layout on a ResNet-18 (small box head)."""
    torch.manual_seed(0)
    return FasterRCNN(resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=5),
                      box_head=TwoMLPHead(256 * 7 * 7, 64), box_predictor=FastRCNNPredictor(64, 91))


@pytest.mark.parametrize("stride", [32, 16])
def test_torchvision_detection_state_dict_file(stride, tmp_path):
    tv = _torchvision_resnet18_fpn()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    extra = {"box_head": "res5", "out_channels": None} if stride == 16 else {}
    config = tiny_detector(num_classes=4, stride=stride, norm="frozen_bn", **extra)
    model = build_detector(config)
    report, text = init_from(model, config, str(tmp_path / "tv.pth"))

    body = _count(model, "backbone.body.")
    backbone = _row(report, "backbone")
    assert backbone["loaded"] == body and backbone["skipped (shape)"] == 0
    assert backbone["missing"] == _count(model, "backbone.reduce.")  # our 1x1 neck (out_channels), none in torchvision
    fpn = sum(k.startswith("backbone.fpn.") for k in tv.state_dict())
    assert backbone["unused"] == fpn  # (at stride 16 layer4 goes to the box head, not unused)
    assert _row(report, "box predictor")["re-initialised"] == 4  # 91 -> 4 classes
    tv_state = tv.state_dict()
    ours = model.state_dict()
    assert torch.equal(ours["backbone.body.0.0.weight"], tv_state["backbone.body.conv1.weight"])
    assert torch.equal(ours["backbone.body.3.1.conv2.weight"], tv_state["backbone.body.layer3.1.conv2.weight"])
    if stride == 16:  # torchvision's layer4 is our C4 model's box head
        assert _row(report, "box head")["loaded"] == _count(model, "roi_heads.box_head.c5.")
        assert torch.equal(ours["roi_heads.box_head.c5.0.conv1.weight"], tv_state["backbone.body.layer4.0.conv1.weight"])
    else:  # fc6 from 256 x 7 x 7 vs our 16-channel neck: other shapes, skipped (as the RPN head's 3 anchors)
        assert _row(report, "box head") == {"loaded": 0, "skipped (shape)": 4, "missing": 0, "re-initialised": 0, "unused": 0}
        assert _row(report, "rpn")["skipped (shape)"] == 6
    assert "torchvision detection state dict, resnet18 stride 32 + FPN" in text


def test_torchvision_fasterrcnn_resnet50_fpn_keys_map_onto_a_resnet50():
    tv = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    config = tiny_detector(num_classes=4, backbone="resnet50", norm="frozen_bn")
    model = build_detector(config)
    report = transfer_weights(model, torchvision_to_ours(tv.state_dict(), 32), source="test")
    assert _row(report, "backbone")["loaded"] == _count(model, "backbone.body.")
    assert _row(report, "box predictor")["re-initialised"] == 4


def test_another_backbone_is_an_error_naming_keys_and_both_backbones(trained_run, tmp_path):
    mobilenet = fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    torch.save(mobilenet.state_dict(), tmp_path / "mobilenet.pth")
    config = tiny_detector(num_classes=4)
    model = build_detector(config)
    fresh = _fresh(model)
    with pytest.raises(InitFromError) as err:
        init_from(model, config, str(tmp_path / "mobilenet.pth"))
    message = str(err.value)
    assert "model.init_from=" in message and "mobilenet_v3" in message and "(resnet18 stride 32)" in message
    assert "File keys e.g. backbone.body.0.0.weight (16, 3, 3, 3)" in message and "model keys e.g. backbone.body.0.0.weight (64, 3, 7, 7)" in message
    assert all(torch.equal(v, fresh[k]) for k, v in model.state_dict().items())  # nothing loaded

    # a checkpoint of ours with another ResNet: names and shapes of the first blocks would fit
    config34 = tiny_detector(num_classes=4, backbone="resnet34")
    with pytest.raises(InitFromError, match=r"its backbone \(resnet18 stride 32\) is not the model's \(resnet34 stride 32\)"):
        init_from(build_detector(config34), config34, str(trained_run / "checkpoints" / "last.ckpt"))
    with pytest.raises(BackboneMismatch):
        transfer_weights(build_detector(config34), build_detector(config).state_dict(), source="x")


def test_missing_or_foreign_files_name_the_key(tmp_path):
    config = tiny_detector(num_classes=4)
    with pytest.raises(InitFromError, match=r"model.init_from='.*nope.ckpt': no such file"):
        init_from(build_detector(config), config, str(tmp_path / "nope.ckpt"))
    torch.save({"epoch": 3, "note": "no tensors"}, tmp_path / "other.pth")
    with pytest.raises(InitFromError, match="holds neither a checkpoint of train.py nor a state dict"):
        init_from(build_detector(config), config, str(tmp_path / "other.pth"))


def test_mask_predictor_logits_are_re_initialised_and_the_mask_head_loads(tmp_path):
    mask = {"mask": True, "mask_head_layers": (16,), "mask_dim_reduced": 16}
    source = build_detector(tiny_detector(**mask))  # 8 classes
    torch.save(source.state_dict(), tmp_path / "mask8.pth")
    config = tiny_detector(num_classes=4, **mask)
    model = build_detector(config)
    report, text = init_from(model, config, str(tmp_path / "mask8.pth"))
    assert _row(report, "mask head")["loaded"] == _count(model, "roi_heads.mask_head.")
    assert _row(report, "mask predictor") == {"loaded": 2, "skipped (shape)": 0, "missing": 0, "re-initialised": 2, "unused": 0}
    assert torch.equal(model.state_dict()["roi_heads.mask_predictor.conv5_mask.weight"],
                       source.state_dict()["roi_heads.mask_predictor.conv5_mask.weight"])
    assert [line.split()[:2] for line in text.splitlines()[2:-1]] == [
        ["backbone", str(_count(model, "backbone."))], ["rpn", "6"], ["box", "head"], ["box", "predictor"], ["mask", "head"], ["mask", "predictor"]]
