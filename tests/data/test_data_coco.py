"""CocoDetection: what it yields equals pycocotools' own view, after the documented rules."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from data_helpers import messy_coco, move_png_exif_after_pixels, png_rgb16, save_with_orientation, write_coco
from PIL import Image
from pycocotools.coco import COCO

from detector.data.check import DatasetError
from detector.data.coco import CocoDetection

# pycocotools 2.0.x under numpy 2 warns inside annToMask; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def load(images_dir, ann_file, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = CocoDetection(images_dir, ann_file, **kw)
    return ds, [str(w.message) for w in caught]


def test_round_trip_matches_pycocotools(messy):
    images_dir, ann_file = messy
    ds, _ = load(images_dir, ann_file, masks=True)
    coco = COCO(str(ann_file))
    assert ds.ids == sorted(coco.getImgIds())
    for index, img_id in enumerate(ds.ids):
        image, target = ds[index]
        info = coco.imgs[img_id]
        assert target["image_id"] == img_id
        assert image.shape == (3, info["height"], info["width"]) and image.dtype == torch.float32
        anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["id"] != 5]  # 5: < 1 px
        expected = torch.tensor([[x, y, min(x + w, info["width"]), min(y + h, info["height"])]
                                 for x, y, w, h in (a["bbox"] for a in anns)], dtype=torch.float32).reshape(-1, 4)
        torch.testing.assert_close(target["boxes"], expected)
        assert ds.label_to_category_id(target["labels"]) == [a["category_id"] for a in anns]
        assert target["masks"].shape == (len(anns), info["height"], info["width"])
        for mask, ann in zip(target["masks"], anns):
            assert torch.equal(mask, torch.from_numpy(coco.annToMask(ann)))


def test_category_ids_map_to_contiguous_labels_and_back(messy):
    ds, _ = load(*messy)
    assert ds.category_ids == [7, 42] and ds.category_names == ["nut", "bolt"] and ds.num_classes == 3
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 2, 2]  # ann 1 (cat 7), ann 2 (cat 42), ann 4 (cat 42)
    assert 0 not in target["labels"]
    assert ds.label_to_category_id(target["labels"]) == [7, 42, 42]


def test_crowd_regions_are_not_training_targets(messy):
    ds, _ = load(*messy)
    _, target = ds[0]
    assert [0.0, 20.0, 10.0, 25.0] not in target["boxes"].tolist()  # ann 3 is iscrowd


def test_boxes_are_clipped_and_sub_pixel_boxes_dropped_with_one_warning(messy):
    ds, messages = load(*messy)
    _, target = ds[0]
    assert target["boxes"][2].tolist() == [35.0, 20.0, 40.0, 26.0]  # clipped at the right border
    assert len(target["boxes"]) == 3  # ann 5 (0.5 px wide after clipping) dropped
    dropped = [m for m in messages if "dropped" in m]
    assert len(dropped) == 1 and "dropped 1 box" in dropped[0] and "annotation ids 5" in dropped[0]
    assert "instances.json" in dropped[0]
    assert ds.num_dropped_boxes == 1


def test_images_without_annotations_are_kept_unless_dropped(messy):
    ds, _ = load(*messy)
    assert ds.ids == [10, 20, 30]
    image, target = ds[1]
    assert image.shape == (3, 16, 20) and target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    ds, _ = load(*messy, drop_empty=True)
    assert ds.ids == [10, 30]


def test_empty_image_has_empty_masks(messy):
    ds, _ = load(*messy, masks=True)
    _, target = ds[1]
    assert target["masks"].shape == (0, 16, 20) and target["masks"].dtype == torch.uint8


def test_nan_boxes_are_dropped_when_the_check_is_off(tmp_path):
    data, images = messy_coco()
    data["annotations"][5]["bbox"] = [float("nan"), 1, 5, 6]
    ds, messages = load(*write_coco(tmp_path, data, images), check=False)
    assert ds[2][1]["boxes"].shape == (0, 4)
    assert any("dropped 2 box" in m for m in messages)


@pytest.mark.parametrize("mode", ["L", "1", "P", "RGBA", "LA", "I;16", "I", "F", "CMYK"])
def test_any_image_mode_becomes_rgb(tmp_path, mode):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    if mode == "I;16":
        gray16 = (rgb[:, :, 0].astype(np.uint16) * 257)  # full 16-bit range
        img = Image.fromarray(gray16)
        assert img.mode == "I;16"
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    elif mode in ("I", "F"):
        img = Image.fromarray(rgb[:, :, 0].astype(np.int32 if mode == "I" else np.float32))
        expected = np.repeat(rgb[:, :, :1], 3, axis=2)
    else:
        img = Image.fromarray(rgb).convert(mode)
        expected = np.asarray(img.convert("RGB")) if mode not in ("RGBA",) else rgb
    data, images = messy_coco()
    suffix = "tiff" if mode in ("I", "F", "CMYK") else "png"
    data["images"][0]["file_name"] = f"a.{suffix}"
    images[f"a.{suffix}"] = img
    ds, _ = load(*write_coco(tmp_path, data, images))
    image, _ = ds[0]
    assert image.shape == (3, 30, 40) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_allclose((image * 255).round().permute(1, 2, 0).numpy(), expected, atol=1)


def test_bad_image_at_load_time_names_the_file(tmp_path):
    data, images = messy_coco()
    images_dir, ann_file = write_coco(tmp_path, data, images)
    ds, _ = load(images_dir, ann_file)
    (images_dir / "c.png").write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"image id 30.*c\.png"):
        ds[2]


# ---------------------------------------------------------------- decoded size vs the JSON's width/height
@pytest.mark.parametrize("kw", [{}, {"check": False}])
def test_image_whose_size_differs_from_the_json_names_file_sizes_and_fix(tmp_path, kw):
    """The JSON says c.png is 24x24; the file on disk is 30x20 (replaced after the build, or never checked)."""
    data, images = messy_coco()
    images_dir, ann_file = write_coco(tmp_path, data, images)
    if kw:  # unchecked: the wrong file is there from the start
        Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(images_dir / "c.png")
    ds, _ = load(images_dir, ann_file, **kw)
    if not kw:  # checked at build, then the file is replaced (a sync, a re-export) before it is read
        Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(images_dir / "c.png")
    assert ds[0][0].shape == (3, 30, 40) and ds[1][0].shape == (3, 16, 20)  # the others still load
    with pytest.raises(DatasetError) as caught:
        ds[2]
    text = str(caught.value)
    assert "instances.json: image id 30" in text and str(images_dir / "c.png") in text
    assert "width=24, height=24" in text and "decodes to 30x20" in text
    assert "set the image's 'width' and 'height' in the JSON" in text and "put back the image" in text


def test_exif_turn_that_only_decoding_finds_is_caught_when_read(tmp_path):
    """A PNG whose eXIf chunk follows its pixels: the header check sees the raw size, which the JSON
    states, and passes; decoding turns the image upright, so the boxes' frame no longer fits."""
    data, images = messy_coco()
    images_dir, ann_file = write_coco(tmp_path, data, images)
    upright = np.zeros((30, 40, 3), dtype=np.uint8)  # image 10 is 40x30 as displayed...
    save_with_orientation(images_dir / "a.png", upright, 6)  # ...stored 30 wide, 40 high, orientation 6
    move_png_exif_after_pixels(images_dir / "a.png")
    data["images"][0].update(width=30, height=40)  # the raw grid, as EXIF-unaware tools report it
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 10]
    ann_file.write_text(json.dumps(data))
    ds, _ = load(images_dir, ann_file, full_check=False)  # headers only, as over 2000 images
    with pytest.raises(DatasetError, match=r"image id 10: the JSON says width=30, height=40 but .*a\.png decodes "
                                           r"to 40x30 \(EXIF orientation 6: raw pixels 30x40.*swap the image's"):
        ds[0]


