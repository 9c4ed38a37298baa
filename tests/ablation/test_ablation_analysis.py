"""The ablation tables read each run's eval/analysis.json (AP at each IoU, localization error),
and still tabulate runs evaluated before the analysis existed (those columns empty)."""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest

from detector.ablation.columns import ANALYSIS_COLUMNS, IOU_COLUMNS
from detector.ablation.results import write_results
from detector.ablation.runs import RunDir, RunFileWarning, RunSpec
from detector.ablation.variants import Variant

POOL, ALIGN = Variant("roi_pool"), Variant("roi_align", "avg")
THRESHOLDS = [0.5 + 0.05 * i for i in range(10)]


def _run(out, variant, seed, ap, analysis=None, step=6, mask_ap=None):
    """A completed run as the runner leaves it (run.json with its verified stamp, eval/metrics.json),
    with evaluate.py's analysis.json when `analysis` is given (AP falling linearly with IoU)."""
    run = RunDir(out, RunSpec(variant, 32, seed))
    run.eval_dir.mkdir(parents=True)
    bbox = {"AP": ap, "AP50": ap * 1.6, "AP75": ap * 0.9, "APs": ap / 2, "APm": ap, "APl": ap * 1.2}
    run.metrics_file.write_text(json.dumps({"bbox": bbox, "global_step": step}))
    run.marker.write_text(json.dumps({
        "complete": True, "name": run.spec.name, "variant": variant.name, "op": variant.op, "mode": variant.mode,
        "stride": 32, "seed": seed, "bbox": bbox, "num_images": 5, "global_step": step,
        "segm": None if mask_ap is None else {"AP": mask_ap, "AP50": mask_ap * 1.5, "AP75": mask_ap * 0.8,
                                              "APs": mask_ap / 3, "APm": mask_ap, "APl": mask_ap * 1.3},
        "checkpoint": str(run.train_dir / "last.ckpt"), "train_time_s": 60.0, "train_attempts": 1,
        "eval_time_s": 1.0, "infer_ms_per_image": 10.0, "roi_ms_per_image": 1.0,
        "finished_at": "2026-12-05T00:00:00", "train_command": ["train.py"],
        "verified": {"global_step": step, "expected_steps": step, "source": "test"}}))
    if analysis is not None:
        top, c75, loc = analysis
        doc = {"bbox": {"ap_per_iou": {"iou_thresholds": THRESHOLDS, "AP": [top * (1 - i / 10) for i in range(10)]},
                        "breakdown": {"AP": {"C75": c75, "Loc": loc}, "loc_error": loc - c75,
                                      "loc_share": (loc - c75) / (1 - c75)}},
               "global_step": step}
        (run.eval_dir / "analysis.json").write_text(json.dumps(doc))
    return run.spec


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ap_at_each_iou_and_localization_share_per_variant(tmp_path):
    specs = [_run(tmp_path, POOL, 0, 0.30, (0.50, 0.30, 0.60)), _run(tmp_path, POOL, 1, 0.32, (0.54, 0.34, 0.62)),
             _run(tmp_path, ALIGN, 0, 0.36, (0.60, 0.40, 0.55)), _run(tmp_path, ALIGN, 1, 0.35, None)]  # an older eval
    doc = write_results(tmp_path, specs, [POOL, ALIGN], [32])
    pool, align = doc["summary"]
    assert pool["AP_IoU50_mean"] == pytest.approx(52.0) and pool["AP_IoU50_std"] == pytest.approx(math.sqrt(8))
    assert pool["AP_IoU95_mean"] == pytest.approx(52.0 * 0.1)
    assert pool["loc_error_mean"] == pytest.approx(29.0)  # (0.30 + 0.28) / 2 in points
    assert pool["loc_share_mean"] == pytest.approx(100 * (0.30 / 0.70 + 0.28 / 0.66) / 2)
    # the run without analysis.json still counts for AP, and leaves its analysis columns empty
    assert align["n"] == 2 and align["AP_mean"] == pytest.approx(35.5)
    assert align["AP_IoU50_mean"] == pytest.approx(60.0) and math.isnan(align["AP_IoU50_std"])
    assert align["loc_share_delta"] == pytest.approx(100 * 0.15 / 0.60 - pool["loc_share_mean"])
    assert align["loc_share_beyond_spread"] is None and pool["loc_share_delta"] == 0.0  # one seed with analysis
    old_run = next(r for r in doc["runs"] if r["name"] == "roi_align_avg_s32_seed1")
    assert all(math.isnan(old_run[c]) for c in ANALYSIS_COLUMNS)

    rows = _csv(tmp_path / "results.csv")
    header = list(rows[0])
    first_new = header.index(f"{IOU_COLUMNS[0]}_mean")
    assert header[first_new:] == [f"{c}_{s}" for c in ANALYSIS_COLUMNS for s in ("mean", "std")] + [
        "loc_share_delta", "loc_share_beyond_spread"]  # appended
    assert "AP_beyond_spread" in header[:first_new] and header[:5] == ["stride", "variant", "label", "n", "seeds"]
    assert list(_csv(tmp_path / "runs.csv")[0])[-len(ANALYSIS_COLUMNS):] == list(ANALYSIS_COLUMNS)
    md = (tmp_path / "results.md").read_text()
    assert "Box AP (percent) at each IoU threshold" in md and "loc share" in md and "52.0 ± 2.8" in md
    assert (tmp_path / "ap_vs_iou.png").stat().st_size > 1000 and (tmp_path / "ablation.png").is_file()


