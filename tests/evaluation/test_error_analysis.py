"""The error analysis (detector.evaluation.error_analysis, plots, and what evaluate.py writes).

Reference numbers are computed here independently from COCOeval's own arrays or from a fresh
COCOeval run; the hand-made case (analysis_cases.hand_case) has its expected matrix and
breakdown worked out by hand in the comments.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import numpy as np
import pytest
from analysis_cases import CATEGORIES, coco, hand_case, random_case
from pycocotools.cocoeval import COCOeval

from detector.evaluation.coco_eval import evaluate_coco
from detector.evaluation.error_analysis import (
    BREAKDOWN_TYPES,
    analyze,
    check_score_threshold,
    confusion_matrix,
    error_breakdown,
)
from detector.evaluation.plots import (
    plot_ap_vs_iou,
    plot_breakdown,
    plot_confusion,
    plot_pr_curves,
    write_png,
)
from detector.evaluation.report import (
    ap_vs_iou_series,
    format_ap_vs_iou,
    format_breakdown,
)


@pytest.fixture(scope="module", params=[0, 1])
def scored(request):
    gt, dets = random_case(seed=request.param)
    return evaluate_coco(gt, dets)["bbox"]


def test_ap_per_iou_is_cocoeval_precision_mean_per_threshold(scored):
    precision = scored.evaluator.eval["precision"]  # (T, R, K, A, M); area 0 = all, M -1 = 100 dets
    assert scored.evaluator.params.areaRngLbl[0] == "all" and scored.evaluator.params.maxDets[-1] == 100
    expected = []
    for t in range(precision.shape[0]):
        p = precision[t, :, :, 0, -1]
        expected.append(float(np.mean(p[p > -1])))
    doc = analyze(scored)["ap_per_iou"]
    assert doc["iou_thresholds"] == pytest.approx(np.linspace(0.5, 0.95, 10).tolist())
    assert doc["AP"] == expected
    assert np.mean(doc["AP"]) == pytest.approx(scored.stats["AP"], abs=1e-12)
    assert doc["AP"][0] == pytest.approx(scored.stats["AP50"], abs=1e-12)
    assert doc["AP"][5] == pytest.approx(scored.stats["AP75"], abs=1e-12)
    assert 0 < scored.stats["AP"] < 1  # the case is not degenerate


def test_breakdown_c75_c50_are_ap75_ap50_and_curves_only_grow(scored):
    b = error_breakdown(scored.evaluator)
    assert b["types"] == list(BREAKDOWN_TYPES)
    assert abs(b["AP"]["C75"] - scored.stats["AP75"]) < 1e-9
    assert abs(b["AP"]["C50"] - scored.stats["AP50"]) < 1e-9
    assert b["AP"]["FN"] == 1.0
    curves = np.array([b["precision"][t] for t in b["types"]])  # (7, R)
    assert (np.diff(curves, axis=0) >= -1e-12).all()  # each error type forgiven can only raise precision
    for i, t in enumerate(b["types"]):
        assert b["AP"][t] == pytest.approx(curves[i].mean(), abs=1e-12)  # number = area under the curve
    assert b["AP"]["Loc"] > b["AP"]["C50"] and b["AP"]["Oth"] > b["AP"]["Loc"]  # the case has both errors


def test_loc_is_a_fresh_cocoeval_at_iou_point_one(scored):
    """The Loc rerun reuses the main run's IoUs: it must equal COCOeval run from scratch at IoU .1."""
    with contextlib.redirect_stdout(io.StringIO()):
        fresh = COCOeval(scored.evaluator.cocoGt, scored.evaluator.cocoDt, iouType="bbox")
        fresh.params.imgIds = list(scored.evaluator.params.imgIds)
        fresh.params.iouThrs = np.array([0.1])
        fresh.params.maxDets = [100]
        fresh.evaluate()
        fresh.accumulate()
    p = fresh.eval["precision"][0, :, :, 0, 0]  # (R, K), area all
    expected = float(np.mean(p[:, (p > -1).all(axis=0)]))
    assert error_breakdown(scored.evaluator)["AP"]["Loc"] == pytest.approx(expected, abs=1e-12)


