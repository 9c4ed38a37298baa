"""Side-by-side tables, metrics.json content, label naming, and the DDP merge (each image once)."""

import json
import math

from detector.evaluation.coco_eval import STAT_NAMES, CocoEvalResult
from detector.evaluation.distributed import flatten, gather_per_image, merge_per_image
from detector.evaluation.report import format_table, metrics_document, unique_labels
from detector.io import write_json


def _result(ap, per_class=None):
    stats = {name: ap for name in STAT_NAMES}
    stats["APs"] = math.nan
    return {"bbox": CocoEvalResult("bbox", stats, per_class or {"circle": ap, "star": ap / 2})}


def test_table_has_deltas_against_the_first_column():
    table = format_table(["a", "b"], [_result(0.5), _result(0.4)])
    ap_row = next(line for line in table.splitlines() if line.startswith("bbox AP "))
    assert "0.5000" in ap_row and "0.4000 (-0.1000)" in ap_row
    aps_row = next(line for line in table.splitlines() if line.startswith("bbox APs"))
    assert aps_row.split()[-1] == "-"  # undefined, not -1
    assert "bbox AP[star]" in table and "bbox AR100" in table
    assert "AP[" not in format_table(["a"], [_result(0.5)], per_class=False)


def test_metrics_document_is_strict_json(tmp_path):
    doc = metrics_document(_result(0.25), checkpoint="x.ckpt", num_images=3)
    assert doc["bbox"]["AP"] == 0.25 and doc["bbox"]["APs"] is None
    assert doc["bbox_per_class"] == {"circle": 0.25, "star": 0.125}
    path = tmp_path / "sub" / "metrics.json"
    write_json(path, doc)
    assert json.loads(path.read_text()) == doc
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]  # no temp file left behind


def test_unique_labels():
    assert unique_labels(["a/last.ckpt", "b/best.ckpt"]) == ["last", "best"]
    assert unique_labels(["r/x/c/last.ckpt", "r/y/c/last.ckpt"]) == ["x_c_last", "y_c_last"]


def test_merge_keeps_each_image_once_whatever_the_sharding():
    def det(i):
        return [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5}]

    # DistributedSampler pads rank 1's shard with image 1 again.
    rank0 = {1: det(1), 3: det(3)}
    rank1 = {2: det(2), 1: det(1)}
    merged = merge_per_image([rank0, rank1])
    assert list(merged) == [1, 2, 3]
    assert len(flatten(merged)) == 3
    assert merge_per_image([{1: det(1), 2: det(2), 3: det(3)}]) == merged
    assert gather_per_image(rank0) == merge_per_image([rank0])  # no process group: local only


def test_report_docstring_examples():
    import doctest

    from detector.evaluation import report

    result = doctest.testmod(report, verbose=False)
    assert result.attempted > 0 and result.failed == 0
