"""The ablation runner's bookkeeping with stand-ins for train.py / evaluate.py / timing.

The stand-ins keep the real command-line contract (``fit --config ... --trainer.default_root_dir
D [--ckpt_path P]`` writing checkpoints under D; ``CKPT --output DIR`` writing
DIR/metrics.json) but take milliseconds, so skipping, resuming and the tables are tested
fast; tests/test_ablation_real.py runs the real CLI. Behaviour knobs are environment
variables: FAKE_CALLS (a file each call appends its argv to), FAKE_DIE_AT_EPOCH (a fresh,
not resumed, training SIGKILLs itself right after writing that epoch's checkpoint).
"""

import csv
import json
import math
import sys

import pytest

from detector.ablation.cli import main
from detector.ablation.runner import Commands, RunFailed, split_overrides
from detector.ablation.runs import RunDir, RunSpec
from detector.ablation.variants import DEFAULT_VARIANTS, Variant, parse_variant, parse_variants


TRAIN = r'''
import json, os, pathlib, signal, sys
argv = sys.argv[1:]
def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["train"] + argv) + "\n")
assert argv[0] == "fit" and "--config" in argv
root = pathlib.Path(opt("--trainer.default_root_dir"))
epochs = int(opt("--trainer.max_epochs", 3))
resume = opt("--ckpt_path")
start = json.loads(pathlib.Path(resume).read_text())["epoch"] if resume else 0
ckdir = root / "lightning_logs" / "version_0" / "checkpoints"
ckdir.mkdir(parents=True, exist_ok=True)
for epoch in range(start + 1, epochs + 1):
    state = {"epoch": epoch, "op": opt("--model.roi_op"), "mode": opt("--model.roi_mode"),
             "stride": int(opt("--model.stride")), "seed": int(opt("--seed_everything"))}
    (ckdir / f"epoch={epoch}.ckpt").write_text(json.dumps(state))
    if os.environ.get("FAKE_DIE_AT_EPOCH") == str(epoch) and not resume:
        os.kill(os.getpid(), signal.SIGKILL)
'''

EVALUATE = r'''
import json, os, pathlib, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["evaluate"] + argv) + "\n")
state = json.loads(pathlib.Path(argv[0]).read_text())
out = pathlib.Path(argv[argv.index("--output") + 1])
out.mkdir(parents=True, exist_ok=True)
base = {"roi_pool": 0.20, "roi_align": 0.30, "roi_warp": 0.22, "prroi_pool": 0.31}[state["op"]]
ap = base + 0.01 * state["seed"] + (0.005 if state["mode"] == "max" else 0.0)
bbox = {k: ap * f for k, f in zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], [1, 1.8, 0.9, 0.5, 1.1, 1.3])}
(out / "metrics.json").write_text(json.dumps({"bbox": bbox, "num_images": 5, "global_step": state["epoch"]}))
'''

TIMING = r'''
import json, os, pathlib, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["timing"] + argv) + "\n")
out = pathlib.Path(argv[argv.index("--out") + 1])
out.write_text(json.dumps({"checkpoint": argv[0], "ms_per_image": 12.5, "roi_ms_per_image": 0.5}))
'''


