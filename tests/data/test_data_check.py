"""One test per bad-input rule: the report names the file and the id, and gives the fix."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from data_helpers import messy_coco, write_coco

from detector.data.check import KINDS, DatasetError, check_coco, main
from detector.data.coco import CocoDetection


def check(tmp_path, mutate=None, images_mutate=None, **kw):
    data, images = messy_coco()
    if mutate:
        mutate(data)
    if images_mutate:
        images_mutate(images)
    images_dir, ann_file = write_coco(tmp_path, data, images)
    return check_coco(images_dir, ann_file, **kw), images_dir, ann_file


def only(report, kind):
    found = [i for i in report.errors if i.kind == kind]
    assert found, report.format()
    assert {i.kind for i in report.errors} == {kind}, report.format()  # nothing else got flagged
    return found


def test_clean_dataset_has_no_errors_but_warns_about_clipping(tmp_path):
    report, _, _ = check(tmp_path)
    assert report.ok, report.format()
    assert {i.kind for i in report.warnings} == {"box-outside-image", "tiny-box"}
    assert report.num_images == 3 and report.num_empty_images == 1
    assert "annotation id 4" in report.format() and "annotation id 5" in report.format()


def test_malformed_json_reports_line_and_column(tmp_path):
    (tmp_path / "bad.json").write_text('{\n  "images": [],\n  "annotations": [,]\n}')
    report = check_coco(tmp_path, tmp_path / "bad.json")
    (issue,) = report.errors
    assert issue.kind == "malformed-json" and "bad.json" in issue.where
    assert "line 3, column 19" in issue.message
    with pytest.raises(DatasetError, match=r"bad\.json: line 3, column 19"):
        CocoDetection(tmp_path, tmp_path / "bad.json")


def test_missing_annotation_file(tmp_path):
    report = check_coco(tmp_path, tmp_path / "nope.json")
    assert [i.kind for i in report.errors] == ["annotation-file"] and "nope.json" in report.format()


def test_missing_coco_keys(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"images": [], "annotations": []}))
    (issue,) = check_coco(tmp_path, tmp_path / "x.json").errors
    assert issue.kind == "structure" and "'categories'" in issue.message and "x.json" in issue.where


def test_missing_image_file(tmp_path):
    report, _, _ = check(tmp_path, images_mutate=lambda im: im.pop("c.png"))
    (issue,) = only(report, "missing-image")
    assert "instances.json: image id 30" in issue.where and "c.png" in issue.message


def test_unreadable_image_file(tmp_path):
    report, images_dir, _ = check(tmp_path)
    (images_dir / "c.png").write_bytes(b"this is not a png")
    report = check_coco(images_dir, images_dir.parent / "instances.json")
    (issue,) = only(report, "unreadable-image")
    assert "image id 30" in issue.where and "c.png" in issue.message


def test_stored_size_disagrees_with_file(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["images"][2].update(width=25))
    (issue,) = only(report, "size-mismatch")
    assert "image id 30" in issue.where and "width=25" in issue.message and "24x24" in issue.message


def test_annotation_with_unknown_image(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][5].update(image_id=99))
    (issue,) = only(report, "unknown-image")
    assert "annotation id 6" in issue.where and "99" in issue.message


def test_annotation_with_unknown_category(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][0].update(category_id=8))
    (issue,) = only(report, "unknown-category")
    assert "instances.json: annotation id 1" in issue.where and "8" in issue.message


def test_negative_box_coordinate(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][5].update(bbox=[-3, 1, 5, 6]))
    (issue,) = only(report, "bad-box")
    assert "annotation id 6" in issue.where and "-3" in issue.message
    assert "--data.check false" in report.format()  # the fix names the way to train anyway


def test_nan_box_coordinate(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][5].update(bbox=[1, math.nan, 5, 6]))
    (issue,) = only(report, "bad-box")
    assert "annotation id 6" in issue.where and "nan" in issue.message


def test_negative_polygon_coordinate(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][0].update(segmentation=[[2, 3, -12, 3, 12, 11]]),
                         masks=True)
    (issue,) = only(report, "bad-polygon")
    assert "annotation id 1" in issue.where and "polygon" in issue.message


@pytest.mark.parametrize("key,index,where", [("images", 1, "image id 10"), ("annotations", 1, "annotation id 1"),
                                             ("categories", 1, "category id 42")])
def test_duplicate_ids(tmp_path, key, index, where):
    def dup(d):
        d[key][index]["id"] = d[key][0]["id"]
    report, _, _ = check(tmp_path, mutate=dup)
    issues = [i for i in report.errors if i.kind == "duplicate-id"]
    assert len(issues) == 1 and where in issues[0].where, report.format()


@pytest.mark.parametrize("file_name", ["../outside.png", "sub/../../outside.png", "/etc/passwd"])
def test_file_name_outside_the_image_folder_is_refused(tmp_path, file_name):
    data, images = messy_coco()
    data["images"][2]["file_name"] = file_name
    images_dir, ann_file = write_coco(tmp_path / "ds", data, images)
    (tmp_path / "ds" / "outside.png").write_bytes((images_dir / "c.png").read_bytes())  # exists, still refused
    report = check_coco(images_dir, ann_file)
    (issue,) = only(report, "unsafe-path")
    assert "image id 30" in issue.where and file_name in issue.message
    with pytest.raises(DatasetError, match="image id 30"):
        CocoDetection(images_dir, ann_file)


def test_report_lists_every_error_with_its_fix_and_caps_long_lists(tmp_path):
    def many(d):
        for a in d["annotations"]:
            a["category_id"] = 1000
    report, _, _ = check(tmp_path, mutate=many)
    text = report.format(max_per_kind=2)
    assert "6 error(s)" in text and "... and 4 more" in text
    assert KINDS["unknown-category"][2] in text  # the fix is spelled out
    assert "Traceback" not in text


def test_dataset_refuses_to_load_with_errors_and_names_the_file(tmp_path):
    _, images_dir, ann_file = check(tmp_path, mutate=lambda d: d["annotations"][0].update(image_id=5))
    with pytest.raises(DatasetError) as err:
        CocoDetection(images_dir, ann_file)
    assert "instances.json: annotation id 1" in str(err.value) and "fix:" in str(err.value)
    assert isinstance(err.value, ValueError)


def test_cli_exit_codes(tmp_path, capsys):
    _, images_dir, ann_file = check(tmp_path)
    assert main(["--images", str(images_dir), "--annotations", str(ann_file)]) == 0
    assert "0 error(s), 3 warning(s)" in capsys.readouterr().out
    data = json.loads(ann_file.read_text())
    data["images"][0]["file_name"] = "missing.png"
    ann_file.write_text(json.dumps(data))
    assert main(["--images", str(images_dir), "--annotations", str(ann_file)]) == 1
    out = capsys.readouterr().out
    assert "image id 10" in out and "missing.png" in out


def test_cli_as_a_module_prints_no_traceback(tmp_path):
    (tmp_path / "bad.json").write_text("{")
    proc = subprocess.run([sys.executable, "-m", "detector.data.check", "--images", str(tmp_path),
                           "--annotations", str(tmp_path / "bad.json")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.json" in proc.stdout and "line 1, column 2" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr


def test_ids_must_be_integers(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][0].update(image_id="10"))
    (issue,) = only(report, "structure")
    assert "annotation id 1" in issue.where and "'image_id'" in issue.message


# ---------------------------------------------------------------- truncated files (issue 12, item 6)
def truncated_jpeg_dataset(tmp_path):
    """messy_coco with image 30 stored as a JPEG cut to 80% of its bytes: the header reads, the pixels do not."""
    from data_helpers import truncate

    def to_jpeg(d):
        d["images"][2]["file_name"] = "c.jpg"

    def jpeg(images):
        images["c.jpg"] = images.pop("c.png")

    _, images_dir, ann_file = check(tmp_path, mutate=to_jpeg, images_mutate=jpeg)
    truncate(images_dir / "c.jpg")
    return images_dir, ann_file


def test_truncated_image_passes_headers_but_not_the_full_check(tmp_path):
    images_dir, ann_file = truncated_jpeg_dataset(tmp_path)
    assert check_coco(images_dir, ann_file).ok  # headers only: documented, and fast
    report = check_coco(images_dir, ann_file, decode=True)
    (issue,) = only(report, "unreadable-image")
    assert "image id 30" in issue.where and "c.jpg" in issue.message and "decoding failed" in issue.message
    assert issue.image_id == 30
    assert "--data.skip_bad_images true" in report.format()


def test_cli_full_decodes(tmp_path, capsys):
    images_dir, ann_file = truncated_jpeg_dataset(tmp_path)
    args = ["--images", str(images_dir), "--annotations", str(ann_file)]
    assert main(args) == 0
    assert "--full decodes every image" in capsys.readouterr().out
    assert main(args + ["--full"]) == 1
    out = capsys.readouterr().out
    assert "image id 30" in out and "c.jpg" in out and "Decoded every image" in out


# ------------------------------------------------------------------ too strict (issue 12, item 11)
def test_sub_pixel_negative_box_is_clipped_with_a_warning(tmp_path):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][5].update(bbox=[-0.5, -1, 5, 6]))
    assert report.ok, report.format()
    (issue,) = [i for i in report.warnings if "annotation id 6" in i.where]
    assert issue.kind == "box-outside-image" and "left/top border" in issue.message


@pytest.mark.parametrize("bbox", [[-1.5, 1, 5, 6], [1, -2, 5, 6], [1, 1, -5, 6]])
def test_boxes_further_out_or_of_negative_size_are_refused_naming_check_false(tmp_path, bbox):
    report, _, _ = check(tmp_path, mutate=lambda d: d["annotations"][5].update(bbox=bbox))
    (issue,) = only(report, "bad-box")
    assert "annotation id 6" in issue.where
    assert "`--data.check false`" in report.format()


def test_segmentations_are_ignored_without_masks(tmp_path):
    def degenerate(d):
        d["annotations"][0]["segmentation"] = [[2, 3, 12, 3]]  # a 4-value "polygon" (a line)
        d["annotations"][1]["segmentation"] = {"size": [1, 1], "counts": "x"}  # an RLE of the wrong size
    report, _, _ = check(tmp_path, mutate=degenerate)
    assert report.ok, report.format()
    report, _, _ = check(tmp_path / "masks", mutate=degenerate, masks=True)
    assert {i.kind for i in report.errors} == {"bad-polygon", "bad-segmentation"}
    assert "4 values" in report.format() and "`--data.masks false`" in report.format()


def test_cli_checks_segmentations_with_masks_only(tmp_path, capsys):
    _, images_dir, ann_file = check(tmp_path, mutate=lambda d: d["annotations"][0].update(segmentation=[[2, 3, 12, 3]]))
    args = ["--images", str(images_dir), "--annotations", str(ann_file)]
    assert main(args) == 0 and "Segmentations not checked" in capsys.readouterr().out
    assert main(args + ["--masks"]) == 1 and "annotation id 1" in capsys.readouterr().out
