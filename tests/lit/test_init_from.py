"""model.init_from: non-strict loading of our checkpoints and torchvision detection state dicts.

Every test builds its source in memory or in tmp_path (weights=None: nothing is downloaded).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from tiny_run import tiny_args, tiny_detector
from torchvision.models.detection import FasterRCNN, fasterrcnn_mobilenet_v3_large_320_fpn, fasterrcnn_resnet50_fpn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

from detector.checkpointing import DETECTOR_KEY, detector_record, load_checkpoint
from detector.lit.category_match import class_order
from detector.lit.init_from import InitFromError, InitFromWarning, init_from
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
    ids, names = _table(trained_run)
    report, text = init_from(model, config, str(trained_run / "checkpoints" / "last.ckpt"), category_ids=ids,
                             category_names=names)
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
        with pytest.warns(InitFromWarning, match="could not be compared"):  # a state dict has no category table
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


# ---------------------------------------------------------------- category tables (same class count)
BOX_ROWS = ("roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight")


def _table(trained_run):
    record = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")[DETECTOR_KEY]
    return list(record["category_ids"]), list(record["category_names"])


def _with_table(trained_run, tmp_path, ids, names, name="source.ckpt"):
    """trained_run's last.ckpt with its category record replaced (as train.py writes it: `detector_record`)."""
    checkpoint = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    checkpoint[DETECTOR_KEY] = detector_record(ids, names)
    torch.save(checkpoint, tmp_path / name)
    return str(tmp_path / name), {k[len("model."):]: v for k, v in checkpoint["state_dict"].items()}


