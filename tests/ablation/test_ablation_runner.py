"""The ablation runner's bookkeeping with stand-ins for train.py / evaluate.py / timing
(tests/ablation/ablation_stand_ins.py: the ``fake`` fixture) that keep the real command-line
contract but take a second, so skipping, resuming and the tables are tested fast;
tests/ablation/test_ablation_real.py runs the real CLI.
"""

import csv
import json
import math
import warnings
from unittest.mock import ANY

import pytest

from detector.ablation.cli import main
from detector.ablation.runner import RunFailed, split_overrides
from detector.ablation.runs import RunDir, RunFileWarning, RunSpec
from detector.ablation.variants import (
    Variant,
    default_variants,
    parse_variant,
    parse_variants,
)


def test_variant_names_and_flags():
    assert [v.name for v in default_variants()] == ["roi_pool", "roi_warp_avg", "roi_warp_max",
                                                  "roi_align_avg", "roi_align_max", "prroi_pool"]
    assert parse_variant("roi_align") == Variant("roi_align", "avg")
    assert parse_variant("roi_align:max") == parse_variant("roi_align max") == Variant("roi_align", "max")
    assert parse_variant("roi_warp_max").train_flags() == ["--model.detector.roi_op", "roi_warp",
                                                           "--model.detector.roi_options", '{"mode": "max"}']
    # a base config's options reach the ops that take them, never the others
    base = {"aligned": True, "sampling_ratio": 4}
    assert parse_variant("roi_align_avg").roi_options(base) == {"aligned": True, "sampling_ratio": 4, "mode": "avg"}
    assert parse_variant("roi_pool").roi_options(base) == {}
    assert Variant("prroi_pool").train_flags()[-1] == "{}" and Variant("prroi_pool").label == "PrRoIPool"
    with pytest.raises(ValueError, match="unknown ROI op 'roi_magic'"):
        parse_variant("roi_magic")
    with pytest.raises(ValueError, match="no sampling-point mode"):
        parse_variant("roi_pool:max")
    with pytest.raises(ValueError, match="listed twice"):
        parse_variants(["roi_align", "roi_align_avg"])


def test_overrides_are_checked():
    groups = split_overrides(["--model.lr", "0.01", "--trainer.max_epochs=2", "--data.min_size", "128"])
    assert [g[0] for g in groups] == ["--model.lr", "--trainer.max_epochs", "--data.min_size"]
    with pytest.raises(ValueError, match="--model.detector.roi_op is set by the ablation.*--variants"):
        split_overrides(["--model.detector.roi_op", "roi_pool"])
    with pytest.raises(ValueError, match="--seeds"):
        split_overrides(["--seed_everything=3"])
    with pytest.raises(ValueError, match="unknown option '--lr'"):
        split_overrides(["--lr", "3"])
    from detector.ablation.runner import flag_value
    assert flag_value(["--trainer.accelerator=gpu", "--data.x", "1"], "--trainer.accelerator") == "gpu"
    assert flag_value(["--trainer.accelerator", "cpu"], "--trainer.accelerator") == "cpu"
    assert flag_value(["--data.x", "1"], "--trainer.accelerator") is None


