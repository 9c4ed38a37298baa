"""DDP evaluation (2 CPU processes, gloo) gives the AP of one process on the same checkpoint and data.

The 3 validation images do not split evenly over 2 ranks, so DistributedSampler pads one
rank with a repeated image: without the per-image dedupe the AP would differ.
"""

from __future__ import annotations

import json

import pytest
from tiny_run import run_script


@pytest.mark.slow
def test_ddp_evaluation_equals_single_process(trained_run, tmp_path):
    ckpt = str(trained_run / "checkpoints" / "last.ckpt")
    run_script("evaluate.py", [ckpt, "--output", str(tmp_path / "one")])
    proc = run_script("evaluate.py", [ckpt, "--output", str(tmp_path / "ddp"), "--trainer.accelerator", "cpu",
                                      "--trainer.strategy", "ddp", "--trainer.devices", "2"], timeout=400)
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in proc.stdout + proc.stderr
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
