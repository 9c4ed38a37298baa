"""Fixtures for the Lightning / CLI tests (helpers: lit_helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from lit_helpers import tiny_args


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A cache folder holding the tiny synthetic dataset (generated once per session)."""
    from detector.data.synthetic import ensure_synthetic_coco

    root = tmp_path_factory.mktemp("synthetic-cache")
    ensure_synthetic_coco(num_train=4, num_val=3, width=96, height=64, cache_dir=root, workers=1)
    return root


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, data_root) -> Path:
    """A run folder after 2 epochs (4 steps) of tiny training, with checkpoints/{best,last}.ckpt."""
    from detector.cli import DetectorCLI

    run_dir = tmp_path_factory.mktemp("run")
    DetectorCLI(args=["fit", *tiny_args(data_root, run_dir), "--trainer.max_epochs", "2"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """In-process CLIs get their args explicitly; pytest's own argv must not look like CLI input."""
    monkeypatch.setattr("sys.argv", ["train.py"])
