"""The compact store holds exactly what the old per-image dicts held (a slow, obvious reference)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from data_helpers import messy_coco, write_coco

from detector.data.coco import CocoDetection
from detector.data.store import AnnotationStore


def reference(data: dict, category_ids: list, exclude=(), drop_empty=False) -> dict:
    """The old ``CocoDetection._index_targets``, per image in Python: {image id: per-image record}."""
    label = {c: i + 1 for i, c in enumerate(sorted(category_ids))}
    imgs = {img["id"]: img for img in data["images"]}
    by_image: dict = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    out = {}
    for img_id in sorted(imgs):
        if img_id in exclude:
            continue
        img = imgs[img_id]
        w, h = float(img.get("width", np.inf)), float(img.get("height", np.inf))
        every = by_image.get(img_id, [])
        anns = [a for a in every if not a.get("iscrowd", 0) and a.get("category_id") in label]
        xywh = np.array([a.get("bbox", [np.nan] * 4) for a in anns], dtype=np.float64).reshape(-1, 4)
        xyxy = np.clip(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1), 0.0, [w, h, w, h])
        keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)
        if drop_empty and not keep.any():
            continue
        kept = [a for a, k in zip(anns, keep) if k]
        out[img_id] = {
            "file_name": img["file_name"], "boxes": xyxy[keep].astype(np.float32),
            "labels": [label[a["category_id"]] for a in kept], "ann_ids": [a["id"] for a in kept],
            "segmentations": [a.get("segmentation") for a in kept],
            "all": [(a["id"], a["category_id"], bool(a.get("iscrowd", 0)), a.get("area"), a["bbox"]) for a in every],
        }
    return out


def assert_store_equals(store: AnnotationStore, ref: dict, segmentations: bool) -> None:
    assert store.image_ids.tolist() == list(ref)
    for i, r in enumerate(ref.values()):
        assert store.file_name(i) == r["file_name"]
        rows = store.target_rows(i)
        np.testing.assert_array_equal(store.target_boxes(i), r["boxes"])
        assert store.ann_ids[rows].tolist() == r["ann_ids"]
        cats = sorted(set(store.category_ids.tolist()) | {0})
        del cats
        held = store.rows(i)
        got = list(zip(store.ann_ids[held].tolist(), store.category_ids[held].tolist(), store.crowd[held].tolist(),
                       store.area[held].tolist(), store.xywh[held].tolist()))
        for (aid, cat, crowd, area, box), (eid, ecat, ecrowd, earea, ebox) in zip(got, r["all"]):
            assert (aid, cat, crowd, box) == (eid, ecat, ecrowd, [float(v) for v in ebox])
            assert area == earea or (earea is None and math.isnan(area))
        assert len(got) == len(r["all"])
        if segmentations:
            assert [store.segmentation(row) for row in rows] == r["segmentations"]


def random_coco(seed: int, n_images: int = 40) -> dict:
    """Boxes inside, past the borders, sub-pixel, crowd, unknown categories, images without annotations."""
    rng = np.random.default_rng(seed)
    images = [{"id": int(i), "file_name": f"d/{i}.png", "width": int(rng.integers(8, 60)), "height": int(rng.integers(8, 60))}
              for i in rng.permutation(np.arange(100, 100 + 3 * n_images, 3))]
    anns = []
    for k in range(8 * n_images):
        img = images[int(rng.integers(0, n_images))] if rng.random() > 0.1 else images[0]
        x, y = (float(v) for v in np.round(rng.uniform(-1, [img["width"], img["height"]]), 2))
        w, h = (float(v) for v in np.round(rng.uniform(0, 30, 2), 2))
        ann = {"id": 1000 + k, "image_id": img["id"], "category_id": int(rng.choice([3, 5, 9, 11])),
               "bbox": [x, y, w, h], "iscrowd": int(rng.random() < 0.1),
               "segmentation": [[x, y, x + w, y, x + w, y + h]] if rng.random() < 0.7 else
               {"size": [img["height"], img["width"]], "counts": "abc"}}
        if rng.random() < 0.8:
            ann["area"] = round(w * h, 2)
        anns.append(ann)
    return {"images": images, "annotations": anns, "categories": [{"id": c, "name": f"c{c}"} for c in (3, 5, 9)]}


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("drop_empty", [False, True])
def test_store_round_trips_what_the_per_image_dicts_held(seed, drop_empty):
    data = random_coco(seed)
    exclude = {data["images"][3]["id"]}
    store, dropped = AnnotationStore.from_coco(data, [3, 5, 9], exclude=exclude, drop_empty=drop_empty,
                                               segmentations=True)
    assert_store_equals(store, reference(data, [3, 5, 9], exclude, drop_empty), segmentations=True)
    assert len(dropped) > 0


def test_store_of_the_messy_folder_and_the_dataset_items(messy):
    data = json.loads(messy[1].read_text())
    store, dropped = AnnotationStore.from_coco(data, [7, 42], segmentations=True)
    assert_store_equals(store, reference(data, [7, 42]), segmentations=True)
    assert dropped.tolist() == [5]
    ds = CocoDetection(*messy, masks=True)
    for i, r in enumerate(reference(data, [7, 42]).values()):
        _, target = ds[i]
        assert target["labels"].tolist() == r["labels"]


def test_store_holds_no_python_object_per_record():
    store, _ = AnnotationStore.from_coco(random_coco(0), [3, 5, 9], segmentations=True)
    arrays = [v for v in vars(store).values() if v is not None]
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays)
    assert store.nbytes == sum(v.nbytes for v in arrays)


def test_segmentations_are_only_held_when_asked():
    store, _ = AnnotationStore.from_coco(random_coco(0), [3, 5, 9])
    with pytest.raises(ValueError, match="segmentations=True"):
        store.segmentation(0)


@pytest.mark.parametrize("key, record, field", [("images", 0, "id"), ("annotations", 1, "image_id"),
                                                ("annotations", 2, "category_id"), ("categories", 0, "id")])
def test_unchecked_file_without_integer_ids_names_record_and_key(tmp_path, key, record, field):
    data, images = messy_coco()
    data[key][record][field] = "7"
    images_dir, ann_file = write_coco(tmp_path, data, images)
    with pytest.raises(ValueError, match=rf"instances\.json: cannot index it: {key}\[{record}\] has no integer "
                                         rf"'{field}'.*detector\.data\.check"):
        CocoDetection(images_dir, ann_file, check=False)


def test_unchecked_file_with_a_record_missing_its_id(tmp_path):
    data, images = messy_coco()
    del data["annotations"][0]["id"]
    with pytest.raises(ValueError, match=r"annotations\[0\] has no integer 'id' \(got <missing>\)"):
        CocoDetection(*write_coco(tmp_path, data, images), check=False)


def test_unchecked_malformed_boxes_are_dropped_not_fatal(tmp_path):
    data, images = messy_coco()
    data["annotations"][5]["bbox"] = [1, 2, "3", 4]
    data["annotations"][0]["bbox"] = [1, 2, 3]
    ds = CocoDetection(*write_coco(tmp_path, data, images), check=False)
    assert ds.num_dropped_boxes == 3 and ds[2][1]["boxes"].shape == (0, 4)


def test_ids_and_the_lazy_pycocotools_index(messy):
    ds = CocoDetection(*messy)
    assert ds.ids == [10, 20, 30] and all(type(i) is int for i in ds.ids)
    assert "coco" not in vars(ds)  # not built unless asked
    assert sorted(ds.coco.imgs) == [10, 20, 30]


def test_ids_beyond_64_bits_are_refused_naming_the_key(tmp_path):
    data, images = messy_coco()
    data["annotations"][0]["id"] = 2**70
    with pytest.raises(ValueError, match=r"instances\.json: cannot index it: annotations have 'id' values beyond "
                                         r"the 64-bit integer range"):
        CocoDetection(*write_coco(tmp_path, data, images))