def write_stand_ins(folder):
    """Write the three scripts into ``folder``; return their paths (train, evaluate, timing)."""
    paths = []
    for name, text in (("train", TRAIN), ("evaluate", EVALUATE), ("timing", TIMING)):
        p = folder / f"fake_{name}.py"
        p.write_text(text)
        paths.append(p)
    return paths


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Stand-in commands, a config file and a call log."""
    train, evaluate, timing = write_stand_ins(tmp_path)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.delenv("FAKE_DIE_AT_EPOCH", raising=False)
    config = tmp_path / "base.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n")
    commands = Commands(train=[sys.executable, str(train)], evaluate=[sys.executable, str(evaluate)],
                        timing=[sys.executable, str(timing)])

    def read_calls():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return commands, config, tmp_path / "abl", read_calls


def test_variant_names_and_flags():
    assert [v.name for v in DEFAULT_VARIANTS] == ["roi_pool", "roi_warp_avg", "roi_warp_max",
                                                  "roi_align_avg", "roi_align_max", "prroi_pool"]
    assert parse_variant("roi_align") == Variant("roi_align", "avg")
    assert parse_variant("roi_align:max") == parse_variant("roi_align max") == Variant("roi_align", "max")
    assert parse_variant("roi_warp_max").train_flags() == ["--model.roi_op", "roi_warp", "--model.roi_mode", "max"]
    assert Variant("prroi_pool").train_flags()[-1] == "avg" and Variant("prroi_pool").label == "PrRoIPool"
    with pytest.raises(ValueError, match="unknown ROI op 'roi_magic'"):
        parse_variant("roi_magic")
    with pytest.raises(ValueError, match="no sampling-point mode"):
        parse_variant("roi_pool:max")
    with pytest.raises(ValueError, match="listed twice"):
        parse_variants(["roi_align", "roi_align_avg"])


def test_overrides_are_checked():
    groups = split_overrides(["--model.lr", "0.01", "--trainer.max_epochs=2", "--data.min_size", "128"])
    assert [g[0] for g in groups] == ["--model.lr", "--trainer.max_epochs", "--data.min_size"]
    with pytest.raises(ValueError, match="--model.roi_op is set by the ablation.*--variants"):
        split_overrides(["--model.roi_op", "roi_pool"])
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
        assert c[c.index("--model.lr") + 1] == "0.01" and c.index("--model.lr") < c.index("--model.roi_op")
        assert "--ckpt_path" not in c
    eval_calls = [c for c in calls() if c[0] == "evaluate"]
    assert all(c[1].endswith("epoch=3.ckpt") for c in eval_calls)  # the final checkpoint
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
    assert not run.is_complete() and run.latest_checkpoint().name == "epoch=2.ckpt"
    assert "roi_pool_s32_seed0" in (out / "results.md").read_text()  # listed as missing

    main(argv, commands=commands, echo=lambda *a: None)  # the rerun resumes
    train_calls = [c for c in calls() if c[0] == "train"]
    assert len(train_calls) == 2
    assert train_calls[1][train_calls[1].index("--ckpt_path") + 1].endswith("epoch=2.ckpt")
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


def test_dry_run_lists_each_run_state(fake):
    commands, config, out, calls = fake
    base = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "roi_warp", "--seeds", "1"]
    main(base + ["--variants", "roi_pool"], commands=commands, echo=lambda *a: None)
    said = []
    doc = main(base + ["--dry-run"], commands=commands, echo=said.append)
    assert doc["plan"] == ["roi_pool_s32_seed0", "roi_warp_avg_s32_seed0"]
    assert said == ["roi_pool_s32_seed0: complete", "roi_warp_avg_s32_seed0: new"]


def test_one_ablation_per_folder(fake):
    import os
    import subprocess

    commands, config, out, _ = fake
    argv = ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "--seeds", "1"]
    out.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".ablation.lock").write_text(str(sleeper.pid))
        with pytest.raises(ValueError, match=f"another ablation \\(pid {sleeper.pid}\\) is running"):
            main(argv, commands=commands, echo=lambda *a: None)
    finally:
        sleeper.kill()
        sleeper.wait()
    main(argv, commands=commands, echo=lambda *a: None)  # its process is gone: the stale lock is taken over
    assert RunDir(out, RunSpec(Variant("roi_pool"), 32, 0)).is_complete()
    assert not (out / ".ablation.lock").exists() and os.path.isdir(out)


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
    config.write_text(f"model:\n  min_size: 576\n  max_size: 1000\ndata:\n  dataset: coco\n"
                      f"  train_images: {tmp_path / 'img'}\n  train_annotations: {ann}\n"
                      f"  val_images: {tmp_path / 'img'}\n  val_annotations: {ann}\n")
    main(["--config", str(config), "--out", str(out), "--variants", "roi_pool", "--seeds", "1",
          "--timing-images", "0"], commands=commands, echo=lambda *a: None)
    md = (out / "results.md").read_text()
    assert "At stake before training" in md and "stride 32: all" in md and "large 0.65" in md
    rows = json.loads((out / "quantization" / "quantization.json").read_text())["rows"]
    assert any(r["op"] == "roi_pool" and r["size"] == "large" and abs(r["iou_mean"] - 0.6525) < 1e-3 for r in rows)
