"""detector.evaluation.coco_eval against hand-made COCO files whose AP is known."""

import json
import math

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
