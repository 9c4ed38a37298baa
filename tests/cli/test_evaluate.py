"""evaluate.py end to end: its AP is pycocotools' own on its detections.json; side by side; bad checkpoints."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch
from pycocotools.cocoeval import COCOeval
from tiny_run import run_script, tiny_module_kwargs

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
    ckpt["hyper_parameters"]["detector"]["num_classes"] = 5
    ckpt["detector"]["category_ids"] = [1, 2, 3, 4]
    ckpt["detector"]["category_names"] = ckpt["detector"]["category_names"][:4]


def _other_categories(ckpt):
    ckpt["detector"]["category_names"] = list(reversed(ckpt["detector"]["category_names"]))


def _other_architecture(ckpt):
    ckpt["hyper_parameters"]["detector"]["backbone"] = "resnet34"  # weights are resnet18's


def _other_model(ckpt):
    ckpt["hyper_parameters"] = {"hidden_dim": 32}
    ckpt.pop("detector")


@pytest.mark.parametrize("edit, match", [
    (_other_architecture, "do not fit the architecture"),
    (_other_class_count, "num_classes=5"),
    (_other_categories, "do not match"),
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
    from detector.checkpointing import load_detector

    def started_from_file(ckpt):
        ckpt["hyper_parameters"]["detector"]["weights"] = str(tmp_path / "gone" / "resnet18-imagenet.pth")
        ckpt["hyper_parameters"]["detector"]["norm"] = "gn"  # what the tiny run trained with (explicit, as with weights it must be)

    path = _variant(trained_run, tmp_path, "from_weights", started_from_file)
    loaded = load_detector(path)
    reference = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")["state_dict"]
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, reference["model." + key]), key


def test_pretrained_start_with_default_norm_keeps_its_architecture(trained_run, tmp_path):
    """norm=None means frozen_bn when the run started from weights: evaluation, which never
    re-reads those weights, must still build frozen BN (not gn) to fit the state_dict."""
    from detector.checkpointing import load_detector

    frozen = DetectorModule(**tiny_module_kwargs(norm="frozen_bn"))

    def pretrained_start(ckpt):
        ckpt["state_dict"] = frozen.state_dict()
        ckpt["hyper_parameters"]["detector"].update(weights=str(tmp_path / "gone.pth"), norm=None, trainable_layers=None)

    loaded = load_detector(_variant(trained_run, tmp_path, "pretrained", pretrained_start))
    assert loaded.config.resolved_norm == "frozen_bn"
    assert loaded.config.resolved_trainable_layers == 3


# --------------------------------------------------------------------------------------------------
# Issue 12: categories of the scored file (2), output folder errors (7), no silent overwrite (9),
# evaluation needs no training files (12).

def _synthetic_folder(data_root):
    """The tiny synthetic COCO folder the `trained_run` checkpoint was trained on (train/, val/, annotations/)."""
    from detector.data.synthetic import ensure_synthetic_coco

    return ensure_synthetic_coco(num_train=4, num_val=3, width=96, height=64, cache_dir=data_root, workers=1)


def _coco_flags(folder, val_annotations=None, train=True):
    flags = ["--data.dataset", "coco", "--data.val_images", str(folder / "val"),
             "--data.val_annotations", str(val_annotations or folder / "annotations" / "instances_val.json")]
    if train:
        flags += ["--data.train_images", str(folder / "train"),
                  "--data.train_annotations", str(folder / "annotations" / "instances_train.json")]
    return flags


def _renamed(categories):
    for c in categories:
        c["name"] = f"other_{c['name']}"


def _renumbered(categories):
    for c in categories:
        c["id"] += 100


def _fewer(categories):
    del categories[-1]


@pytest.mark.parametrize("edit, expected", [
    (_renamed, "same id, other name: [(1, 'circle', 'other_circle')"),
    (_renumbered, "only in the file: [(101, 'circle')"),
    (_fewer, "num_classes=8 (background included)"),
])
def test_val_file_with_other_categories_is_refused_before_any_work(edit, expected, trained_run, data_root, tmp_path,
                                                                     capsys, monkeypatch):
    """Item 2: the training file matches the checkpoint, the *scored* val file does not. This used to
    exit 0 and print per-class AP under the val file's names."""
    from detector.data import DetectionDataModule

    folder = _synthetic_folder(data_root)
    val = json.loads((folder / "annotations" / "instances_val.json").read_text())
    edit(val["categories"])
    known = {c["id"] for c in val["categories"]}
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] in known]
    edited = tmp_path / "instances_val.json"
    edited.write_text(json.dumps(val))
    monkeypatch.setattr(DetectionDataModule, "setup", lambda *a, **k: pytest.fail("the dataset was built"))
    out_dir = tmp_path / "eval"
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out_dir),
                            *_coco_flags(folder, edited)])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and str(edited) in err and expected in err
    assert "the checkpoint has [(1, 'circle'), (2, 'square')" in err and "the file has [" in err  # both lists
    assert not out_dir.exists()


def test_readme_evaluate_flags_need_no_training_files(trained_run, data_root, tmp_path, capsys):
    """Item 12: ``--data.dataset coco --data.val_images V --data.val_annotations A`` (the README's
    command) on a checkpoint trained elsewhere (here: on the synthetic data) used to exit 2 asking
    for the training split."""
    folder = _synthetic_folder(data_root)
    out_dir = tmp_path / "eval"
    docs, printed = _evaluate([str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out_dir),
                               *_coco_flags(folder, train=False)], capsys)
    metrics = json.loads((out_dir / "metrics.json").read_text())
    assert metrics == docs["model"] and metrics["num_images"] == 3
    assert metrics["annotation_file"] == str(folder / "annotations" / "instances_val.json")
    assert "bbox AP[circle]" in printed


