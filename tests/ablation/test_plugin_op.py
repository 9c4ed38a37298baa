"""An ROI op registered from outside detector/ trains, evaluates and appears in an ablation table.

The proof that the ROI variant table is the one place an op is declared: `toy_pool`
(tests/plugins/toy_roi_op.py, registered through ``DETECTOR_PLUGINS``) runs through the
real ``python -m detector.ablation`` (which runs the real train.py and evaluate.py) next to
RoIPool, with no file inside detector/ naming it.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "tests.plugins.toy_roi_op"


def test_no_file_in_the_package_names_the_toy_op():
    named = [p for p in (REPO / "detector").rglob("*.py") if "toy_pool" in p.read_text()]
    assert named == []


def test_toy_op_trains_evaluates_and_is_tabulated(tmp_path):
    env = dict(os.environ, DETECTOR_PLUGINS=PLUGIN, OMP_NUM_THREADS="1", DETECTOR_CACHE=str(tmp_path / "cache"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    out = tmp_path / "abl"
    cmd = [sys.executable, "-m", "detector.ablation", "--config", str(REPO / "configs" / "tiny.yaml"),
           "--out", str(out), "--variants", "roi_pool", "toy_pool", "--seeds", "1", "--timing-images", "0",
           "--no-analysis", "--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.limit_val_batches", "0"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(out / "results.csv") as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"roi_pool", "toy_pool"}
    metrics = json.loads((out / "runs" / "toy_pool_s32_seed0" / "eval" / "metrics.json").read_text())
    assert metrics["roi_op"] == "toy_pool" and metrics["num_images"] == 3
    checkpoint = json.loads((out / "runs" / "toy_pool_s32_seed0" / "run.json").read_text())["checkpoint"]
    assert Path(checkpoint).is_file()
