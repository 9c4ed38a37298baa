"""The quantization report: COCO loading, per-size statistics, and the CLI on tiny data."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.analysis.coco_boxes import load_gt_boxes, resize_scale, size_category
from detector.analysis.quantization import analyze, main

REPO = Path(__file__).resolve().parents[2]


def write_coco(path: Path) -> Path:
    """Two images; the slides' object, a small, a medium box, a crowd and a zero-width box."""
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 800, "height": 576},
                   {"id": 2, "file_name": "b.png", "width": 400, "height": 300}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [300, 210, 230, 180],
             "area": 230 * 180, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 20, 20, 25], "area": 500,
             "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [100, 50, 60, 70], "area": 4200,
             "iscrowd": 0},
            {"id": 4, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 10000,
             "iscrowd": 1},
            {"id": 5, "image_id": 1, "category_id": 1, "bbox": [5, 5, 0, 10], "area": 0,
             "iscrowd": 0},
        ],
    }
    path.write_text(json.dumps(data))
    return path


def test_load_gt_boxes_sizes_and_skips(tmp_path):
    gt = load_gt_boxes(write_coco(tmp_path / "ann.json"))
    np.testing.assert_array_equal(gt.boxes[0], [300, 210, 530, 390])
    assert list(gt.sizes) == ["large", "small", "medium"]
    assert gt.skipped == {"crowd": 1, "zero_size": 1}
    np.testing.assert_array_equal(gt.image_sizes[1], [400, 300])
    assert len(load_gt_boxes(tmp_path / "ann.json", include_crowd=True).boxes) == 4


def test_resize_rule_and_size_thresholds():
    # short side 300 -> 600 (x2) unless the long side would pass max_size
    np.testing.assert_allclose(resize_scale([400, 2000], [300, 300], 600, 1000), [2.0, 0.5])
    np.testing.assert_allclose(resize_scale([400], [300], None, None), [1.0])
    assert list(size_category([32 ** 2 - 1, 32 ** 2, 96 ** 2 - 1, 96 ** 2])) == [
        "small", "medium", "medium", "large"]