def test_existing_results_are_refused_unless_overwrite(trained_run, tmp_path, capsys):
    """Item 9: a second evaluation into the same folder used to replace the files silently, and a
    comparison after a single evaluation left the old metrics.json beside the new label folders."""
    last, best = str(trained_run / "checkpoints" / "last.ckpt"), str(trained_run / "checkpoints" / "best.ckpt")
    out_dir = tmp_path / "eval"
    _evaluate([last, "--output", str(out_dir)], capsys)
    first = (out_dir / "metrics.json").read_bytes()
    (out_dir / "notes.txt").write_text("mine")
    (out_dir / "plots").mkdir()
    (out_dir / "plots" / "pr.png").write_bytes(b"png")

    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[last, "--output", str(out_dir)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and str(out_dir) in err and "--overwrite true" in err and "metrics.json" in err
    assert (out_dir / "metrics.json").read_bytes() == first

    docs, _ = _evaluate([last, best, "--output", str(out_dir), "--overwrite", "true"], capsys)
    assert not (out_dir / "metrics.json").exists() and not (out_dir / "detections.json").exists()  # no stale file
    assert not (out_dir / "analysis.json").exists() and not (out_dir / "bbox_breakdown.png").exists()
    assert (out_dir / "comparison.json").is_file() and all((out_dir / label / "metrics.json").is_file() for label in docs)
    assert (out_dir / "notes.txt").read_text() == "mine" and (out_dir / "plots" / "pr.png").is_file()  # the user's

    docs, _ = _evaluate([best, "--output", str(out_dir), "--overwrite", "true"], capsys)
    assert sorted(p.name for p in out_dir.iterdir()) == [  # the side-by-side folders (with their analysis) are gone
        "analysis.json", "ap_vs_iou.png", "bbox_breakdown.png", "bbox_confusion.png", "bbox_pr_curves.png",
        "detections.json", "metrics.json", "notes.txt", "plots"]


def test_unwritable_output_fails_before_any_work(trained_run, tmp_path, capsys, monkeypatch):
    """Item 7: a read-only --output used to fail after the whole evaluation, with a traceback.
    Tests run as root, where chmod does not stop writes: the read-only file system is simulated
    (mkstemp raising EROFS in the output check; the real case is the next test's)."""
    import errno
    import os
    import types

    from detector.data import DetectionDataModule
    from detector.evaluation import output

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(output, "tempfile", types.SimpleNamespace(mkstemp=read_only))
    monkeypatch.setattr(DetectionDataModule, "setup", lambda *a, **k: pytest.fail("the dataset was built"))
    out_dir = tmp_path / "ro" / "eval"
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out_dir)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exc.value.code == 2 and str(out_dir) in err and "Read-only file system" in err
    assert not (tmp_path / "ro").exists()  # the folders made for the probe are gone again


def test_output_under_a_file_is_one_line_error_from_the_real_cli(trained_run, tmp_path):
    """Item 7, the real process: an --output whose parent is a regular file (unwritable even for root)."""
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder")
    proc = run_script("evaluate.py", [str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(blocker / "eval")],
                      check=False, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "images" not in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --output {blocker / 'eval'}: cannot write there ({blocker} is a file, not a folder); "
        "choose a writable folder")


def test_disk_full_while_writing_is_one_line_naming_the_file(trained_run, tmp_path, capsys, monkeypatch):
    """Item 7: ENOSPC at the end (the probe passed; detections.json did not fit) used to be a
    traceback naming no file. Simulated: the real `atomic_write` with a write that raises ENOSPC."""
    import errno
    import os

    from detector import io

    real_atomic_write = io.atomic_write

    def full_disk(path, write):
        def no_space(f):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_atomic_write(path, no_space)

    monkeypatch.setattr(io, "atomic_write", full_disk)
    out_dir = tmp_path / "eval"
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out_dir)])
    # SystemExit(str): Python prints the string (one line) on stderr and exits with code 1
    assert exc.value.code == f"evaluate.py: error: cannot write {out_dir / 'detections.json'}: No space left on device"
    assert not list(out_dir.iterdir())  # no temp file left behind


def test_analysis_can_be_skipped_and_its_threshold_is_checked(trained_run, tmp_path, capsys):
    last = str(trained_run / "checkpoints" / "last.ckpt")
    _evaluate([last, "--output", str(tmp_path / "o"), "--analysis", "false"], capsys)
    assert not (tmp_path / "o" / "analysis.json").exists() and (tmp_path / "o" / "metrics.json").is_file()
    with pytest.raises(SystemExit) as exc:
        main_evaluate(args=[last, "--output", str(tmp_path / "p"), "--confusion_score", "1.5"])
    assert exc.value.code == 2 and "--confusion_score must be a score in [0, 1]" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_torchrun_environment_names_the_rank_and_world(monkeypatch):
    """evaluate.py under torchrun: rank and world size from its environment; alone: rank 0 of 1."""
    from detector.cli.evaluate import distributed_environment

    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    assert distributed_environment("cpu") == (0, 1, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed_environment("cpu") == (1, 2, "cpu")