def test_runs_tables_and_rerun_skips(fake):
    commands, config, out, calls = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "roi_align_max",
            "--seeds", "2", "--model.lr", "0.01", "--data.min_size", "96"]
    doc = main(argv, commands=commands, echo=lambda *a: None)
    train_calls = [c for c in calls() if c[0] == "train"]
    assert len(train_calls) == 4
    for c in train_calls:  # pass-through overrides reach every run, variant flags come after them
        assert c[c.index("--model.lr") + 1] == "0.01" and c.index("--model.lr") < c.index("--model.detector.roi_op")
        assert "--ckpt_path" not in c
    eval_calls = [c for c in calls() if c[0] == "evaluate"]
    assert all(c[1].endswith("last.ckpt") for c in eval_calls)  # the final checkpoint
    assert all(c[c.index("--data.min_size") + 1] == "96" for c in eval_calls) and "--model.lr" not in eval_calls[0]

    for name in ("results.csv", "results.json", "results.md", "runs.csv", "ablation.png"):
        assert (out / name).is_file(), name
    for spec_name in ("roi_pool_s32_seed0", "roi_pool_s32_seed1", "roi_align_max_s32_seed0", "roi_align_max_s32_seed1"):
        rec = json.loads((out / "runs" / spec_name / "run.json").read_text())
        assert rec["complete"] and rec["infer_ms_per_image"] == 12.5

    # the table agrees with the per-run metrics
    per_run = {r["name"]: r for r in csv.DictReader((out / "runs.csv").open())}
    for row in csv.DictReader((out / "results.csv").open()):
        aps = [float(r["AP"]) for r in per_run.values() if r["variant"] == row["variant"]]
        mean = sum(aps) / len(aps)
        std = math.sqrt(sum((a - mean) ** 2 for a in aps) / (len(aps) - 1))
        assert float(row["AP_mean"]) == pytest.approx(mean) and float(row["AP_std"]) == pytest.approx(std)
    align = next(s for s in doc["summary"] if s["variant"] == "roi_align_max")
    assert align["AP_mean"] == pytest.approx(100 * (0.305 + 0.315) / 2)
    assert align["AP_delta"] == pytest.approx(100 * ((0.305 + 0.315) - (0.20 + 0.21)) / 2)
    assert align["AP_beyond_spread"] is True  # 10.5 points vs a spread of 1 point
    md = (out / "results.md").read_text()
    assert "| 32 | RoIAlign max | 2 | 31.0 ± 0.7 |" in md and "+10.5 (yes)" in md and "| ref |" in md

    # rerun: nothing trains, evaluates or times again; the table is the same
    n_calls = len(calls())
    doc2 = main(argv, commands=commands, echo=lambda *a: None)
    assert len(calls()) == n_calls
    assert doc2["summary"] == doc["summary"]


def test_killed_training_resumes_from_its_checkpoint(fake, monkeypatch):
    commands, config, out, calls = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1",
            "--timing-images", "0"]
    monkeypatch.setenv("FAKE_DIE_AT_EPOCH", "2")
    with pytest.raises(RunFailed, match="roi_pool_s32_seed0: training exited with code -9"):
        main(argv, commands=commands, echo=lambda *a: None)
    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    assert not run.is_complete() and run.latest_checkpoint().name == "last.ckpt"
    assert "roi_pool_s32_seed0" in (out / "results.md").read_text()  # listed as missing

    main(argv, commands=commands, echo=lambda *a: None)  # the rerun resumes
    train_calls = [c for c in calls() if c[0] == "train"]
    assert len(train_calls) == 2
    assert train_calls[1][train_calls[1].index("--ckpt_path") + 1].endswith("last.ckpt")
    rec = run.record()
    assert rec["global_step"] == 3 and rec["train_attempts"] == 2
    assert [a["resumed_from"] is not None for a in run.attempts()] == [False, True]
    assert not any(c[0] == "timing" for c in calls())


def test_interrupted_attempt_counts_until_its_last_checkpoint(tmp_path):
    run = RunDir(tmp_path, RunSpec(Variant("roi_pool"), 32, 0))
    ck = run.train_dir / "checkpoints"
    ck.mkdir(parents=True)
    import os
    run.log_attempt("start")
    first_start = run.attempts()[0]["start"]
    (ck / "epoch=1.ckpt").write_text("{}")
    os.utime(ck / "epoch=1.ckpt", (first_start + 40, first_start + 40))  # written 40 s in, then killed
    with run.attempts_file.open("a") as f:  # second attempt: 10 s, finished
        f.write(json.dumps({"event": "start", "time": first_start + 100, "resumed_from": "x"}) + "\n")
        f.write(json.dumps({"event": "end", "time": first_start + 110, "returncode": 0}) + "\n")
    attempts = run.attempts()
    assert [a["interrupted"] for a in attempts] == [True, False]
    assert run.train_seconds() == pytest.approx(50.0)


