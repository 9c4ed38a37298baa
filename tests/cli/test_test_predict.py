"""train.py test / predict on tiny data: the test split scored like val, detections written, bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from tiny_run import tiny_args

from detector.cli import DetectorCLI
from detector.evaluation import flatten, merge_per_image

TEST_SPLIT = ["--data.synthetic_test", "2"]


def _ckpt(trained_run) -> str:
    return str(trained_run / "checkpoints" / "last.ckpt")


def _image_ids(annotation_file) -> set[int]:
    return {image["id"] for image in json.loads(Path(annotation_file).read_text())["images"]}


def test_test_prints_coco_metrics_of_the_test_split_and_matches_val_on_that_file(trained_run, data_root, tmp_path, capsys):
    cli = DetectorCLI(args=["test", *tiny_args(data_root, tmp_path / "test"), *TEST_SPLIT, "--ckpt_path", _ckpt(trained_run)])
    out = capsys.readouterr().out
    assert "test bbox (2 images):" in out  # the test split's 2 images, not val's 3
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    test = {k[len("test/"):]: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    assert {"bbox_AP", "bbox_AP50", "bbox_AP75", "bbox_AR100"} <= set(test)

    images, annotations = cli.datamodule.split_paths("test")
    assert cli.datamodule.test_annotation_file == str(annotations) and len(_image_ids(annotations)) == 2
    # the same file scored by `validate` gives the same numbers: one machinery, two splits
    val_cli = DetectorCLI(args=["validate", *tiny_args(data_root, tmp_path / "val"), "--data.val_images", str(images),
                                "--data.val_annotations", str(annotations), "--ckpt_path", _ckpt(trained_run)])
    val = {k[len("val/"):]: float(v) for k, v in val_cli.trainer.callback_metrics.items() if k.startswith("val/")}
    assert set(val) == set(test)
    assert all(val[k] == test[k] or (math.isnan(val[k]) and math.isnan(test[k])) for k in test)


def test_predict_returns_and_writes_the_test_splits_detections(trained_run, data_root, tmp_path, capsys):
    run = tmp_path / "run"
    cli = DetectorCLI(args=["predict", *tiny_args(data_root, run), *TEST_SPLIT, "--ckpt_path", _ckpt(trained_run)])
    written = json.loads((run / "predictions.json").read_text())
    returned = cli.trainer.predict_loop.predictions  # predict_step's {image_id: [record, ...]} per batch
    names = {image["id"]: image["file_name"] for image in json.loads(Path(cli.datamodule.test_annotation_file).read_text())["images"]}
    assert all(r.pop("file_name") == names[r["image_id"]] for r in written)
    assert written == json.loads(json.dumps(flatten(merge_per_image(returned))))
    assert {r["image_id"] for r in written} == _image_ids(cli.datamodule.test_annotation_file)  # score 0 kept: all images
    assert all(1 <= r["category_id"] <= 7 and r["bbox"][0] >= 0 and r["bbox"][0] + r["bbox"][2] <= 96 + 1e-3
               and r["bbox"][1] + r["bbox"][3] <= 64 + 1e-3 and 0 <= r["score"] <= 1 for r in written)
    assert f"predict: {len(written)} detections on 2 images" in capsys.readouterr().out

    before = (run / "predictions.json").read_bytes()
    with pytest.raises(SystemExit) as exit_:  # an earlier predictions.json is not replaced silently
        DetectorCLI(args=["predict", *tiny_args(data_root, run), "--ckpt_path", _ckpt(trained_run)])
    assert exit_.value.code == 2
    assert "predictions.json holds earlier predictions: pass --overwrite true" in capsys.readouterr().err
    assert (run / "predictions.json").read_bytes() == before

    # --overwrite true replaces it; without a test split predict runs on val
    cli = DetectorCLI(args=["predict", *tiny_args(data_root, run), "--ckpt_path", _ckpt(trained_run), "--overwrite", "true"])
    written = json.loads((run / "predictions.json").read_text())
    assert {r["image_id"] for r in written} == _image_ids(cli.datamodule.val_annotation_file)
    assert cli.datamodule.predict_split == "val"


def test_test_without_a_test_split_is_one_error_line_naming_the_keys(trained_run, data_root, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        DetectorCLI(args=["test", *tiny_args(data_root, tmp_path), "--ckpt_path", _ckpt(trained_run)])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2
    assert err[-1].startswith("train.py: error: no test split: set data.test_images and data.test_annotations")
    assert "data.synthetic_test > 0" in err[-1]


def test_test_file_with_other_categories_than_the_checkpoint_is_refused(trained_run, data_root, three_class_coco,
                                                                       tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        DetectorCLI(args=["test", *tiny_args(data_root, tmp_path), "--data.test_images", str(three_class_coco / "val"),
                          "--data.test_annotations", str(three_class_coco / "annotations" / "instances_val.json"),
                          "--ckpt_path", _ckpt(trained_run)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "the dataset's categories do not match checkpoint" in err and "(4, 'star')" in err  # check_categories' message
    assert not list(tmp_path.glob("**/predictions.json"))


def test_a_format1_checkpoint_tests_with_its_own_model_settings(data_root, tmp_path, capsys):
    """LightningCLI puts a ckpt_path's stored model arguments into the config; format 1 (flat keys)
    used to stop with "Subcommand 'test' does not accept option 'model.backbone'"."""
    from test_checkpointing import format1_checkpoint

    old = format1_checkpoint(tmp_path / "old.ckpt")
    cli = DetectorCLI(args=["test", *tiny_args(data_root, tmp_path / "run"), *TEST_SPLIT, "--ckpt_path", str(old)])
    config = cli.model.detector_config
    assert (config.backbone, config.stride, config.roi_op, config.norm) == ("resnet18", 16, "roi_align", "bn")  # not tiny's
    assert "test/bbox_AP" in cli.trainer.callback_metrics and "test bbox (2 images):" in capsys.readouterr().out
