"""evaluate.py end to end: its AP is pycocotools' own on its detections.json; side by side; bad checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch
from lit_helpers import tiny_module_kwargs
from pycocotools.cocoeval import COCOeval

from detector.checkpointing import load_checkpoint
from detector.cli import main_evaluate
from detector.evaluation.coco_eval import STAT_NAMES, load_coco
from detector.lit.module import DetectorModule


def _evaluate(args, capsys):
    docs = main_evaluate(args=args)
    return docs, capsys.readouterr().out


def test_printed_and_written_ap_equal_cocoeval_on_detections_json(trained_run, tmp_path, capsys):
    out_dir = tmp_path / "eval"
    docs, printed = _evaluate([str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out_dir)], capsys)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    detections = json.loads((out_dir / "detections.json").read_text())
    assert metrics == docs["model"]
    assert len(detections) > 0 and metrics["num_images"] == 3
    assert {d["category_id"] for d in detections} <= set(range(1, 8))

    # pycocotools directly on the written file, against the dataset's own annotation file
    gt = load_coco(metrics["annotation_file"])
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(gt, gt.loadRes(str(out_dir / "detections.json")), "bbox")
        evaluator.evaluate(), evaluator.accumulate(), evaluator.summarize()
    for name, value in zip(STAT_NAMES, evaluator.stats):
        expected = None if value < 0 else float(value)
        assert metrics["bbox"][name] == pytest.approx(expected) if expected is not None else metrics["bbox"][name] is None
    ap_line = next(line for line in printed.splitlines() if line.startswith("bbox AP "))
    assert ap_line.split()[-1] == f"{evaluator.stats[0]:.4f}"
    for row in ("bbox AP50", "bbox AP75", "bbox APs", "bbox APm", "bbox APl", "bbox AR1", "bbox AR10", "bbox AR100",
                "bbox AP[circle]"):
        assert row in printed


def test_side_by_side_with_deltas(trained_run, tmp_path, capsys):
    best, last = trained_run / "checkpoints" / "best.ckpt", trained_run / "checkpoints" / "last.ckpt"
    other = tmp_path / "copy" / "last.ckpt"
    other.parent.mkdir()
    shutil.copy(last, other)
    out_dir = tmp_path / "cmp"
    docs, printed = _evaluate([str(last), str(best), str(other), "--output", str(out_dir), "--per_class", "false"], capsys)
    labels = list(docs)
    assert len(labels) == 3 and len(set(labels)) == 3
    header = next(line for line in printed.splitlines() if line.startswith("metric"))
    assert all(label in header for label in labels)
    ap_line = next(line for line in printed.splitlines() if line.startswith("bbox AP "))
    assert "(+0.0000)" in ap_line  # the copy of the first checkpoint: zero delta
    comparison = json.loads((out_dir / "comparison.json").read_text())
    assert comparison["reference"] == labels[0]
    assert comparison["deltas"][labels[2]]["bbox"]["AP"] == pytest.approx(0.0)
    for label in labels:
        assert (out_dir / label / "metrics.json").is_file() and (out_dir / label / "detections.json").is_file()


def _variant(trained_run, tmp_path, name, edit):
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")
    edit(ckpt)
    path = tmp_path / f"{name}.ckpt"
    torch.save(ckpt, path)
    return path


def _other_class_count(ckpt):
    module = DetectorModule(**tiny_module_kwargs(num_classes=5))
    ckpt["state_dict"] = module.state_dict()
    ckpt["hyper_parameters"]["num_classes"] = 5
    ckpt["detector"]["category_ids"] = [1, 2, 3, 4]
    ckpt["detector"]["category_names"] = ckpt["detector"]["category_names"][:4]


def _other_categories(ckpt):
    ckpt["detector"]["category_names"] = list(reversed(ckpt["detector"]["category_names"]))


def _other_architecture(ckpt):
    ckpt["hyper_parameters"]["backbone"] = "resnet34"  # weights are resnet18's


def _other_model(ckpt):
    ckpt["hyper_parameters"] = {"hidden_dim": 32}
    ckpt.pop("detector")


@pytest.mark.parametrize("edit, match", [
    (_other_architecture, "do not fit the architecture"),
    (_other_class_count, "num_classes=5"),
    (_other_categories, "categories do not match"),
    (_other_model, "checkpoint of another model"),
])
def test_bad_checkpoints_fail_before_any_work(edit, match, trained_run, tmp_path, capsys):
    bad = _variant(trained_run, tmp_path, "bad", edit)
    good = trained_run / "checkpoints" / "last.ckpt"
    out_dir = tmp_path / "eval"
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[str(good), str(bad), "--output", str(out_dir)])  # the good one comes first
    err = capsys.readouterr().err
    assert exc.value.code == 2 and match in err and "bad.ckpt" in err
    assert not out_dir.exists()  # nothing was evaluated, nothing written


@pytest.mark.parametrize("content", [b"hello", json.dumps({"state_dict": 1}).encode()])
def test_non_checkpoint_files_are_refused(content, tmp_path, capsys):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(SystemExit):
        main_evaluate(args=[str(path), "--output", str(tmp_path / "eval")])
    assert "not a checkpoint that loads safely" in capsys.readouterr().err


def test_output_is_required(trained_run, capsys):
    with pytest.raises(SystemExit):
        main_evaluate(args=[str(trained_run / "checkpoints" / "last.ckpt")])
    assert "output" in capsys.readouterr().err


def test_checkpoint_whose_start_weights_file_is_gone_still_evaluates(trained_run, tmp_path):
    """A run started from a local weights file must evaluate where that file does not exist:
    the checkpoint's state_dict replaces those weights, so they are never re-read."""
    from detector.evaluation.checkpoints import load_detector

    def started_from_file(ckpt):
        ckpt["hyper_parameters"]["weights"] = str(tmp_path / "gone" / "resnet18-imagenet.pth")
        ckpt["hyper_parameters"]["norm"] = "gn"  # what the tiny run trained with (explicit, as with weights it must be)

    path = _variant(trained_run, tmp_path, "from_weights", started_from_file)
    loaded = load_detector(path)
    reference = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in loaded.module.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_pretrained_start_with_default_norm_keeps_its_architecture(trained_run, tmp_path):
    """norm=None means frozen_bn when the run started from weights: evaluation, which never
    re-reads those weights, must still build frozen BN (not gn) to fit the state_dict."""
    from detector.evaluation.checkpoints import load_detector

    frozen = DetectorModule(**tiny_module_kwargs(norm="frozen_bn"))

    def pretrained_start(ckpt):
        ckpt["state_dict"] = frozen.state_dict()
        ckpt["hyper_parameters"].update(weights=str(tmp_path / "gone.pth"), norm=None, trainable_layers=None)

    loaded = load_detector(_variant(trained_run, tmp_path, "pretrained", pretrained_start))
    assert loaded.module.detector_config.resolved_norm == "frozen_bn"
    assert loaded.module.detector_config.resolved_trainable_layers == 3