def test_load_gt_boxes_names_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_gt_boxes(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{\"images\": []}")
    with pytest.raises(ValueError, match="bad.json.*'images'/'annotations'"):
        load_gt_boxes(tmp_path / "bad.json")


def test_rows_by_op_and_size(tmp_path):
    gt = load_gt_boxes(write_coco(tmp_path / "ann.json"))
    rows, _ = analyze(gt, strides=(32, 16), output_size=3)
    assert len(rows) == 2 * 3 * 4  # strides x ops x (all, small, medium, large)
    pool_large = next(r for r in rows if (r["stride"], r["op"], r["size"]) == (32, "roi_pool", "large"))
    assert pool_large["n"] == 1 and pool_large["iou_mean"] == pytest.approx(0.65247, abs=1e-5)
    assert pool_large["shift_x1"] == -12 and pool_large["shift_y1"] == 14
    assert pool_large["shift_x2"] == 46 and pool_large["shift_y2"] == 26
    pool_all = next(r for r in rows if (r["stride"], r["op"], r["size"]) == (32, "roi_pool", "all"))
    per_size = [r for r in rows if r["stride"] == 32 and r["op"] == "roi_pool" and r["size"] != "all"]
    assert pool_all["n"] == sum(r["n"] for r in per_size) == 3
    assert pool_all["iou_mean"] == pytest.approx(sum(r["n"] * r["iou_mean"] for r in per_size) / 3)
    align = next(r for r in rows if (r["stride"], r["op"], r["size"]) == (32, "roi_align", "all"))
    assert align["iou_min"] == 1.0 and align["max_abs_shift"] == 0.0  # default aligned=True
    legacy, _ = analyze(gt, strides=(32,), output_size=3, aligned=False)
    legacy_align = next(r for r in legacy if (r["op"], r["size"]) == ("roi_align", "large"))
    assert legacy_align["shift_x1"] == 16.0 and legacy_align["iou_mean"] < 0.75
    # finer stride, less quantization
    pool16 = next(r for r in rows if (r["stride"], r["op"], r["size"]) == (16, "roi_pool", "all"))
    assert pool16["iou_mean"] > pool_all["iou_mean"]


def test_cli_writes_table_json_markdown_and_plot(tmp_path, capsys):
    ann = write_coco(tmp_path / "ann.json")
    out = tmp_path / "q"
    main(["--annotations", str(ann), "--stride", "32", "--output-size", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "| 32 | roi_pool | large | 1 | 0.652 |" in printed
    with (out / "quantization.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 12 and {r["op"] for r in rows} == {"roi_pool", "roi_warp", "roi_align"}
    js = json.loads((out / "quantization.json").read_text())
    assert js["settings"]["boxes"] == 3 and len(js["rows"]) == 12
    assert "IoU mean" in (out / "quantization.md").read_text()
    assert (out / "quantization.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_as_module_subprocess(tmp_path):
    ann = write_coco(tmp_path / "ann.json")
    proc = subprocess.run(
        [sys.executable, "-m", "detector.analysis.quantization", "--annotations", str(ann),
         "--stride", "16", "32", "--no-plot", "--out", str(tmp_path / "q")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert "| 16 | roi_pool | all | 3 |" in proc.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "detector.analysis.quantization", "--annotations",
         str(tmp_path / "nope.json"), "--out", str(tmp_path / "q")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    assert bad.returncode != 0 and "nope.json" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_reads_data_stride_and_resize_from_a_train_config(tmp_path):
    ann = write_coco(tmp_path / "ann.json")
    (tmp_path / "img").mkdir()
    config = tmp_path / "train.yaml"
    config.write_text(
        "model:\n  detector:\n    stride: 16\n    min_size: [100, 288]\n    max_size: 1000\n"
        f"data:\n  dataset: coco\n  train_images: {tmp_path / 'img'}\n  train_annotations: {ann}\n"
        f"  val_images: {tmp_path / 'img'}\n  val_annotations: {ann}\n")
    doc = main(["--config", str(config), "--out", str(tmp_path / "q"), "--no-plot"])
    s = doc["settings"]
    assert s["strides"] == [16] and s["min_size"] == 288 and s["max_size"] == 1000
    # image 1 (800 x 576) is halved (288 / 576): the slides' box becomes (150, 105, 265, 195)
    large = next(r for r in doc["rows"] if (r["op"], r["size"]) == ("roi_pool", "large"))
    # at stride 16: cells round(9.375)=9 .. round(16.5625)=17 -> x 144..288; rows 7..12 -> y 112..208
    inter, union = (265 - 150) * (195 - 112), 115 * 90 + 144 * 96 - (265 - 150) * (195 - 112)
    assert large["iou_mean"] == pytest.approx(inter / union)
    with pytest.raises(ValueError, match="does not exist"):
        main(["--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "q")])


def _boxes_with_every_level():
    """Boxes for P2..P5 by FPN Eq. 1 (sqrt(area) < 112, < 224, < 448, >= 448), one exactly at
    the 112 px boundary (P3, torchvision's eps), one degenerate (zero width: the finest level)."""
    return np.array([[3.3, 4.9, 23.1, 40.2], [10, 10, 122, 122], [40.5, 7.25, 290.5, 300.75],
                     [0, 0, 300, 400], [17, 9, 617, 509], [5, 5, 5, 15]], dtype=np.float64)


def test_fpn_reads_each_box_at_its_levels_stride():
    """Each box's FPN measurement is `measure` of that box alone at 2**level (slow reference:
    one box at a time), with the level the model's pooler assigns."""
    import torch

    from detector.analysis.quantization import measure, measure_fpn
    from detector.models.poolers import assign_levels

    boxes = _boxes_with_every_level()
    image_sizes = np.tile([[800.0, 608.0]], (len(boxes), 1))
    per_box, level = measure_fpn(boxes, image_sizes=image_sizes, output_size=7)
    assert level.tolist() == [2, 3, 4, 4, 5, 2]
    assert level.tolist() == (assign_levels(torch.from_numpy(boxes), (2, 3, 4, 5)).numpy() + 2).tolist()
    for i, (box, k) in enumerate(zip(boxes, level)):
        alone = measure(box[None], 2.0 ** k, 7, image_sizes[i:i + 1])
        for op, rec in alone.items():
            for key, value in rec.items():
                np.testing.assert_array_equal(per_box[op][key][i], value[0], err_msg=f"box {i} {op} {key}")
    # RoIPool at P2 (stride 4) reads the small box far better than one stride-32 map does
    small32 = measure(boxes[:1], 32.0)["roi_pool"]["iou"][0]
    # P2: cells 1..6 x 1..10 -> [4, 28) x [4, 44); IoU = 19.1*35.3 / (19.8*35.3 + 24*40 - 19.1*35.3)
    assert per_box["roi_pool"]["iou"][0] == pytest.approx(0.6847, abs=1e-4) and small32 < 0.2


def test_fpn_rows_per_level_and_for_the_pyramid(tmp_path, capsys):
    from detector.analysis.quantization import FPN_LABEL, measure_fpn, summarize_fpn

    boxes = _boxes_with_every_level()
    sizes = size_category(np.prod(boxes[:, 2:] - boxes[:, :2], axis=1))
    per_box, level = measure_fpn(boxes)
    rows = summarize_fpn(per_box, level, sizes)
    pyramid = [r for r in rows if r["level"] == "all"]
    assert {r["stride"] for r in pyramid} == {FPN_LABEL} and len(pyramid) == 3 * 4
    by_level = {(r["level"], r["stride"]) for r in rows if r["level"] != "all"}
    assert by_level == {("P2", 4), ("P3", 8), ("P4", 16), ("P5", 32)}
    whole = next(r for r in pyramid if (r["op"], r["size"]) == ("roi_pool", "all"))
    parts = [r for r in rows if r["level"] != "all" and (r["op"], r["size"]) == ("roi_pool", "all")]
    assert whole["n"] == sum(r["n"] for r in parts) == len(boxes)
    assert whole["iou_mean"] == pytest.approx(sum(r["n"] * r["iou_mean"] for r in parts) / len(boxes))
    # the CLI: --fpn (or a config's model.detector.fpn) gives a level column; --stride with it is refused
    ann = write_coco(tmp_path / "ann.json")
    doc = main(["--annotations", str(ann), "--fpn", "--out", str(tmp_path / "q"), "--no-plot"])
    assert doc["settings"]["fpn"] is True and "| FPN | all | roi_pool | all | 3 |" in capsys.readouterr().out
    assert "| level |" in (tmp_path / "q" / "quantization.md").read_text()
    with pytest.raises(ValueError, match="--stride has no meaning with --fpn"):
        main(["--annotations", str(ann), "--fpn", "--stride", "16", "--out", str(tmp_path / "q2")])
    config = tmp_path / "fpn.yaml"
    config.write_text(f"model:\n  detector:\n    backbone: resnet18\n    fpn: true\ndata:\n  dataset: coco\n"
                      f"  train_images: {tmp_path}\n  train_annotations: {ann}\n"
                      f"  val_images: {tmp_path}\n  val_annotations: {ann}\n")
    doc = main(["--config", str(config), "--out", str(tmp_path / "q3")])
    assert doc["settings"]["fpn"] is True and {r["level"] for r in doc["rows"]} >= {"all"}
    assert (tmp_path / "q3" / "quantization.png").is_file()