def _init_quietly(model, config, path, **table):
    """`init_from`, failing on any InitFromWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", InitFromWarning)
        return init_from(model, config, path, **table)


def test_same_category_table_loads_the_class_rows_without_a_word(trained_run):
    ids, names = _table(trained_run)
    config = tiny_detector()
    model = build_detector(config)
    report, text = _init_quietly(model, config, str(trained_run / "checkpoints" / "last.ckpt"),
                                 category_ids=ids, category_names=names)
    assert _row(report, "box predictor")["loaded"] == 4 and "categor" not in text.splitlines()[0]


def _blocks(tensor, n):
    return tensor.reshape(n, -1, *tensor.shape[1:])  # (K*m, ...) -> (K, m, ...)


def test_other_categories_with_the_same_count_are_re_initialised_with_a_warning(trained_run, tmp_path):
    ids, names = _table(trained_run)  # 7 shapes: the checkpoint's own table is kept
    path, stored = _with_table(trained_run, tmp_path, ids, names)
    ours = ["car", "bus", "kite", "boat", "tram", "ship", "sled"]  # ids 1..7 now name other things
    config = tiny_detector()
    model = build_detector(config)
    fresh = _fresh(model)
    with pytest.warns(InitFromWarning) as caught:
        report, text = init_from(model, config, path, category_ids=ids, category_names=ours)
    message = str(caught[0].message)
    assert f"model.init_from={path!r}" in message and "categories differ" in message
    assert f"same id, other name: 1 {names[0]!r} -> 'car', 2 {names[1]!r} -> 'bus'" in message
    assert "train on data with its category table" in message  # how to proceed
    assert _row(report, "box predictor") == {"loaded": 0, "skipped (shape)": 0, "missing": 0, "re-initialised": 4, "unused": 0}
    state = model.state_dict()
    assert all(torch.equal(state[k], fresh[k]) for k in PREDICTOR)
    assert all(torch.equal(state[k], stored[k]) for k in state if not k.startswith("roi_heads.box_predictor."))
    assert "categories differ" in text.splitlines()[0] and "re-initialised" in text.splitlines()[0]

    other_ids = [i + 10 for i in ids]  # names unknown on this run's side: compared by id
    with pytest.warns(InitFromWarning, match=r"only in the file: 1 .*only in this run: 11"):
        report, _ = init_from(build_detector(config), config, path, category_ids=other_ids)
    assert report.total("re-initialised") == 4


def test_shared_categories_keep_their_rows_by_name_the_others_start_fresh(trained_run, tmp_path):
    ids, names = _table(trained_run)
    path, stored = _with_table(trained_run, tmp_path, ids, names)
    n = len(ids) + 1

    # same count, two categories replaced: the five shared ones keep their rows, the two new ones start fresh
    ours = ["car", "bus", *names[2:]]
    config = tiny_detector()
    model = build_detector(config)
    fresh = _fresh(model)
    with pytest.warns(InitFromWarning, match=r"categories differ .*same id, other name: 1 .*'car'.*the class rows of "
                                             r"5 shared categories loaded by name .*2 others re-initialised \('car', 'bus'\)"):
        report, text = init_from(model, config, path, category_ids=ids, category_names=ours)
    state = model.state_dict()
    for key in PREDICTOR:
        got, want, new = _blocks(state[key], n), _blocks(stored[key], n), _blocks(fresh[key], n)
        assert torch.equal(got[[0, *range(3, n)]], want[[0, *range(3, n)]]), key  # background and the shared ones
        assert torch.equal(got[[1, 2]], new[[1, 2]]), key  # 'car' and 'bus': the model's own init, not 'circle' rows
    assert "categories differ: the class rows of 5 shared categories" in text.splitlines()[0]

    # another class count (COCO-style 8 -> a 3-category dataset), two shared in another order, one new
    ours = [names[3], "kite", names[0]]
    config4 = tiny_detector(num_classes=4)
    model = build_detector(config4)
    fresh = _fresh(model)
    report, text = _init_quietly(model, config4, path, category_ids=[5, 6, 7], category_names=ours)
    assert _row(report, "box predictor")["loaded"] == 4 and report.total("re-initialised") == 0
    state = model.state_dict()
    for key in PREDICTOR:
        got, want, new = _blocks(state[key], 4), _blocks(stored[key], n), _blocks(fresh[key], 4)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[4]) and torch.equal(got[3], want[1]), key
        assert torch.equal(got[2], new[2]), key  # 'kite' is not in the file
    assert (f"{n} -> 4 classes: the class rows of 2 shared categories loaded by name ({names[3]!r}, {names[0]!r}), "
            "1 other re-initialised ('kite')") in text.splitlines()[0]

    # nothing shared, or no names on this side: re-initialised as before, without a category warning
    for table in ({"category_ids": [1, 2, 3], "category_names": ["a", "b", "c"]}, {"category_ids": [1, 2, 3]}):
        report, text = _init_quietly(build_detector(config4), config4, path, **table)
        assert report.total("re-initialised") == 4 and "re-initialised" in text.splitlines()[0]


def test_same_categories_in_another_order_move_the_rows_by_name(trained_run, tmp_path):
    ids, names = _table(trained_run)
    path, stored = _with_table(trained_run, tmp_path, ids, names)
    swapped = [names[1], names[0], *names[2:]]  # this run's label 1 is the file's label 2 and vice versa
    config = tiny_detector()
    model = build_detector(config)
    report, text = _init_quietly(model, config, path, category_ids=ids, category_names=swapped)
    assert _row(report, "box predictor")["loaded"] == 4 and report.total("re-initialised") == 0
    state = model.state_dict()
    order = [0, 2, 1, *range(3, len(ids) + 1)]
    for key in BOX_ROWS:  # cls_score: one row per class; bbox_pred: four (dx, dy, dw, dh)
        rows = stored[key].reshape(len(order), -1, stored[key].shape[-1])[order].reshape(stored[key].shape)
        assert torch.equal(state[key], rows)
    assert torch.equal(state["roi_heads.box_predictor.cls_score.weight"][1], stored["roi_heads.box_predictor.cls_score.weight"][2])
    assert "another order" in text.splitlines()[0] and f"{names[1]!r} 2 -> 1" in text.splitlines()[0]

    renumbered = [i + 100 for i in ids]  # a renumbered copy of the data, same names in the same order
    model = build_detector(config)
    _, text = _init_quietly(model, config, path, category_ids=renumbered, category_names=names)
    assert all(torch.equal(model.state_dict()[k], stored[k]) for k in PREDICTOR)
    assert "other category ids, same names" in text.splitlines()[0]


def test_mask_logits_are_re_initialised_too_when_categories_differ(tmp_path):
    mask = {"mask": True, "mask_head_layers": (16,), "mask_dim_reduced": 16}
    config = tiny_detector(num_classes=3, **mask)
    source = build_detector(config)
    checkpoint = {"state_dict": {f"model.{k}": v for k, v in source.state_dict().items()},
                  "hyper_parameters": {"detector": config.to_dict()}, DETECTOR_KEY: detector_record([1, 2], ["cat", "dog"])}
    torch.save(checkpoint, tmp_path / "pets.ckpt")
    model = build_detector(config)
    with pytest.warns(InitFromWarning, match=r"same id, other name: 1 'cat' -> 'car', 2 'dog' -> 'bus'"):
        report, _ = init_from(model, config, str(tmp_path / "pets.ckpt"), category_ids=[1, 2], category_names=["car", "bus"])
    assert _row(report, "mask predictor") == {"loaded": 2, "skipped (shape)": 0, "missing": 0, "re-initialised": 2, "unused": 0}
    assert _row(report, "box predictor")["re-initialised"] == 4

    model = build_detector(config)  # {1: dog, 2: cat}: the same pets, rows follow the names
    _init_quietly(model, config, str(tmp_path / "pets.ckpt"), category_ids=[1, 2], category_names=["dog", "cat"])
    logits = "roi_heads.mask_predictor.mask_fcn_logits.weight"
    assert torch.equal(model.state_dict()[logits], source.state_dict()[logits][[0, 2, 1]])


def test_unknown_tables_load_as_before_with_one_warning(trained_run, tmp_path):
    ids, names = _table(trained_run)
    path, stored = _with_table(trained_run, tmp_path, None, None, "no_table.ckpt")  # saved without a datamodule table
    config = tiny_detector()
    cases = [(path, {"category_ids": ids, "category_names": names}, "the file stores no category table"),
             (str(trained_run / "checkpoints" / "last.ckpt"), {}, "this run's category table was not given")]
    torch.save(build_detector(config).state_dict(), tmp_path / "plain.pth")
    cases.append((str(tmp_path / "plain.pth"), {"category_ids": ids}, "no category table (a state dict)"))
    for file, table, why in cases:
        model = build_detector(config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            report, text = init_from(model, config, file, **table)
        ours = [w for w in caught if issubclass(w.category, InitFromWarning)]
        assert len(ours) == 1 and why in str(ours[0].message) and "could not be compared" in str(ours[0].message)
        assert _row(report, "box predictor")["loaded"] == 4  # today's behaviour: the rows load
        assert "categories not compared" in text.splitlines()[0]
    assert all(torch.equal(model.state_dict()[k], torch.load(tmp_path / "plain.pth")[k]) for k in PREDICTOR)

    # another class count: the rows are re-initialised anyway, no category warning
    config4 = tiny_detector(num_classes=4)
    report, _ = _init_quietly(build_detector(config4), config4, path, category_ids=[1, 2, 3], category_names=["a", "b", "c"])
    assert report.total("re-initialised") == 4


def test_class_order_matches_by_name_else_by_the_whole_table():
    cat_dog = [(1, "cat"), (2, "dog")]
    assert class_order(cat_dog, cat_dog) == [0, 1, 2]
    assert class_order(cat_dog, [(1, "dog"), (2, "cat")]) == [0, 2, 1]
    assert class_order(cat_dog, [(5, "cat"), (9, "dog")]) == [0, 1, 2]  # renumbered ids, same names
    assert class_order(cat_dog, [(1, "car"), (2, "bus")]) is None
    assert class_order(cat_dog, [(1, "cat")]) is None
    assert class_order([(1, None), (2, None)], [(1, None), (2, None)]) == [0, 1, 2]  # ids only
    assert class_order([(1, None), (2, None)], [(2, None), (1, None)]) is None  # no names: no moving rows
    assert class_order(cat_dog, [(1, None), (2, None)]) == [0, 1, 2]  # names on one side only: ids decide
    assert class_order(cat_dog, [(2, None), (1, None)]) is None
    assert class_order([(1, "a"), (2, "a")], [(2, "a"), (1, "a")]) is None  # repeated names: the table decides


# ---------------------------------------------------------------- FPN
@pytest.fixture(scope="module")
def fpn_run(tmp_path_factory, data_root):
    """A train.py checkpoint of the tiny model with ``model.detector.fpn: true`` (one step, no validation)."""
    from detector.cli import DetectorCLI

    run_dir = tmp_path_factory.mktemp("fpn-run")
    with pytest.MonkeyPatch.context() as patch:  # module scope: conftest's _plain_argv has not run yet
        patch.setattr("sys.argv", ["train.py"])
        DetectorCLI(args=["fit", *tiny_args(data_root, run_dir), "--model.detector.fpn", "true", "--trainer.max_steps",
                          "1", "--trainer.limit_val_batches", "0"])
    return run_dir / "checkpoints" / "last.ckpt"


def test_fpn_checkpoint_and_state_dicts_into_an_fpn_model(fpn_run, tmp_path):
    stored = {k[len("model."):]: v for k, v in load_checkpoint(fpn_run)["state_dict"].items()}
    assert any(k.startswith("backbone.fpn.") for k in stored)  # precondition: an FPN run
    torch.save(stored, tmp_path / "network.pth")  # module.model.state_dict()
    torch.save({f"model.{k}": v for k, v in stored.items()}, tmp_path / "module.pth")  # the module's
    config = tiny_detector(fpn=True)
    ids, names = _table_of(fpn_run)
    for path in (fpn_run, tmp_path / "network.pth", tmp_path / "module.pth"):
        model = build_detector(config)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InitFromWarning)  # the .pth files carry no category table
            report, text = init_from(model, config, str(path), category_ids=ids, category_names=names)
        state = model.state_dict()
        assert report.total("loaded") == sum(not k.endswith("num_batches_tracked") for k in state), text
        assert all(torch.equal(v, stored[k]) for k, v in state.items())
        assert "+ FPN) -> model (resnet18 stride 32 + FPN)" in text.splitlines()[0]


def _table_of(path):
    record = load_checkpoint(path)[DETECTOR_KEY]
    return record["category_ids"], record["category_names"]


def test_torchvision_fpn_detector_loads_whole_into_an_fpn_model(tmp_path):
    tv = _torchvision_resnet18_fpn()  # 256-channel pyramid, 3 anchors per level, 64-wide box head, 91 classes
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    config = tiny_detector(num_classes=4, fpn=True, out_channels=None, representation_size=64, norm="frozen_bn")
    model = build_detector(config)
    report, text = init_from(model, config, str(tmp_path / "tv.pth"))
    assert report.total("loaded") == len(model.state_dict()) - 4 and report.total("re-initialised") == 4  # 91 -> 4
    assert report.total("missing") == report.total("unused") == report.total("skipped (shape)") == 0
    assert torch.equal(model.state_dict()["backbone.fpn.layer_blocks.3.0.weight"], tv.state_dict()["backbone.fpn.layer_blocks.3.0.weight"])


def test_fpn_disagreement_is_an_error_naming_the_key_and_the_fix(fpn_run, trained_run, tmp_path):
    plain, fpn = tiny_detector(), tiny_detector(fpn=True)
    with pytest.raises(InitFromError) as err:  # an FPN checkpoint into a single-level model
        init_from(build_detector(plain), plain, str(fpn_run))
    message = str(err.value)
    assert message.startswith(f"model.init_from={str(fpn_run)!r}: the file (checkpoint of ours")
    assert "model.detector.fpn differs" in message and "Fix: set model.detector.fpn: true" in message
    with pytest.raises(InitFromError, match=r"resnet18 stride 32\) has one feature map .*Fix: set model.detector.fpn: false"):
        init_from(build_detector(fpn), fpn, str(trained_run / "checkpoints" / "last.ckpt"))
    torch.save(build_detector(plain).state_dict(), tmp_path / "plain.pth")  # a single-level state dict
    with pytest.raises(InitFromError, match="model.detector.fpn differs"):
        init_from(build_detector(fpn), fpn, str(tmp_path / "plain.pth"))


def test_every_rank_loads_only_rank_zero_warns_and_prints(tmp_path, capsys):
    """Under DDP each rank applies init_from; N copies of a category warning read as N problems."""
    from types import SimpleNamespace

    from tiny_run import tiny_module_kwargs

    from detector.lit.module import DetectorModule

    kwargs = tiny_module_kwargs(num_classes=3)
    plain = tmp_path / "plain.pth"  # a state dict: no category table, same class count -> one warning
    torch.save(build_detector(kwargs["detector"]).state_dict(), plain)
    for rank_zero in (True, False):
        module = DetectorModule(**{**kwargs, "init_from": str(plain)})
        module.category_ids, module.category_names = [1, 2], ["a", "b"]
        module._trainer = SimpleNamespace(is_global_zero=rank_zero)  # the rank, as a Trainer reports it
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module._apply_init_from()
        ours = [w for w in caught if issubclass(w.category, InitFromWarning)]
        assert len(ours) == (1 if rank_zero else 0)
        assert ("model.init_from:" in capsys.readouterr().out) is rank_zero
        assert module.init_from_report.total("loaded") == len(module.model.state_dict())  # every rank loaded


def test_category_match_docstring_examples():
    import doctest

    import detector.lit.category_match as category_match

    result = doctest.testmod(category_match, verbose=False)
    assert result.attempted >= 3 and result.failed == 0