def test_bad_arguments_are_value_errors(fake):
    commands, config, out, _ = fake
    with pytest.raises(ValueError, match="does not exist"):
        main(["--config", str(out / "nope.yaml"), "--out", str(out), "--no-analysis"], commands=commands)
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        main(["--config", str(config), "--out", str(out), "--no-analysis", "--seeds", "0"], commands=commands)
    with pytest.raises(ValueError, match="unknown option '--foo'"):
        main(["--config", str(config), "--out", str(out), "--no-analysis", "--foo", "1"], commands=commands)


def test_mask_model_without_mask_data_is_refused_before_any_run(fake):
    """Found running Table 2c: ``--model.detector.mask true`` without ``--data.masks true``
    launched every run, each failing in train.py; the base config is checked once, first."""
    commands, config, out, calls = fake
    with pytest.raises(ValueError, match="model.detector.mask=true.*--data.masks true"):
        main(["--config", str(config), "--out", str(out), "--no-analysis", "--seeds", "1",
              "--model.detector.mask", "true"], commands=commands)
    assert calls() == [] and not (out / "runs").exists()


def test_dry_run_lists_each_run_state(fake):
    commands, config, out, _ = fake
    base = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "roi_warp", "--seeds", "1"]
    main(base + ["--variants", "roi_pool"], commands=commands, echo=lambda *a: None)
    said = []
    doc = main(base + ["--dry-run"], commands=commands, echo=said.append)
    assert doc["plan"] == ["roi_pool_s32_seed0", "roi_warp_avg_s32_seed0"]
    assert said == ["roi_pool_s32_seed0: complete", "roi_warp_avg_s32_seed0: new"]


def test_results_say_what_is_at_stake_before_training(fake, tmp_path):
    """The quantization analysis of the ablation's own validation data heads results.md."""
    commands, _, out, _ = fake
    boxes = [[300, 210, 230, 180], [10, 20, 20, 25]]  # the slides' box (large) and a small one
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 800, "height": 576}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3],
                             "iscrowd": 0} for i, b in enumerate(boxes)]}
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    (tmp_path / "img").mkdir()
    config = tmp_path / "coco.yaml"
    config.write_text(f"model:\n  detector:\n    min_size: 576\n    max_size: 1000\ndata:\n  dataset: coco\n"
                      f"  train_images: {tmp_path / 'img'}\n  train_annotations: {ann}\n"
                      f"  val_images: {tmp_path / 'img'}\n  val_annotations: {ann}\n")
    main(["--config", str(config), "--out", str(out), "--variants", "roi_pool", "--seeds", "1",
          "--timing-images", "0"], commands=commands, echo=lambda *a: None)
    md = (out / "results.md").read_text()
    assert "At stake before training" in md and "stride 32: all" in md and "large 0.65" in md
    rows = json.loads((out / "quantization" / "quantization.json").read_text())["rows"]
    assert any(r["op"] == "roi_pool" and r["size"] == "large" and abs(r["iou_mean"] - 0.6525) < 1e-3 for r in rows)
    # under FPN: each box at its Eq. 1 level (the slides' box, sqrt(area) 203 px, at P3; the small one at P2)
    fpn_out = tmp_path / "fpn"
    main(["--config", str(config), "--out", str(fpn_out), "--variants", "roi_pool", "--seeds", "1",
          "--timing-images", "0", "--model.detector.backbone", "resnet18", "--model.detector.fpn", "true"],
         commands=commands, echo=lambda *a: None)
    md = (fpn_out / "results.md").read_text()
    assert "FPN, each box at its Eq. 1 level (boxes per level: P2 1, P3 1)" in md and "stride 32: all" not in md
    levels = {r["level"] for r in json.loads((fpn_out / "quantization" / "quantization.json").read_text())["rows"]}
    assert levels == {"all", "P2", "P3"}


