"""detector.evaluation.draw: COCO result records drawn where they are, above the threshold only."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from detector.evaluation.draw import category_color, draw_detections, drawing_sizes

H, W = 120, 160
NAMES = {1: "circle", 2: "square"}


def _gray():
    return np.full((H, W, 3), 128, dtype=np.uint8)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_boxes_above_the_threshold_are_drawn_on_their_pixels_in_their_class_colour():
    image = _gray()
    kept = {"image_id": 1, "category_id": 2, "bbox": [100, 70, 40, 30], "score": 0.9}  # x 100..140, y 70..100
    low = {"image_id": 1, "category_id": 1, "bbox": [10, 10, 30, 30], "score": 0.2}
    out = draw_detections(image, [kept, low], NAMES, score_threshold=0.5)
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert (image == 128).all()  # the input is not drawn on
    assert tuple(out[85, 100]) == category_color(2)  # left edge of the kept box, below its label
    assert tuple(out[100, 120]) == category_color(2)  # bottom edge (y2 = 100)
    assert (out[88:99, 102:138] == 128).all()  # inside, below the label: untouched (boxes are outlines)
    assert (out[:, :60] == 128).all()  # the low-score box is not drawn
    changed = np.argwhere((out != 128).any(axis=2))
    assert changed[:, 1].min() >= 100 and 70 <= changed[:, 0].min() and changed[:, 0].max() <= 100  # all in the box

    everything = draw_detections(image, [kept, low], NAMES, score_threshold=0.0)
    assert tuple(everything[25, 10]) == category_color(1)


def test_masks_are_blended_inside_the_mask_only():
    mask = np.zeros((H, W), dtype=bool)
    mask[50:80, 50:90] = True
    record = {"image_id": 1, "category_id": 1, "bbox": [45, 35, 50, 50], "score": 0.8, "segmentation": _rle(mask)}
    out = draw_detections(_gray(), [record], NAMES, score_threshold=0.5).astype(int)
    color = np.array(category_color(1))
    inside = out[60:75, 60:80]  # (below the label, which sits in the box's top-left corner)
    assert np.abs(inside - (0.55 * 128 + 0.45 * color)).max() <= 1  # alpha 0.45 towards the class colour
    assert (out[60:75, 46:49] == 128).all()  # between the box edge and the mask: not coloured


def test_nothing_to_draw_returns_a_copy_and_bad_inputs_are_refused():
    image = _gray()
    out = draw_detections(image, [], NAMES)
    assert np.array_equal(out, image) and out is not image
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_detections(image.astype(np.float32), [], NAMES)
    wrong = {"category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9, "segmentation": _rle(np.ones((10, 10), bool))}
    with pytest.raises(ValueError, match="does not fit the image"):
        draw_detections(image, [wrong], NAMES)


def test_labels_and_lines_grow_with_the_image():
    assert drawing_sizes(64, 96) == (1, 10)
    line, font = drawing_sizes(3000, 4000)
    assert font >= 50 and line >= 8
