"""The ablation with the real train.py / evaluate.py on a tiny schedule and tiny synthetic data.

One seed, two variants: every file is written, the table matches the runs' own metrics.json,
a rerun skips both runs. Checkpointing is train.py's default (``checkpoints/last.ckpt``). A
training SIGTERM'd mid-schedule is not counted and is resumed (issue 12, item 1). The
kill-and-resume test (a real SIGKILL of the whole ablation process group mid-training) is
marked slow; tests/ablation/test_ablation_runner.py covers the same bookkeeping with stand-ins.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The schedule, layered after configs/tiny.yaml (the one tiny recipe).
TINY_CONFIG = """
trainer:
  max_epochs: {epochs}
  logger: false
  limit_train_batches: 2
  limit_val_batches: 0
"""
TINY = REPO / "configs" / "tiny.yaml"


def ablation_args(config: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(TINY), "--config", str(config), "--out", str(out), "--variants", "roi_pool", "roi_align_max",
            "--seeds", "1", "--timing-images", "0", *extra]


def ablation_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "detector.ablation", *ablation_args(config, out, *extra)]


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    e["DETECTOR_CACHE"] = str(tmp_path / "cache")
    return e


def test_real_cli_two_variants_one_seed(tmp_path, env, monkeypatch):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(epochs=1))
    out = tmp_path / "abl"
    proc = subprocess.run(ablation_cmd(config, out), cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("results.csv", "results.json", "results.md", "runs.csv", "ablation.png"):
        assert (out / name).is_file(), name

    doc = json.loads((out / "results.json").read_text())
    assert [s["variant"] for s in doc["summary"]] == ["roi_pool", "roi_align_max"] and not doc["missing"]
    for s in doc["summary"]:  # the table holds each run's own metrics.json (x100)
        run = out / "runs" / f"{s['variant']}_s32_seed0"
        metrics = json.loads((run / "eval" / "metrics.json").read_text())
        for m in ("AP", "AP50", "AP75"):
            assert s[f"{m}_mean"] == pytest.approx(100 * metrics["bbox"][m])
        assert metrics["model"]["roi_op"] == s["variant"].split("_max")[0]
        assert s["train_time_min_mean"] > 0
        analysis = json.loads((run / "eval" / "analysis.json").read_text())["bbox"]  # evaluate.py's error analysis
        assert s["AP_IoU50_mean"] == pytest.approx(100 * analysis["ap_per_iou"]["AP"][0])
        assert s["loc_share_mean"] == pytest.approx(100 * analysis["breakdown"]["loc_share"])
    assert (out / "ap_vs_iou.png").is_file()
    run = out / "runs" / "roi_align_max_s32_seed0"
    hp = json.loads((run / "eval" / "metrics.json").read_text())["model"]
    assert hp["roi_mode"] == "max" and hp["stride"] == 32
    assert json.loads((run / "run.json").read_text())["checkpoint"].endswith("last.ckpt")

    # a rerun (in-process: nothing heavy should start) skips both runs
    from detector.ablation.cli import main

    said = []
    monkeypatch.setenv("DETECTOR_CACHE", env["DETECTOR_CACHE"])
    main(ablation_args(config, out), echo=said.append)
    assert sum("complete, skipped" in line for line in said) == 2
    assert not any("training (log" in line or "evaluating" in line for line in said)

    # stale evaluation stamp: the run is evaluated again into its own eval/, which evaluate.py
    # would refuse (it holds results) unless the ablation says --overwrite true
    (run / "eval.json").unlink()
    (run / "run.json").unlink()  # as if killed between evaluate.py's end and the run's record
    (run / "eval" / "notes.txt").write_text("a user's file")
    said.clear()
    main(ablation_args(config, out), echo=said.append)
    assert sum("evaluating" in line for line in said) == 1, said
    assert (run / "eval.json").is_file() and (run / "eval" / "notes.txt").read_text() == "a user's file"

    # the timing stage on a real checkpoint (skipped above with --timing-images 0 to save time)
    from detector.ablation.timing import time_checkpoint

    timing = time_checkpoint(json.loads((run / "run.json").read_text())["checkpoint"], images=1, warmup=0)
    assert timing["images"] == 1 and timing["ms_per_image"] > 0 and 0 < timing["roi_ms_per_image"] < timing["ms_per_image"]


@pytest.mark.slow
def test_real_cli_killed_ablation_resumes(tmp_path, env):
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(epochs=4))
    out = tmp_path / "abl"
    cmd = ablation_cmd(config, out, "--variants", "roi_pool", "--timing-images", "1")
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    run = out / "runs" / "roi_pool_s32_seed0"
    deadline = time.time() + 400
    try:
        while time.time() < deadline and first.poll() is None:
            ckpts = list((run / "train").rglob("last.ckpt")) if (run / "train").is_dir() else []
            if ckpts:
                break
            time.sleep(0.2)
        assert first.poll() is None, "the ablation ended before it could be killed"
        assert not (run / "train.json").exists()
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the ablation and its training subprocess at once
        first.wait()

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming from" in second.stdout
    rec = json.loads((run / "run.json").read_text())
    assert rec["train_attempts"] == 2 and rec["global_step"] == 4 * 2


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the training process through /proc")
def test_real_training_stopped_by_sigterm_is_resumed_not_counted(tmp_path, env):
    """train.py (max_steps 6) gets SIGTERM after its first checkpoint: whatever it exits with,
    the ablation records nothing; the rerun resumes to step 6 and only then tabulates it."""
    config = tmp_path / "tiny.yaml"
    config.write_text(TINY_CONFIG.format(epochs=100))
    out = tmp_path / "abl"
    cmd = ablation_cmd(config, out, "--variants", "roi_pool", "--no-analysis", "--trainer.max_steps", "6")
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run = out / "runs" / "roi_pool_s32_seed0"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and first.poll() is None and not list(run.glob("train/checkpoints/last.ckpt")):
            time.sleep(0.1)
        trainers = _children(first.pid)
        assert first.poll() is None and len(trainers) == 1, "the training ended before it could be stopped"
        os.kill(trainers[0], signal.SIGTERM)  # only the training, as a scheduler or a user might
        stdout, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode != 0, stdout[-2000:]
    assert "not finished" in stderr or "SIGTERM" in stderr, stderr[-2000:]
    assert not (run / "run.json").exists() and not (run / "train.json").exists()
    assert json.loads((out / "results.json").read_text())["runs"] == []

    from detector.ablation.progress import training_progress

    stopped = training_progress(run / "train" / "checkpoints" / "last.ckpt", run / "train")
    assert not stopped.complete and stopped.global_step < 6

    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "resuming from" in second.stdout
    rec = json.loads((run / "run.json").read_text())
    assert rec["global_step"] == 6 and rec["verified"]["expected_steps"] == 6 and rec["train_attempts"] == 2
    assert [r["global_step"] for r in json.loads((out / "results.json").read_text())["runs"]] == [6]
