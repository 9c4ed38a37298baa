"""benchmarks/data.py --scale N, run for real on a small folder (issue 15, item 4)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_scale_benchmark_runs_and_writes_its_json(tmp_path):
    out, gen = tmp_path / "scale.json", tmp_path / "gen"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "data.py"), "--scale", "200", "--repeats", "1", "--workers", "1",
           "--scale-cache", str(gen), "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pycocotools COCO(file)" in done.stdout and "load average" in done.stdout
    result = json.loads(out.read_text())
    assert result["images"] == 200 and 1000 < result["annotations"] < 2000  # Poisson(7.3) per image
    for row in ("coco", "cold", "warm"):
        assert result["median"][row]["seconds"] > 0 and result["median"][row]["peak_mib"] > 0
        assert set(result["ratios"][row]) == {"time", "memory"}
    (worker,) = result["epoch"]["dataset"]["workers"]
    assert {"rss", "uss", "pss"} <= set(worker["start"]) and "uss_growth_mib" in worker
    assert (gen / "scale-200-0" / "DONE.json").is_file()  # kept for the next run


def test_scale_folder_is_generated_once_and_loads(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_data", ROOT / "benchmarks" / "data.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    root = bench.scale_folder(tmp_path, 30)
    stamp = (root / "instances.json").stat().st_mtime_ns
    assert bench.scale_folder(tmp_path, 30) == root and (root / "instances.json").stat().st_mtime_ns == stamp
    from detector.data.coco import CocoDetection

    ds = CocoDetection(root / "images", root / "instances.json")
    assert len(ds) == 30 and ds[0][0].shape == (3, 24, 32)
