"""DetectionDataModule: batches, seeded shuffling, split discovery, YAML-friendly arguments."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from jsonargparse import ArgumentParser

from detector.data.check import DatasetError
from detector.data.datamodule import DetectionDataModule, detection_collate


def from_folder(root, **kw):
    kw.setdefault("num_workers", 0)
    return DetectionDataModule(
        dataset="coco",
        train_images=str(root / "train"), train_annotations=str(root / "annotations" / "instances_train.json"),
        val_images=str(root / "val"), val_annotations=str(root / "annotations" / "instances_val.json"), **kw)


def epoch_ids(loader):
    return [t["image_id"] for _, targets in loader for t in targets]


def test_yields_batches_of_lists(tiny_synthetic):
    dm = from_folder(tiny_synthetic, batch_size=4, masks=True, jitter=0.9)
    dm.setup("fit")
    images, targets = next(iter(dm.train_dataloader()))
    assert len(images) == len(targets) == 4
    for image, target in zip(images, targets):
        assert image.shape == (3, 96, 128) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0  # still after colour jitter
        assert target["boxes"].shape[1] == 4 and target["labels"].dtype == torch.int64
        assert target["masks"].shape == (len(target["labels"]), 96, 128)
    val = list(dm.val_dataloader())
    assert sum(len(b[0]) for b in val) == 3 and epoch_ids(dm.val_dataloader()) == [1, 2, 3]  # in order


def test_seeded_shuffling_is_reproducible(tiny_synthetic):
    def orders(seed):
        dm = from_folder(tiny_synthetic, batch_size=2, seed=seed, jitter=0.0)  # order only: skip the pixel work
        dm.setup("fit")
        loader = dm.train_dataloader()
        return epoch_ids(loader), epoch_ids(loader)

    first, second = orders(5)
    assert sorted(first) == list(range(1, 7)) and first != second  # reshuffled every epoch
    assert orders(5) == (first, second)
    assert orders(6) != (first, second)


def test_augmentation_in_workers_is_reproducible(tiny_synthetic):
    def batches():
        dm = from_folder(tiny_synthetic, batch_size=3, seed=1, num_workers=2, jitter=0.5)
        dm.setup("fit")
        return [torch.stack(images) for images, _ in dm.train_dataloader()]

    a, b = batches(), batches()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_synthetic_default_generates_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path))
    dm = DetectionDataModule(synthetic_train=3, synthetic_val=2, synthetic_width=64, synthetic_height=48,
                             num_workers=0, batch_size=2)
    assert dm.num_classes == 8 and not any(tmp_path.iterdir())  # known before anything is generated
    dm.prepare_data()
    dm.setup("fit")
    assert dm.num_classes == 8 and dm.category_names[0] == "circle" and dm.category_ids == list(range(1, 8))
    assert str(tmp_path) in dm.val_annotation_file and dm.val_dataset is not None
    assert len(next(iter(dm.train_dataloader()))[0]) == 2


def test_num_classes_of_a_coco_folder_before_setup(messy):
    images_dir, ann_file = messy
    dm = DetectionDataModule(dataset="coco", train_images=str(images_dir), train_annotations=str(ann_file),
                             val_images=str(images_dir), val_annotations=str(ann_file))
    assert dm.num_classes == 3 and dm.category_ids == [7, 42] and dm.category_names == ["nut", "bolt"]


def test_drop_empty_applies_to_training_only(messy):
    images_dir, ann_file = messy
    dm = DetectionDataModule(dataset="coco", train_images=str(images_dir), train_annotations=str(ann_file),
                             val_images=str(images_dir), val_annotations=str(ann_file), drop_empty=True)
    with pytest.warns(UserWarning):
        dm.setup("fit")
    assert len(dm.train_dataset) == 2 and len(dm.val_dataset) == 3


def test_root_with_coco_2017_layout(tmp_path, tiny_synthetic):
    root = tmp_path / "coco"
    for split in ("train", "val"):
        shutil.copytree(tiny_synthetic / split, root / f"{split}2017")
        (root / "annotations").mkdir(exist_ok=True)
        shutil.copy(tiny_synthetic / "annotations" / f"instances_{split}.json",
                    root / "annotations" / f"instances_{split}2017.json")
    dm = DetectionDataModule(dataset="coco", root=str(root), num_workers=0)
    dm.setup("fit")
    assert len(dm.train_dataset) == 6 and dm.val_annotation_file.endswith("instances_val2017.json")
    assert dm.test_annotation_file is None
    with pytest.raises(ValueError, match="test_images"):
        dm.setup("test")


def test_missing_split_names_the_searched_paths(tmp_path):
    dm = DetectionDataModule(dataset="coco", root=str(tmp_path))
    with pytest.raises(ValueError, match=r"no train split found; looked for images in .*train2017.*train_images"):
        dm.setup("fit")


def test_bad_arguments_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="val_annotations"):
        DetectionDataModule(dataset="coco", root="x", val_images="v")
    with pytest.raises(ValueError, match="root"):
        DetectionDataModule(dataset="coco")
    with pytest.raises(ValueError, match="batch_size"):
        DetectionDataModule(batch_size=0)


def test_val_categories_must_match_train(tmp_path, tiny_synthetic):
    val = json.loads((tiny_synthetic / "annotations" / "instances_val.json").read_text())
    val["categories"] = val["categories"][:-1]
    val["annotations"] = [a for a in val["annotations"] if a["category_id"] != 7]
    (tmp_path / "val.json").write_text(json.dumps(val))
    dm = from_folder(tiny_synthetic)
    dm._explicit["val"] = (str(tiny_synthetic / "val"), str(tmp_path / "val.json"))
    with pytest.raises(DatasetError, match=r"val\.json: categories .* differ"):
        dm.setup("fit")


def test_arguments_are_yaml_keys():
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(DetectionDataModule, "data")
    cfg = parser.parse_args(["--data.dataset", "coco", "--data.root", "/data/coco", "--data.batch_size", "8",
                             "--data.min_size", "600", "--data.masks", "true", "--data.skip_bad_images", "true",
                             "--data.full_check", "false"])
    assert cfg.data.batch_size == 8 and cfg.data.min_size == 600 and cfg.data.masks is True
    assert cfg.data.skip_bad_images is True and cfg.data.full_check is False
    assert parser.parse_args([]).data.full_check is None
    assert cfg.data.synthetic_width == 400 and cfg.data.max_size is None
    with pytest.raises(Exception, match="dataset"):
        parser.parse_args(["--data.dataset", "imagenet"])


def test_detection_collate_keeps_lists():
    batch = [(torch.zeros(3, 4, 5), {"image_id": 1}), (torch.zeros(3, 6, 7), {"image_id": 2})]
    images, targets = detection_collate(batch)
    assert [i.shape[1] for i in images] == [4, 6] and [t["image_id"] for t in targets] == [1, 2]


def test_truncated_image_stops_setup_before_the_first_step(tmp_path, tiny_synthetic):
    """It used to pass setup and crash the DataLoader when the batch holding it came up."""
    from data_helpers import truncate

    root = tmp_path / "ds"
    shutil.copytree(tiny_synthetic, root)
    truncate(root / "train" / "000004.png", keep=0.6)
    dm = from_folder(root)
    with pytest.raises(DatasetError, match=r"(?s)image id 4.*000004\.png.*decoding failed.*skip_bad_images true"):
        dm.setup("fit")
    dm = from_folder(root, skip_bad_images=True, batch_size=6)
    with pytest.warns(UserWarning, match=r"left out 1 image.*\n  image id 4"):
        dm.setup("fit")
    assert sorted(epoch_ids(dm.train_dataloader())) == [1, 2, 3, 5, 6]