# ---------------------------------------------------------------- interrupted runs are never tabulated (issue 12, 1)
@pytest.mark.parametrize("run_state", [True, False], ids=["detector_run", "old-checkpoint"])
@pytest.mark.parametrize("rc", [0, 143], ids=["exit0", "exit143"])
def test_training_stopped_early_is_resumed_not_counted(fake, monkeypatch, rc, run_state):
    """A SIGTERM'd train.py (old: exit 0, new: exit 143) leaves a 2-of-6-step last.ckpt: the
    ablation fails the run naming the step, writes no run.json, tabulates nothing, and the
    rerun resumes it from last.ckpt to the full schedule."""
    commands, config, out, calls = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1",
            "--timing-images", "0", "--trainer.max_epochs", "6"]
    monkeypatch.setenv("FAKE_STOP_AT_EPOCH", "2")
    monkeypatch.setenv("FAKE_STOP_RC", str(rc))
    if not run_state:
        monkeypatch.setenv("FAKE_NO_RUN_STATE", "1")
    expected = "stopped by SIGTERM" if rc else "step 2 of 6 \\(not finished"
    with pytest.raises(RunFailed, match=expected):
        main(argv, commands=commands, echo=lambda *a: None)
    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    assert not run.marker.exists() and not run.train_marker.exists() and not run.is_complete()
    assert not any(c[0] == "evaluate" for c in calls())
    doc = json.loads((out / "results.json").read_text())
    assert doc["runs"] == [] and doc["missing"] == ["roi_pool_s32_seed0"]

    main(argv, commands=commands, echo=lambda *a: None)  # the rerun resumes and finishes
    train_calls = [c for c in calls() if c[0] == "train"]
    assert len(train_calls) == 2 and "--ckpt_path" in train_calls[1]
    rec = run.record()
    assert rec["global_step"] == 6 and rec["verified"]["expected_steps"] == 6
    assert rec["verified"]["source"] == ("detector_run" if run_state else "config.yaml")


def _partial_run_left_by_the_old_bug(out, run_state: bool):
    """The files an older ablation wrote for a run whose train.py was SIGTERM'd at step 2 of 6
    and exited 0: train.json, eval/, and run.json with complete: true."""
    import torch

    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    ckdir = run.train_dir / "checkpoints"
    ckdir.mkdir(parents=True)
    (run.train_dir / "config.yaml").write_text("trainer:\n  max_epochs: 6\n  max_steps: -1\n")
    state = {"epoch": 2, "op": "roi_pool", "mode": "avg", "stride": 32, "seed": 0}
    ckpt = {"epoch": 1, "global_step": 2, "fake": state,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"started": 2, "processed": 1}},  # mid-epoch
                                   "epoch_loop.automatic_optimization.optim_progress": {
                                       "optimizer": {"step": {"current": {"completed": 1}}}}}}}
    if run_state:
        ckpt["detector_run"] = {"finished": False, "global_step": 2, "expected_steps": 6}
    torch.save(ckpt, ckdir / "last.ckpt")
    (ckdir / "last.ckpt.json").write_text(json.dumps(state))
    last = str(ckdir / "last.ckpt")
    (run.path / "train.json").write_text(json.dumps({"returncode": 0, "checkpoint": last, "train_time_s": 3.0,
                                                     "attempts": 1, "resumed": 0, "command": ["train.py"]}))
    run.eval_dir.mkdir()
    run.metrics_file.write_text(json.dumps({"bbox": {"AP": 0.05}, "num_images": 5, "global_step": 2}))
    (run.path / "eval.json").write_text(json.dumps({"checkpoint": last, "eval_time_s": 1.0}))
    run.marker.write_text(json.dumps({
        "complete": True, "name": "roi_pool_s32_seed0", "variant": "roi_pool", "op": "roi_pool", "mode": None,
        "stride": 32, "seed": 0, "bbox": {"AP": 0.05}, "segm": None, "num_images": 5, "global_step": 2,
        "checkpoint": last, "train_time_s": 3.0, "train_attempts": 1, "eval_time_s": 1.0,
        "infer_ms_per_image": None, "roi_ms_per_image": None, "finished_at": "2026-12-01T00:00:00",
        "train_command": ["train.py"]}))
    return run


