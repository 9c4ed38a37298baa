"""Fixtures of the CLI tests: `three_class_coco`, a tiny COCO folder with another category table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

#: The synthetic categories kept by `three_class_coco` (old id -> new id), names unchanged.
KEPT = {1: 1, 4: 2, 5: 3}  # circle, star, ring


@pytest.fixture(scope="session")
def three_class_coco(tmp_path_factory, data_root) -> Path:
    """``DIR/{train,val}/*.jpg`` + ``DIR/annotations/instances_{train,val}.json``: the tiny synthetic
    images with 3 of the 7 categories kept (circle, star, ring), renumbered 1..3, the others' boxes dropped."""
    from detector.data.synthetic import ensure_synthetic_coco

    source = ensure_synthetic_coco(num_train=4, num_val=3, width=96, height=64, cache_dir=data_root, workers=1)
    root = tmp_path_factory.mktemp("three-class-coco")
    (root / "annotations").mkdir()
    for split in ("train", "val"):
        shutil.copytree(source / split, root / split)
        data = json.loads((source / "annotations" / f"instances_{split}.json").read_text())
        data["categories"] = [{**c, "id": KEPT[c["id"]]} for c in data["categories"] if c["id"] in KEPT]
        data["annotations"] = [{**a, "category_id": KEPT[a["category_id"]]} for a in data["annotations"]
                               if a["category_id"] in KEPT]
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root