def test_ablation_without_any_analysis_keeps_todays_tables(tmp_path):
    specs = [_run(tmp_path, POOL, 0, 0.30), _run(tmp_path, ALIGN, 0, 0.36)]
    doc = write_results(tmp_path, specs, [POOL, ALIGN], [32])
    assert all(math.isnan(s["AP_IoU50_mean"]) for s in doc["summary"])
    assert "at each IoU threshold" not in (tmp_path / "results.md").read_text()
    assert not (tmp_path / "ap_vs_iou.png").exists()
    assert _csv(tmp_path / "results.csv")[0]["AP_IoU50_mean"] == ""  # an empty cell, not 'nan'


def test_analysis_of_another_step_or_broken_is_not_used(tmp_path):
    specs = [_run(tmp_path, POOL, 0, 0.30, (0.50, 0.30, 0.60)), _run(tmp_path, POOL, 1, 0.32, (0.54, 0.34, 0.62))]
    stale = RunDir(tmp_path, specs[0]).eval_dir / "analysis.json"
    doc = json.loads(stale.read_text())
    stale.write_text(json.dumps({**doc, "global_step": 3}))
    (RunDir(tmp_path, specs[1]).eval_dir / "analysis.json").write_text('{"bbox": {"ap_per_iou": 5}}')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = write_results(tmp_path, specs, [POOL], [32], plot=False)
    messages = [str(w.message) for w in caught if issubclass(w.category, RunFileWarning)]
    assert any("is about step 3, the run evaluated step 6" in m for m in messages)
    assert any("is not an analysis.json evaluate.py wrote" in m for m in messages)
    assert math.isnan(result["summary"][0]["AP_IoU50_mean"]) and result["summary"][0]["n"] == 2


def test_mask_runs_get_a_mask_table_with_deltas_and_the_spread_rule(tmp_path):
    """Table 2c is mask AP: runs with ``segm`` metrics get their own table (AP, AP50, AP75, by
    size), Δ to RoIPool judged like the box AP."""
    specs = [_run(tmp_path, POOL, 0, 0.30, mask_ap=0.26), _run(tmp_path, POOL, 1, 0.32, mask_ap=0.27),
             _run(tmp_path, ALIGN, 0, 0.36, mask_ap=0.43), _run(tmp_path, ALIGN, 1, 0.35, mask_ap=0.44)]
    doc = write_results(tmp_path, specs, [POOL, ALIGN], [32])
    pool, align = doc["summary"]
    assert pool["mask_AP_mean"] == pytest.approx(26.5) and align["mask_AP75_mean"] == pytest.approx(43.5 * 0.8)
    assert align["mask_AP_delta"] == pytest.approx(17.0) and align["mask_AP_beyond_spread"] is True
    md = (tmp_path / "results.md").read_text()
    table = md.split("Mask AP (percent; the metric of Mask R-CNN's Table 2c)")[1]
    assert "| mask AP | mask AP50 | mask AP75 | mask APs | mask APm | mask APl |" in table
    assert "| 32 | RoIAlign avg | 2 | 43.5 ± 0.7 | 65.2 ± 1.1 | 34.8 ± 0.6 |" in table and "+17.0 (yes)" in table
    # box-only runs: no mask table
    box_only = tmp_path / "box"
    write_results(box_only, [_run(box_only, POOL, 0, 0.30)], [POOL], [32])
    assert "Mask AP" not in (box_only / "results.md").read_text()
