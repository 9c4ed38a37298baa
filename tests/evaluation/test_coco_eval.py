"""detector.evaluation.coco_eval against hand-made COCO files whose AP is known."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from detector.evaluation.coco_eval import STAT_NAMES, evaluate_coco, load_coco, to_coco_results

# Category ids deliberately not 1..K: label i must map to category_ids[i - 1].
CATEGORY_IDS = [3, 7]


def _write_gt(tmp_path, with_masks=False):
    images, anns = [], []
    boxes = {11: [(10, 10, 50, 40, 3)], 42: [(5, 5, 30, 30, 7), (60, 20, 90, 70, 3)]}
    for image_id, objs in boxes.items():
        images.append({"id": image_id, "width": 100, "height": 80, "file_name": f"{image_id}.png"})
        for x1, y1, x2, y2, cat in objs:
            ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat, "iscrowd": 0,
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": float((x2 - x1) * (y2 - y1))}
            if with_masks:
                m = np.zeros((80, 100), dtype=np.uint8, order="F")
                m[y1:y2, x1:x2] = 1
                rle = mask_utils.encode(m)
                ann["segmentation"] = {"size": rle["size"], "counts": rle["counts"].decode()}
            anns.append(ann)
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": 3, "name": "circle"}, {"id": 7, "name": "star"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(doc))
    return str(path), boxes


def _perfect_outputs(boxes, with_masks=False):
    outputs = {}
    for image_id, objs in boxes.items():
        out = {
            "boxes": torch.tensor([o[:4] for o in objs], dtype=torch.float32),
            "labels": torch.tensor([CATEGORY_IDS.index(o[4]) + 1 for o in objs]),
            "scores": torch.linspace(0.9, 0.8, len(objs)),
        }
        if with_masks:
            masks = torch.zeros(len(objs), 1, 80, 100)
            for k, (x1, y1, x2, y2, _) in enumerate(objs):
                masks[k, 0, y1:y2, x1:x2] = 0.9
            out["masks"] = masks
        outputs[image_id] = out
    return outputs


def test_perfect_detections_score_one_and_map_original_ids(tmp_path):
    gt, boxes = _write_gt(tmp_path)
    results = []
    for image_id, out in _perfect_outputs(boxes).items():
        results += to_coco_results(image_id, out, CATEGORY_IDS)
    assert {r["category_id"] for r in results} == {3, 7}
    assert results[0]["bbox"] == [10.0, 10.0, 40.0, 30.0]  # xywh
    before = json.dumps(results)
    metrics = evaluate_coco(gt, results)
    assert json.dumps(results) == before, "evaluate_coco must not modify the results"
    stats = metrics["bbox"].stats
    assert list(stats) == list(STAT_NAMES)
    assert stats["AP"] == pytest.approx(1.0) and stats["AP50"] == pytest.approx(1.0)
    assert metrics["bbox"].per_class == {"circle": pytest.approx(1.0), "star": pytest.approx(1.0)}
    assert "Average Precision" in metrics["bbox"].summary


def test_wrong_category_mapping_costs_ap(tmp_path):
    gt, boxes = _write_gt(tmp_path)
    results = []
    for image_id, out in _perfect_outputs(boxes).items():
        results += to_coco_results(image_id, out, list(reversed(CATEGORY_IDS)))  # swapped table
    assert evaluate_coco(gt, results)["bbox"].stats["AP"] < 0.5


def test_image_subset_and_missing_images(tmp_path):
    gt, boxes = _write_gt(tmp_path)
    outs = _perfect_outputs(boxes)
    only_11 = to_coco_results(11, outs[11], CATEGORY_IDS)
    # Restricted to image 11, its perfect detections give AP 1 (star has no GT there: nan).
    sub = evaluate_coco(gt, only_11, image_ids=[11])["bbox"]
    assert sub.stats["AP"] == pytest.approx(1.0)
    assert math.isnan(sub.per_class["star"])
    # Over all images, image 42 has no detections: its objects are misses.
    assert evaluate_coco(gt, only_11)["bbox"].stats["AP"] < 1.0


def test_no_detections_give_zero_not_a_crash(tmp_path):
    gt, _ = _write_gt(tmp_path)
    res = evaluate_coco(gt, [], image_ids=[11, 42])["bbox"]
    assert res.stats["AP"] == 0.0 and res.per_class == {"circle": 0.0, "star": 0.0}


def test_no_detections_leave_undefined_numbers_undefined(tmp_path):
    """Zero detections must give what one stray detection gives: nan where there is no ground
    truth (no large object anywhere; no star on image 11), 0 where there is (it gave 0.0 for all)."""
    gt, _ = _write_gt(tmp_path)
    res = evaluate_coco(gt, [], image_ids=[11])["bbox"]
    assert res.stats["AP"] == 0.0 and res.stats["APm"] == 0.0
    assert math.isnan(res.stats["APl"]) and math.isnan(res.stats["ARl"]) and math.isnan(res.stats["APs"])
    assert res.per_class["circle"] == 0.0 and math.isnan(res.per_class["star"])
    stray = evaluate_coco(gt, [{"image_id": 11, "category_id": 3, "bbox": [0, 0, 2, 2], "score": 0.1}], image_ids=[11])["bbox"]
    assert {k for k, v in stray.stats.items() if math.isnan(v)} == {k for k, v in res.stats.items() if math.isnan(v)}
    assert "Average Precision" in res.summary
    none = evaluate_coco(gt, [], image_ids=[])["bbox"]
    assert all(math.isnan(v) for v in none.stats.values()) and set(none.per_class) == {"circle", "star"}


def test_categories_sharing_a_name_keep_their_own_ap(tmp_path):
    gt, boxes = _write_gt(tmp_path)
    doc = json.loads(Path(gt).read_text())
    doc["categories"] = [{"id": 3, "name": "car"}, {"id": 7, "name": "car"}]
    Path(gt).write_text(json.dumps(doc))
    only_circles = [r for r in to_coco_results(42, _perfect_outputs(boxes)[42], CATEGORY_IDS) if r["category_id"] == 3]
    res = evaluate_coco(gt, only_circles, image_ids=[42])["bbox"]
    assert res.per_class == {"car (id 3)": pytest.approx(1.0), "car (id 7)": 0.0}


def test_bad_labels_and_unknown_images_are_named(tmp_path):
    gt, boxes = _write_gt(tmp_path)
    out = _perfect_outputs(boxes)[11]
    out["labels"] = torch.tensor([5])
    with pytest.raises(ValueError, match=r"label\(s\) \[5\]"):
        to_coco_results(11, out, CATEGORY_IDS)
    with pytest.raises(ValueError, match="not in the annotation file"):
        evaluate_coco(gt, [], image_ids=[999])
    with pytest.raises(ValueError, match="iou_type"):
        evaluate_coco(gt, [], iou_types=("keypoints",))


def test_masks_become_rle_and_score_segm(tmp_path):
    gt, boxes = _write_gt(tmp_path, with_masks=True)
    results = []
    for image_id, out in _perfect_outputs(boxes, with_masks=True).items():
        results += to_coco_results(image_id, out, CATEGORY_IDS, masks=True)
    assert isinstance(results[0]["segmentation"]["counts"], str)
    json.dumps(results)  # JSON-serializable
    metrics = evaluate_coco(load_coco(gt), results, iou_types=("bbox", "segm"))
    assert metrics["segm"].stats["AP"] == pytest.approx(1.0)
    assert metrics["bbox"].stats["AP"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no 'segmentation'"):
        evaluate_coco(gt, [{k: v for k, v in r.items() if k != "segmentation"} for r in results], iou_types=("segm",))
