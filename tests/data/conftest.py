"""Fixtures: a handmade COCO folder with every awkward case, and a tiny synthetic one."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import messy_coco, write_coco


@pytest.fixture
def messy(tmp_path) -> tuple[Path, Path]:
    data, images = messy_coco()
    return write_coco(tmp_path, data, images)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory) -> Path:
    """A synthetic folder of 6 train and 3 val PNG images of 128x96, generated once per session."""
    from detector.data.synthetic import generate_synthetic_coco

    out = tmp_path_factory.mktemp("synthetic")
    return generate_synthetic_coco(out, num_train=6, num_val=3, width=128, height=96, seed=3,
                                   image_format="png", workers=1, min_object_size=8)