def test_hand_made_confusion_matrix():
    gt, dets = hand_case()
    result = evaluate_coco(gt, dets)["bbox"]
    cm = confusion_matrix(result.evaluator, iou_threshold=0.5, score_threshold=0.5)
    assert cm["labels"] == ["cat", "dog", "car", "background"]
    assert cm["rows"] == "ground truth" and cm["columns"] == "detection"
    assert cm["matrix"] == [
        [1, 0, 0, 0],  # the cat found as cat (COCOeval's match)
        [1, 0, 0, 0],  # the dog detected as cat (IoU .9, our cross-class rule)
        [0, 0, 0, 1],  # the car nobody found
        [0, 0, 1, 0],  # the car detected on background; the dog at .3 is under the score threshold
    ]
    # without the score threshold the dog detection on the (already matched) cat is background too
    assert confusion_matrix(result.evaluator, score_threshold=0.0)["matrix"][3] == [0, 1, 1, 0]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "high", None])
def test_confusion_score_threshold_is_checked(bad):
    gt, dets = hand_case()
    evaluator = evaluate_coco(gt, dets)["bbox"].evaluator
    with pytest.raises(ValueError, match=r"score_threshold must be a score in \[0, 1\]"):
        confusion_matrix(evaluator, score_threshold=bad)
    with pytest.raises(ValueError, match=r"--confusion_score must be"):
        check_score_threshold(bad, "--confusion_score")


def test_hand_made_breakdown():
    """cat: its false positive on the dog (scored first) halves precision until Sim forgives it
    (same supercategory); dog and car: nothing right. Averaged over the 3 classes with objects."""
    gt, dets = hand_case()
    b = analyze(evaluate_coco(gt, dets)["bbox"])["breakdown"]
    assert b["per_class"]["cat"] == pytest.approx(
        {"C75": 0.5, "C50": 0.5, "Loc": 0.5, "Sim": 1.0, "Oth": 1.0, "BG": 1.0, "FN": 1.0}, abs=1e-12)
    for name in ("dog", "car"):
        assert b["per_class"][name] == pytest.approx(
            {"C75": 0, "C50": 0, "Loc": 0, "Sim": 0, "Oth": 0, "BG": 0, "FN": 1.0}, abs=1e-12)
    assert b["AP"] == pytest.approx({"C75": 1 / 6, "C50": 1 / 6, "Loc": 1 / 6, "Sim": 1 / 3, "Oth": 1 / 3,
                                     "BG": 1 / 3, "FN": 1.0}, abs=1e-12)
    assert b["loc_error"] == pytest.approx(0.0) and b["classes_averaged"] == 3


def test_sim_needs_a_supercategory():
    """A dog detected as cat is forgiven by Sim when both are animals, only by Oth when the
    categories have no supercategory (each is then its own: Sim == Loc)."""
    bare = [{"id": c["id"], "name": c["name"]} for c in CATEGORIES]
    gt0, dets = hand_case()
    gt = coco(gt0.dataset["images"], [{k: a[k] for k in ("image_id", "category_id", "bbox")}
                                      for a in gt0.dataset["annotations"]], categories=bare)
    cat = analyze(evaluate_coco(gt, dets)["bbox"])["breakdown"]["per_class"]["cat"]
    assert cat["Sim"] == cat["Loc"] == 0.5 and cat["Oth"] == pytest.approx(1.0, abs=1e-12)


def test_per_class_table_and_pr_curves(scored):
    doc = analyze(scored)
    precision = scored.evaluator.eval["precision"][:, :, :, 0, -1]
    recall = scored.evaluator.eval["recall"][:, :, 0, -1]
    for k, row in enumerate(doc["per_class"]):
        assert row["name"] == scored.evaluator.cocoGt.cats[row["category_id"]]["name"]
        assert row["AP"] == pytest.approx(scored.per_class[row["name"]], abs=1e-12)
        assert row["AP50"] == pytest.approx(precision[0, :, k].mean(), abs=1e-12)
        assert row["AR100"] == pytest.approx(recall[:, k].mean(), abs=1e-12)
        assert doc["pr_curves"]["classes"][row["name"]]["IoU75"] == precision[5, :, k].tolist()
        assert row["num_gt"] == sum(a["category_id"] == row["category_id"] for a in scored.evaluator.cocoGt.anns.values())
    assert len(doc["pr_curves"]["recall"]) == 101