def test_transforms_receive_tv_tensors_and_outputs_are_plain_tensors(messy):
    seen = {}

    def spy(image, target):
        seen["types"] = (type(image).__name__, type(target["boxes"]).__name__, target["boxes"].canvas_size)
        return image, target

    ds, _ = load(*messy, transforms=spy)
    image, target = ds[0]
    assert seen["types"] == ("Image", "BoundingBoxes", (30, 40))
    assert type(image) is torch.Tensor and type(target["boxes"]) is torch.Tensor


def test_masks_requested_but_missing_names_the_annotations(messy):
    data, images = messy_coco()
    del data["annotations"][5]["segmentation"]
    images_dir, ann_file = write_coco(messy[0].parent / "nomask", data, images)
    with pytest.raises(ValueError, match=r"instances\.json: masks=True but 1 annotation.*ids 6.*masks=False"):
        load(images_dir, ann_file, masks=True)
    ds, _ = load(images_dir, ann_file)  # boxes only: fine
    assert len(ds) == 3


def test_16_bit_rgb_png_becomes_8_bit_rgb(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    data, images = messy_coco()
    images_dir, ann_file = write_coco(tmp_path, data, images)
    png_rgb16(images_dir / "a.png", rgb.astype(np.uint16) * 257)
    assert Image.open(images_dir / "a.png").size == (40, 30)
    ds, _ = load(images_dir, ann_file)
    image, _ = ds[0]
    np.testing.assert_allclose((image * 255).round().permute(1, 2, 0).numpy(), rgb, atol=1)


# ---------------------------------------------------------------- truncated files (issue 12, item 6)
def truncated(tmp_path):
    """messy_coco with image 30 as a JPEG cut to 80% of its bytes (the header still reads)."""
    from data_helpers import truncate

    data, images = messy_coco()
    data["images"][2]["file_name"] = "c.jpg"
    images["c.jpg"] = images.pop("c.png")
    images_dir, ann_file = write_coco(tmp_path, data, images)
    truncate(images_dir / "c.jpg")
    return images_dir, ann_file


def test_truncated_image_stops_a_small_dataset_when_built(tmp_path):
    with pytest.raises(ValueError, match=r"(?s)image id 30.*c\.jpg.*decoding failed.*skip_bad_images"):
        load(*truncated(tmp_path))


def test_truncated_image_found_late_names_file_id_and_flag(tmp_path):
    ds, _ = load(*truncated(tmp_path), full_check=False)  # what a dataset over 2000 images does
    ds[0]
    with pytest.raises(ValueError, match=r"image id 30: cannot decode .*c\.jpg.*--full.*--data\.skip_bad_images true"):
        ds[2]


@pytest.mark.parametrize("kw", [{}, {"full_check": False}, {"check": False}])
def test_skip_bad_images_leaves_them_out_with_one_warning(tmp_path, kw):
    images_dir, ann_file = truncated(tmp_path)
    (images_dir / "sub" / "b.png").unlink()  # a missing file is skipped too
    ds, messages = load(images_dir, ann_file, skip_bad_images=True, **kw)
    assert ds.ids == [10] and sorted(ds.skipped_image_ids) == [20, 30]
    (warning,) = [m for m in messages if "left out" in m]
    assert "left out 2 image(s)" in warning and "image id 30" in warning and "c.jpg" in warning
    assert "image id 20" in warning
    ds[0]


# ------------------------------------------------------------------ too strict (issue 12, item 11)
def test_sub_pixel_negative_boxes_are_clipped_with_one_aggregated_warning(tmp_path):
    data, images = messy_coco()
    for k in range(5):
        data["annotations"].append({"id": 100 + k, "image_id": 30, "category_id": 7, "bbox": [-0.5, 2 + k, 6, 4],
                                    "area": 24, "iscrowd": 0})
    ds, messages = load(*write_coco(tmp_path, data, images))
    _, target = ds[2]
    assert target["boxes"][1:].tolist() == [[0.0, 2.0 + k, 5.5, 6.0 + k] for k in range(5)]
    (warning,) = [m for m in messages if "past the image border" in m]
    assert "(7)" in warning and "... and 4 more" in warning  # 5 left + 2 right of messy, 3 listed


def test_degenerate_polygons_do_not_matter_without_masks(tmp_path):
    data, images = messy_coco()
    data["annotations"][0]["segmentation"] = [[2, 3, 12, 3]]
    images_dir, ann_file = write_coco(tmp_path, data, images)
    ds, _ = load(images_dir, ann_file)
    assert len(ds[0][1]["boxes"]) == 3
    with pytest.raises(ValueError, match=r"(?s)annotation id 1.*4 values.*--data\.masks false"):
        load(images_dir, ann_file, masks=True)


def test_datasets_over_the_limit_are_checked_from_headers(tmp_path, monkeypatch):
    import detector.data.coco as coco_module

    images_dir, ann_file = truncated(tmp_path)
    monkeypatch.setattr(coco_module, "FULL_CHECK_MAX_IMAGES", 2)  # 3 images: over the limit
    ds, _ = load(images_dir, ann_file)
    with pytest.raises(ValueError, match="image id 30"):
        ds[2]
    with pytest.raises(ValueError, match="image id 30"):
        load(images_dir, ann_file, full_check=True)
