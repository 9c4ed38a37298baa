"""The synthetic generator: deterministic, valid COCO, masks and boxes consistent, cached safely."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from detector.data import render, synthetic
from detector.data.check import check_coco
from detector.data.render import RenderConfig, render_image
from detector.data.shapes import SHAPES
from detector.data.synthetic import ensure_synthetic_coco, generate_synthetic_coco, main

# pycocotools 2.0.x under numpy 2 warns inside annToMask; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_generation_is_deterministic(tmp_path, tiny_synthetic):
    again = generate_synthetic_coco(tmp_path / "again", num_train=6, num_val=3, width=128, height=96, seed=3,
                                    image_format="png", workers=1, min_object_size=8)
    assert files(again) == files(tiny_synthetic)
    other = generate_synthetic_coco(tmp_path / "other", num_train=6, num_val=3, width=128, height=96, seed=4,
                                    image_format="png", workers=1, min_object_size=8)
    assert files(other) != files(tiny_synthetic)


def test_parallel_generation_gives_the_same_files(tmp_path):
    kw = dict(num_train=8, num_val=0, width=96, height=64, seed=1, min_object_size=8)
    one = generate_synthetic_coco(tmp_path / "one", workers=1, **kw)
    two = generate_synthetic_coco(tmp_path / "two", workers=2, **kw)
    assert files(one) == files(two)


def test_json_passes_the_checker_and_loads_in_pycocotools(tiny_synthetic):
    for split, n in (("train", 6), ("val", 3)):
        ann_file = tiny_synthetic / "annotations" / f"instances_{split}.json"
        report = check_coco(tiny_synthetic / split, ann_file)
        assert report.ok and not report.issues, report.format()
        coco = COCO(str(ann_file))
        assert len(coco.getImgIds()) == n
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(SHAPES)
        assert coco.getAnnIds(), "every image has at least one object"


def test_boxes_and_areas_are_those_of_the_visible_masks(tiny_synthetic):
    coco = COCO(str(tiny_synthetic / "annotations" / "instances_train.json"))
    for img_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        assert 1 <= len(anns) <= 8
        masks = np.stack([coco.annToMask(a) for a in anns])  # (N, H, W)
        assert masks.sum(axis=0).max() == 1, "visible masks of one image never overlap"
        for ann, mask in zip(anns, masks):
            ys, xs = np.nonzero(mask)
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert ann["area"] == mask.sum() >= 16 and ann["iscrowd"] == 0


def test_sizes_span_sub_cell_to_most_of_the_image_with_occlusion():
    cfg = RenderConfig()
    sides, per_image = [], []
    for i in range(60):
        _, instances, labels = render_image(cfg, np.random.default_rng([0, 0, i]))
        per_image.append(len(labels))
        ids = np.arange(1, len(labels) + 1, dtype=np.uint8)
        masks = np.asfortranarray((instances[:, :, None] == ids).astype(np.uint8))
        boxes = mask_utils.toBbox(mask_utils.encode(masks))
        sides += list(boxes[:, 2:].max(axis=1))
    assert min(sides) < 16 and max(sides) > 0.6 * min(cfg.width, cfg.height)
    assert sum(s < 32 for s in sides) > 0.15 * len(sides)  # plenty of objects below one 32 px cell
    assert min(per_image) >= 1 and max(per_image) <= 8 and np.mean(per_image) > 3


def test_every_class_appears():
    cfg = RenderConfig(width=160, height=120, min_object_size=10)
    seen = set()
    for i in range(30):
        image, instances, labels = render_image(cfg, np.random.default_rng([5, 0, i]))
        seen.update(labels)
        assert instances.max() == len(labels) and image.shape == (120, 160, 3)
    assert seen == set(range(1, len(SHAPES) + 1))


def test_masks_are_exactly_the_painted_pixels(monkeypatch):
    """Paint every object pure white (background and clutter never reach 255 in all channels):
    the white pixels must be exactly the union of the visible masks."""
    white = np.full((256, 3), 255, dtype=np.uint8)
    monkeypatch.setattr(render, "_texture", lambda h, w, rng: (np.zeros((h, w), dtype=np.uint8), white))
    for i in range(10):
        image, instances, labels = render_image(RenderConfig(), np.random.default_rng(i))
        assert labels
        np.testing.assert_array_equal((image == 255).all(axis=2), instances > 0)


def test_render_options_are_validated_with_the_field_named():
    with pytest.raises(ValueError, match="max_objects"):
        RenderConfig(min_objects=3, max_objects=2)
    with pytest.raises(ValueError, match="min_object_size"):
        RenderConfig(min_object_size=500)
    with pytest.raises(ValueError, match="classes"):
        RenderConfig(classes=("circle", "blob"))
    with pytest.raises(ValueError, match="image_format"):
        generate_synthetic_coco("unused", image_format="gif")


def test_ensure_generates_once_then_reuses(tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_CACHE", str(tmp_path / "cache"))
    kw = dict(num_train=3, num_val=2, width=64, height=48, workers=1, min_object_size=8)
    root = ensure_synthetic_coco(**kw)
    assert root.parent == tmp_path / "cache" / "synthetic"
    assert json.loads((root / "DONE.json").read_text())["format_version"] == synthetic.FORMAT_VERSION
    assert len(list((root / "train").glob("*.jpg"))) == 3 and len(list((root / "val").glob("*.jpg"))) == 2
    assert ensure_synthetic_coco(**{**kw, "seed": 1}) != root  # other parameters, other folder
    calls = []
    monkeypatch.setattr(synthetic, "generate_synthetic_coco", lambda *a, **k: calls.append(1))
    assert ensure_synthetic_coco(**kw) == root and not calls  # cache hit: nothing generated
    assert [p.name for p in root.parent.iterdir() if p.name.startswith(".tmp")] == []


def test_incomplete_cache_is_regenerated(tmp_path):
    kw = dict(num_train=3, num_val=2, width=64, height=48, workers=1, min_object_size=8, cache_dir=tmp_path)
    root = ensure_synthetic_coco(**kw)
    before = files(root)
    (root / "train" / "000002.jpg").unlink()
    assert ensure_synthetic_coco(**kw) == root
    assert files(root) == before


def test_killed_generation_leaves_no_complete_looking_folder(tmp_path, monkeypatch):
    real = synthetic._render_one
    count = []

    def dies_midway(job):
        count.append(1)
        if len(count) == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C
        return real(job)

    monkeypatch.setattr(synthetic, "_render_one", dies_midway)
    kw = dict(num_train=4, num_val=2, width=64, height=48, workers=1, min_object_size=8, cache_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic_coco(**kw)
    assert list((tmp_path / "synthetic").iterdir()) == []  # no final folder, no temp folder
    monkeypatch.setattr(synthetic, "_render_one", real)
    assert check_coco(ensure_synthetic_coco(**kw) / "train",
                      ensure_synthetic_coco(**kw) / "annotations" / "instances_train.json").ok


def test_cli_writes_a_coco_folder(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "s"), "--num-train", "2", "--num-val", "1", "--width", "64",
                 "--height", "48", "--workers", "1", "--min-object-size", "8", "--format", "png"]) == 0
    assert "wrote 3 images" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "s" / "train").iterdir()) == ["000001.png", "000002.png"]
    assert main(["--out", str(tmp_path / "t"), "--width", "8"]) == 2
    assert "too small" in capsys.readouterr().err


def test_objects_are_mostly_inside_the_frame():
    cfg = RenderConfig(width=120, height=90, min_object_size=10)
    for i in range(20):
        _, instances, labels = render_image(cfg, np.random.default_rng(i))
        for j in range(len(labels)):
            assert (instances == j + 1).sum() >= 16
    assert math.isclose(cfg.max_object_fraction * 90, 67.5)
