"""EXIF orientation: one rule (the displayed frame) for the loader, the checker and the sizes.

The pictures are stored the way a phone stores a portrait photo: raw pixels turned sideways
plus an EXIF tag saying how to turn them upright. Boxes are annotated on the upright picture,
as annotation tools show it.
"""

from __future__ import annotations

import numpy as np
import pytest
from data_helpers import DISPLAYED_FROM_RAW, save_with_orientation

from detector.data.check import check_coco
from detector.data.coco import CocoDetection
from detector.data.images import load_rgb, read_header

W, H = 40, 30  # the displayed (upright) picture
BOX = [5, 4, 12, 9]  # x, y, w, h of the white object in the displayed picture


def upright_picture() -> np.ndarray:
    """Dark noise with one white object at BOX: asymmetric, so any wrong turn moves the object."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    x, y, w, h = BOX
    img[y:y + h, x:x + w] = 255
    return img


def dataset(tmp_path, orientation: int, json_size: tuple[int, int], suffix: str = "jpg"):
    """One image stored with ``orientation``; the JSON says ``json_size`` and annotates BOX."""
    import json

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    save_with_orientation(images_dir / f"photo.{suffix}", upright_picture(), orientation,
                          **({"quality": 95} if suffix == "jpg" else {}))
    data = {"images": [{"id": 7, "file_name": f"photo.{suffix}", "width": json_size[0], "height": json_size[1]}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": BOX, "area": 108, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "object"}]}
    ann_file = tmp_path / "instances.json"
    ann_file.write_text(json.dumps(data))
    return images_dir, ann_file


@pytest.mark.parametrize("orientation", range(1, 9))
def test_load_rgb_returns_the_upright_picture(tmp_path, orientation):
    path = tmp_path / "x.png"  # lossless, so pixels compare exactly
    raw = save_with_orientation(path, upright_picture(), orientation)
    np.testing.assert_array_equal(load_rgb(path), upright_picture())
    np.testing.assert_array_equal(DISPLAYED_FROM_RAW[orientation](raw), upright_picture())  # the helper itself
    header = read_header(path)
    assert header.orientation == orientation and header.size == (W, H)
    assert header.raw_size == (raw.shape[1], raw.shape[0])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_boxes_land_on_the_object_of_an_exif_rotated_jpeg(tmp_path, orientation):
    """Rotation 180 used to train on the raw pixels (the box over background); 90/270 were refused."""
    images_dir, ann_file = dataset(tmp_path, orientation, json_size=(W, H))
    report = check_coco(images_dir, ann_file)
    assert report.ok, report.format()
    assert [i.kind for i in report.warnings] == ["exif-orientation"]
    assert f"EXIF orientation {orientation}" in report.warnings[0].message
    with pytest.warns(UserWarning, match="EXIF orientation"):
        ds = CocoDetection(images_dir, ann_file)
    image, target = ds[0]
    assert image.shape == (3, H, W) and target["orig_size"] == (H, W)
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0].tolist())
    assert (x1, y1, x2, y2) == (5, 4, 17, 13)
    inside = image[:, y1 + 1:y2 - 1, x1 + 1:x2 - 1]  # away from JPEG ringing at the edge
    assert inside.min() > 0.85, "the box does not sit on the object"
    outside = image.clone()
    outside[:, y1 - 2:y2 + 2, x1 - 2:x2 + 2] = 0
    assert outside.max() < 0.5


@pytest.mark.parametrize("orientation", [6, 8])
def test_raw_size_in_the_json_of_a_rotated_image_names_exif(tmp_path, orientation):
    images_dir, ann_file = dataset(tmp_path, orientation, json_size=(H, W))  # the raw grid is H wide
    report = check_coco(images_dir, ann_file)
    (issue,) = report.errors
    assert issue.kind == "exif-size-mismatch" and "image id 7" in issue.where
    assert f"EXIF orientation {orientation}" in issue.message
    assert f"raw {H}x{W}, displayed {W}x{H}" in issue.message and "photo.jpg" in issue.message
    text = report.format()
    assert "swap the image's 'width' and 'height'" in text and "exiftool -Orientation=" in text


def test_other_size_mismatch_of_a_rotated_image_mentions_exif(tmp_path):
    images_dir, ann_file = dataset(tmp_path, 6, json_size=(W + 1, H))
    (issue,) = check_coco(images_dir, ann_file).errors
    assert issue.kind == "size-mismatch" and f"EXIF orientation 6: raw {H}x{W}, displayed {W}x{H}" in issue.message


def test_full_check_reads_the_same_frame(tmp_path):
    images_dir, ann_file = dataset(tmp_path, 6, json_size=(W, H), suffix="png")
    assert check_coco(images_dir, ann_file, decode=True).ok
