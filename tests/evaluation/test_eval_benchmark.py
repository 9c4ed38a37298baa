"""benchmarks/eval.py at 50 images: it runs, (b) gives pycocotools' own numbers, and the per-class
AP it reports (read from the one COCOeval's precision array) equals a COCOeval rerun on that class alone."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import io
import json
import math
from pathlib import Path

import pytest
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import gc_paused, load_coco

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "eval.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_eval", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_small_benchmark_runs_and_writes_its_json(bench, tmp_path, capsys):
    report = bench.main(["--images", "50", "--repeats", "1", "--analysis-repeats", "1",
                         "--json", str(tmp_path / "bench.json")])
    assert report["stats_equal"] and report["images"] == 50 and report["detections"] == 50 * 100
    assert set(report["median_s"]) == {"pycocotools", "ours", "ours+analysis"}
    assert json.loads((tmp_path / "bench.json").read_text())["ratio"]["ours"] == pytest.approx(report["ratio"]["ours"])
    out = capsys.readouterr().out
    assert "(a) pycocotools alone" in out and "load average" in out


def test_per_class_ap_equals_a_cocoeval_rerun_per_class(bench, tmp_path):
    gt = bench.make_ground_truth(50)
    detections = bench.make_detections(gt)
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    result = bench.ours(str(path), detections).metrics["bbox"]
    coco = load_coco(str(path))
    coco_dt = coco.loadRes([dict(d) for ds in detections.values() for d in ds])
    checked = 0
    for cat in gt["categories"]:
        with contextlib.redirect_stdout(io.StringIO()):
            alone = COCOeval(coco, coco_dt, iouType="bbox")
            alone.params.catIds = [cat["id"]]
            alone.evaluate()
            alone.accumulate()
            alone.summarize()
        expected = alone.stats[0]
        got = result.per_class[cat["name"]]
        if expected < 0:
            assert math.isnan(got)
        else:
            assert got == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked > 40


def test_gc_paused_puts_the_collector_back():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()  # it was off: it stays off
    finally:
        gc.enable()
