"""CocoDetection: what it yields equals pycocotools' own view, after the documented rules."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from data_helpers import messy_coco, png_rgb16, write_coco
from PIL import Image
from pycocotools.coco import COCO

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
