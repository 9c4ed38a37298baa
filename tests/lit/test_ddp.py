"""DDP through the real command lines (2 CPU processes, gloo): train.py fit trains, rank 0 alone
writes each checkpoint, a SIGTERM stops every rank after the same step, ``--ckpt_path last``
finishes the schedule bit for bit like an uninterrupted DDP fit, and evaluate.py scores the
result alike in one process and under torchrun (issue 15, item 3).

Tiny data: 4 training images, batch 2, 2 ranks -> 1 step per epoch; 3 epochs = 3 steps. The 3
validation images do not split evenly over 2 ranks, so DistributedSampler pads one rank with a
repeated image: without the per-image dedupe the AP would differ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny_run import REPO, tiny_args

from detector.checkpointing import load_checkpoint, run_state

DDP = ["--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "2"]
SCHEDULE = ["--trainer.max_epochs", "3"]
HERE = Path(__file__).resolve().parent


def run(args: list[str], timeout: float = 480) -> subprocess.CompletedProcess:
    """A command in a fresh interpreter, tests/ and tests/lit importable (for the callbacks and plugins
    named by class path), one torch thread per process (the machine is shared)."""
    path = os.pathsep.join([str(REPO), str(REPO / "tests"), str(HERE)])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=path)
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def fit(data_root: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    plugin = {"class_path": "ddp_probe.RecordingCheckpointIO", "init_args": {"log": str(root) + ".writes"}}
    return run(["train.py", "fit", *tiny_args(data_root, root), *DDP, *SCHEDULE,
                "--trainer.plugins", json.dumps(plugin), *extra])


def explain(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}"


@pytest.fixture(scope="module")
def ddp_runs(data_root, tmp_path_factory) -> dict[str, object]:
    """An uninterrupted DDP fit, and one stopped by SIGTERM at step 1 then resumed."""
    tmp = tmp_path_factory.mktemp("ddp")
    whole, resumed = tmp / "whole", tmp / "resumed"
    proc = fit(data_root, whole)
    assert proc.returncode == 0, explain(proc)
    out = {"whole": whole, "resumed": resumed, "whole_output": proc.stdout + proc.stderr}
    stop = {"class_path": "tiny_run.SignalAtStep", "init_args": {"step": 1, "signum": int(signal.SIGTERM)}}
    proc = fit(data_root, resumed, "--trainer.callbacks", json.dumps([stop]))  # every rank signals itself
    assert proc.returncode == 143, explain(proc)
    out["stopped_state"] = run_state(resumed / "checkpoints" / "last.ckpt")
    out["stopped_files"] = sorted(p.name for p in (resumed / "checkpoints").iterdir())
    proc = fit(data_root, resumed, "--ckpt_path", "last")
    assert proc.returncode == 0, explain(proc)
    return out


@pytest.mark.slow
def test_ddp_fit_trains_and_rank_zero_writes_each_checkpoint_once(ddp_runs):
    whole: Path = ddp_runs["whole"]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in ddp_runs["whole_output"]
    # exactly the expected files: no duplicates, no temp / partial leftovers, one log version
    assert sorted(p.name for p in (whole / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not [p for p in whole.rglob("*") if ".tmp" in p.name or p.name.endswith(".partial")]
    assert [p.name for p in (whole / "csv").iterdir()] == ["version_0"]
    assert [p.name for p in (whole / "tensorboard").iterdir()] == ["version_0"]
    writes = [line.split(" ", 1) for line in Path(str(whole) + ".writes").read_text().splitlines()]
    assert writes and {rank for rank, _ in writes} == {"0"}  # every checkpoint written by rank 0 alone
    assert {Path(p).name for _, p in writes} == {"best.ckpt", "last.ckpt"}
    last = load_checkpoint(whole / "checkpoints" / "last.ckpt")  # loadable, weights_only=True
    assert last["detector_run"] == {"finished": True, "global_step": 3, "expected_steps": 3}
    assert last["hyper_parameters"]["detector"]["num_classes"] == 8
    ranks = last["detector_rng"]["per_rank"]  # each rank's RNG states, each rank its own seed
    assert len(ranks) == 2 and not torch.equal(ranks[0]["torch"], ranks[1]["torch"])


@pytest.mark.slow
def test_ddp_fit_stopped_by_sigterm_resumes_to_the_full_schedule_bit_for_bit(ddp_runs):
    assert ddp_runs["stopped_state"] == {"finished": False, "global_step": 1, "expected_steps": 3}
    assert ddp_runs["stopped_files"] == ["best.ckpt", "last.ckpt"]
    resumed: Path = ddp_runs["resumed"]
    assert run_state(resumed / "checkpoints" / "last.ckpt") == {"finished": True, "global_step": 3,
                                                                 "expected_steps": 3}
    assert sorted(p.name for p in (resumed / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    a = load_checkpoint(ddp_runs["whole"] / "checkpoints" / "last.ckpt")["state_dict"]
    b = load_checkpoint(resumed / "checkpoints" / "last.ckpt")["state_dict"]
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(ddp_runs, tmp_path):
    ckpt = str(ddp_runs["whole"] / "checkpoints" / "last.ckpt")
    flags = ["--progress", "false", "--analysis", "false"]
    proc = run(["evaluate.py", ckpt, "--output", str(tmp_path / "one"), *flags])
    assert proc.returncode == 0, explain(proc)
    proc = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                "evaluate.py", ckpt, "--output", str(tmp_path / "ddp"), *flags])
    assert proc.returncode == 0, explain(proc)
    assert proc.stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert ddp["num_images"] == one["num_images"] == 3
    assert ddp["num_detections"] == one["num_detections"] > 0
    assert ddp["bbox"] == one["bbox"] and ddp["bbox_per_class"] == one["bbox_per_class"]
    dets_one = json.loads((tmp_path / "one" / "detections.json").read_text())
    dets_ddp = json.loads((tmp_path / "ddp" / "detections.json").read_text())
    # Same detections; images are batched differently per rank, so floats may differ in the last bits.
    assert len(dets_ddp) == len(dets_one)
    for a, b in zip(dets_ddp, dets_one):
        assert (a["image_id"], a["category_id"]) == (b["image_id"], b["category_id"])
        assert a["bbox"] == pytest.approx(b["bbox"], abs=1e-3) and a["score"] == pytest.approx(b["score"], abs=1e-5)