def _write_all(analysis, folder):
    figures = {"ap_vs_iou": plot_ap_vs_iou(ap_vs_iou_series({"a": {"bbox": analysis}, "b": {"bbox": analysis}})),
               "pr": plot_pr_curves(analysis), "confusion": plot_confusion(analysis),
               "breakdown": plot_breakdown(analysis)}
    for name, fig in figures.items():
        write_png(fig, folder / f"{name}.png")
        assert (folder / f"{name}.png").stat().st_size > 1000
        assert (folder / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_are_written(tmp_path, scored):
    _write_all(analyze(scored), tmp_path)


def test_class_without_ground_truth_and_no_detections_at_all(tmp_path):
    cats = [*CATEGORIES, {"id": 4, "name": "boat", "supercategory": "vehicle"}]
    gt0, dets = hand_case()
    gt = coco(gt0.dataset["images"], [{k: a[k] for k in ("image_id", "category_id", "bbox")}
                                      for a in gt0.dataset["annotations"]], categories=cats)
    with_boat = analyze(evaluate_coco(gt, dets)["bbox"])
    assert with_boat["pr_curves"]["classes"]["boat"]["IoU50"] is None
    assert math.isnan(with_boat["per_class"][3]["AP"]) and with_boat["per_class"][3]["num_gt"] == 0
    assert with_boat["breakdown"]["per_class"]["boat"] is None
    assert with_boat["breakdown"]["AP"]["C75"] == pytest.approx(1 / 6)  # boat is not averaged in
    _write_all(with_boat, tmp_path / "boat")

    empty = evaluate_coco(gt, [])["bbox"]
    assert empty.stats["AP"] == 0.0  # today's no-detection numbers are kept
    nothing = analyze(empty)
    assert nothing["ap_per_iou"]["AP"] == [0.0] * 10
    assert nothing["breakdown"]["AP"] == pytest.approx(
        {"C75": 0, "C50": 0, "Loc": 0, "Sim": 0, "Oth": 0, "BG": 0, "FN": 1.0}, abs=1e-12)
    assert nothing["confusion_matrix"]["matrix"] == [[0, 0, 0, 0, 1], [0, 0, 0, 0, 1], [0, 0, 0, 0, 1],
                                                     [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
    _write_all(nothing, tmp_path / "nothing")


def test_no_image_evaluated_is_a_clear_error():
    gt, _ = hand_case()
    result = evaluate_coco(gt, [], image_ids=[])["bbox"]
    with pytest.raises(ValueError, match="no COCOeval to analyse"):
        analyze(result)


def test_segm_analysis_runs_on_masks():
    gt, dets = hand_case()
    from pycocotools import mask as mask_utils

    for d in dets:
        x, y, w, h = d["bbox"]
        rle = mask_utils.frPyObjects([[x, y, x + w, y, x + w, y + h, x, y + h]], 100, 100)[0]
        d["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
    for a in gt.dataset["annotations"]:
        x, y, w, h = a["bbox"]
        a["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    result = evaluate_coco(gt, dets, iou_types=("segm",))["segm"]
    doc = analyze(result)
    assert doc["confusion_matrix"]["matrix"] == [[1, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    assert abs(doc["breakdown"]["AP"]["C75"] - result.stats["AP75"]) < 1e-9


def test_printed_tables(scored):
    a = analyze(scored)
    table = format_ap_vs_iou(["first", "second"], [{"bbox": a}, {"bbox": a}])
    lines = table.splitlines()
    assert lines[0].split() == ["AP", "at", "IoU", *(f"{t:.2f}" for t in np.linspace(0.5, 0.95, 10))]
    assert lines[2].split()[:2] == ["bbox", "first"] and lines[3].split()[:2] == ["bbox", "second"]
    assert float(lines[2].split()[2]) == pytest.approx(a["ap_per_iou"]["AP"][0], abs=5e-5)
    breakdown = format_breakdown(["first"], [{"bbox": a}])
    assert "C75" in breakdown and "loc share" in breakdown
    assert f"{a['breakdown']['AP']['Loc']:.4f}" in breakdown


def test_evaluate_writes_analysis_side_by_side(trained_run, tmp_path, capsys):
    """evaluate.py on two checkpoints: each gets analysis.json and plots, the folder one
    AP-vs-IoU figure; metrics.json has exactly the keys it had without the analysis."""
    from detector.cli.evaluate import main_evaluate

    out = tmp_path / "out"
    ckpts = [str(trained_run / "checkpoints" / "best.ckpt"), str(trained_run / "checkpoints" / "last.ckpt")]
    docs = main_evaluate([*ckpts, "--output", str(out), "--progress", "false"])
    printed = capsys.readouterr().out
    assert "AP at IoU" in printed and "error breakdown" in printed and "error analysis took" in printed
    assert (out / "ap_vs_iou.png").stat().st_size > 1000
    for label in docs:
        folder = out / label
        analysis = json.loads((folder / "analysis.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert set(metrics) >= {"bbox", "bbox_per_class", "checkpoint"} and "ap_per_iou" not in metrics
        assert len(analysis["bbox"]["ap_per_iou"]["AP"]) == 10 and analysis["global_step"] == metrics["global_step"]
        ap = [v for v in analysis["bbox"]["ap_per_iou"]["AP"] if v is not None]
        if metrics["bbox"]["AP"] is not None:
            assert np.mean(ap) == pytest.approx(metrics["bbox"]["AP"], abs=1e-12)
        for name in ("ap_vs_iou.png", "bbox_pr_curves.png", "bbox_confusion.png", "bbox_breakdown.png"):
            assert (folder / name).stat().st_size > 1000


def test_analysis_files_are_evaluate_results(tmp_path):
    """analysis.json and the analysis PNGs count as evaluate.py's files: refused without
    --overwrite, removed by it; a user's other PNG stays."""
    from detector.evaluation.output import ANALYSIS_PLOTS, check_output, clear_results

    (tmp_path / "analysis.json").write_text("{}")
    with pytest.raises(ValueError, match=r"already holds evaluation results \(analysis\.json\)"):
        check_output(tmp_path)
    (tmp_path / "A").mkdir()
    for name in ANALYSIS_PLOTS:
        (tmp_path / "A" / name).write_bytes(b"png")
    (tmp_path / "mine.png").write_bytes(b"png")
    removed = clear_results(tmp_path)
    assert sorted(p.name for p in removed) == sorted(["analysis.json", *ANALYSIS_PLOTS])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.png"]  # A/ was left empty, so it went too


def test_a_failing_analysis_keeps_the_scores(trained_run, tmp_path, capsys, monkeypatch):
    from detector.cli.evaluate import main_evaluate
    from detector.evaluation import runner

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "analyze", broken)
    out = tmp_path / "out"
    main_evaluate([str(trained_run / "checkpoints" / "last.ckpt"), "--output", str(out), "--progress", "false"])
    captured = capsys.readouterr()
    assert "the error analysis of" in captured.err and "RuntimeError: boom" in captured.err
    assert (out / "metrics.json").is_file() and (out / "detections.json").is_file()
    assert not (out / "analysis.json").exists() and "AP at IoU" not in captured.out


@pytest.mark.parametrize("seed", [0, 3])
def test_pooled_reruns_give_cocoevals_own_breakdown(seed, monkeypatch):
    """The per-class reruns pool each image's objects once (`_Rerun.POOL`); COCOeval's own pooling
    per call gives the same arrays, also with tied scores (order kept)."""
    from detector.evaluation import error_analysis

    gt, dets = random_case(seed=seed, images=30)
    for d in dets:
        d["score"] = round(d["score"], 1)  # many ties: the pooled order must be COCOeval's
    result = evaluate_coco(gt, dets)["bbox"]
    pooled = error_breakdown(result.evaluator)
    monkeypatch.setattr(error_analysis._Rerun, "POOL", False)
    plain = error_breakdown(result.evaluator)
    assert json.dumps(pooled) == json.dumps(plain)
