"""train.py fit --model.init_from: fine-tune the 8-class tiny checkpoint on a 3-category COCO folder."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_run import tiny_args

from detector.checkpointing import load_checkpoint
from detector.cli import DetectorCLI, main_evaluate


def _finetune_args(three_class_coco, run_dir, source) -> list[str]:
    return [*tiny_args(three_class_coco, run_dir), "--data.dataset", "coco", "--model.init_from", str(source),
            "--trainer.max_steps", "2"]


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory, trained_run, three_class_coco):
    """(cli, run folder, printed text) of a 2-step fine-tune from the 8-class tiny checkpoint."""
    import contextlib
    import io

    run_dir = tmp_path_factory.mktemp("finetune")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        cli = DetectorCLI(args=["fit", *_finetune_args(three_class_coco, run_dir, trained_run / "checkpoints" / "last.ckpt")])
    return cli, run_dir, printed.getvalue()


def test_finetune_8_to_3_classes_trains_and_evaluates(finetuned, tmp_path):
    cli, run_dir, printed = finetuned
    model = cli.model
    assert model.hparams.detector["num_classes"] == 4 and model.category_names == ["circle", "star", "ring"]
    report = model.init_from_report
    keys = model.model.state_dict()
    assert report.counts["backbone"]["loaded"] == sum(k.startswith("backbone.") for k in keys)
    # circle, star, ring are 3 of the checkpoint's 7 shapes: their class rows load by name, at the model's count
    assert report.counts["box predictor"] == {"loaded": 4, "skipped (shape)": 0, "missing": 0, "re-initialised": 0, "unused": 0}
    assert report.total("loaded") == len(keys) and report.total("skipped (shape)") == report.total("missing") == 0
    assert ("8 -> 4 classes: the class rows of 3 shared categories loaded by name ('circle', 'star', 'ring')"
            in printed)
    assert printed.count("box predictor") == 1  # one table (one rank)
    assert cli.trainer.global_step == 2

    last = run_dir / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["detector"]["category_ids"] == [1, 2, 3]
    main_evaluate(args=[str(last), "--output", str(tmp_path / "eval")])  # evaluate.py on the fine-tuned run
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and "AP" in metrics["bbox"]
    assert "star" in json.dumps(metrics)  # scored with the new category table


def test_resuming_a_finetune_keeps_the_resumed_weights(finetuned, trained_run, three_class_coco, capsys):
    _, run_dir, _ = finetuned
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = {k[len("model."):]: v for k, v in load_checkpoint(last)["state_dict"].items()}
    source = {k[len("model."):]: v for k, v in load_checkpoint(trained_run / "checkpoints" / "last.ckpt")["state_dict"].items()}
    changed = [k for k in saved if k in source and source[k].shape == saved[k].shape and not torch.equal(source[k], saved[k])]
    assert changed  # precondition: training moved loaded weights, so re-applying init_from would show

    cli = DetectorCLI(args=["fit", *_finetune_args(three_class_coco, run_dir, trained_run / "checkpoints" / "last.ckpt"),
                            "--ckpt_path", "last"])
    assert "model.init_from=" in capsys.readouterr().out and cli.model.init_from_report is None  # "not applied"
    resumed = cli.model.model.state_dict()
    assert all(torch.equal(resumed[k], saved[k]) for k in saved)


def test_init_from_errors_are_one_line_exit_2(trained_run, three_class_coco, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        DetectorCLI(args=["fit", *_finetune_args(three_class_coco, tmp_path / "a", tmp_path / "missing.ckpt")])
    assert exit_.value.code == 2
    assert "train.py: error: model.init_from=" in capsys.readouterr().err

    with pytest.raises(SystemExit) as exit_:  # another backbone: named, with keys of both sides
        DetectorCLI(args=["fit", *_finetune_args(three_class_coco, tmp_path / "b", trained_run / "checkpoints" / "last.ckpt"),
                          "--model.detector.backbone", "vgg16"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2
    assert err.startswith("train.py: error: model.init_from=") and "its backbone (resnet18 stride 32)" in err
    assert "(vgg16 stride 32)" in err and "File keys e.g." in err and "model keys e.g." in err
    assert not list((tmp_path / "b").glob("**/*.ckpt"))