@pytest.mark.parametrize("run_state", [True, False], ids=["detector_run", "old-checkpoint"])
def test_partial_run_marked_complete_by_an_older_ablation_is_not_counted(fake, run_state):
    commands, config, out, calls = fake
    run = _partial_run_left_by_the_old_bug(out, run_state)
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1",
            "--timing-images", "0", "--trainer.max_epochs", "6"]
    with pytest.warns(RunFileWarning, match=r"run\.json: its checkpoint .*last\.ckpt is at step 2 of 6"):
        doc = main([*argv, "--report-only"], commands=commands, echo=lambda *a: None)
    assert doc["runs"] == [] and doc["missing"] == ["roi_pool_s32_seed0"]
    assert "(no completed runs)" in (out / "results.md").read_text()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RunFileWarning)
        doc = main(argv, commands=commands, echo=lambda *a: None)  # resumes the training, evaluates the new weights
    train_calls = [c for c in calls() if c[0] == "train"]
    assert len(train_calls) == 1 and train_calls[0][train_calls[0].index("--ckpt_path") + 1].endswith("last.ckpt")
    assert len([c for c in calls() if c[0] == "evaluate"]) == 1
    rec = run.record()
    assert rec["global_step"] == 6 and rec["verified"]["global_step"] == 6
    assert [r["global_step"] for r in doc["runs"]] == [6] and doc["runs"][0]["AP"] == pytest.approx(20.0)


# ---------------------------------------------------------------- run.json is validated on read (issue 12, 10)
BAD_RUN_JSON = [
    {"train_time_s": "fast"}, {"seed": "0"}, {"bbox": "high"}, {"bbox": {"AP": "0.3"}}, {"stride": None},
    {"global_step": 2.5}, {"complete": "yes"}, {"train_command": "train.py fit"}, {"seed": 1}, {"name": 7},
    {"verified": {"global_step": 2, "expected_steps": 6, "source": "x"}}, {"verified": "yes"},
    "[1, 2]", '{"complete": tru', "", "null",
]


def test_run_json_with_wrong_types_is_not_counted_and_is_redone(fake):
    """Each broken run.json: no crash, a warning naming the file, not in the table; a rerun
    rewrites it from the run's other files without training again."""
    commands, config, out, calls = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1",
            "--timing-images", "0"]
    main(argv, commands=commands, echo=lambda *a: None)
    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    good = json.loads(run.marker.read_text())
    n_calls = len(calls())
    for edit in BAD_RUN_JSON:
        run.marker.write_text(edit if isinstance(edit, str) else json.dumps({**good, **edit}))
        with pytest.warns(RunFileWarning, match=f"{run.marker}: .*the run is not counted"):
            doc = main([*argv, "--report-only"], commands=commands, echo=lambda *a: None)  # no crash
        assert doc["runs"] == [] and doc["missing"] == ["roi_pool_s32_seed0"], edit
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RunFileWarning)
            doc = main(argv, commands=commands, echo=lambda *a: None)
        assert json.loads(run.marker.read_text()) == {**good, "finished_at": ANY}, edit
        assert [r["seed"] for r in doc["runs"]] == [0]
    assert len(calls()) == n_calls  # nothing was trained, evaluated or timed again


def test_broken_side_files_are_redone_not_fatal(fake):
    """train.json / eval.json / timing.json / attempts.jsonl of the wrong shape: redone or skipped."""
    commands, config, out, calls = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1"]
    main(argv, commands=commands, echo=lambda *a: None)
    run = RunDir(out, RunSpec(Variant("roi_pool"), 32, 0))
    run.marker.unlink()
    (run.path / "train.json").write_text(json.dumps({"returncode": "0"}))
    (run.path / "eval.json").write_text("[]")
    run.timing_file.write_text(json.dumps({"checkpoint": 3}))
    with run.attempts_file.open("a") as f:
        f.write('{"event": "start"}\n[1]\n"x"\n')
    with pytest.warns(RunFileWarning):
        main(argv, commands=commands, echo=lambda *a: None)
    assert run.is_complete() and run.record()["global_step"] == 3
    names = [c[0] for c in calls()]
    assert names.count("train") == 2 and names.count("evaluate") == 2 and names.count("timing") == 2
