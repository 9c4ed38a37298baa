"""Test-wide setup: import the checkout without installing it, skip CUDA tests without a GPU, and
the tiny-run fixtures (`data_root`, `trained_run`; helpers in tests/tiny_run.py) of the
Lightning and CLI tests.

Tests marked ``@pytest.mark.cuda`` (marker registered in pyproject.toml) are skipped,
visibly with ``-ra``, where ``torch.cuda.is_available()`` is False, so the same test files
run on CPU-only CI and on a GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` (not `python -m pytest`) from a checkout without `pip install -e`
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


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
    from tiny_run import tiny_args

    from detector.cli import DetectorCLI

    run_dir = tmp_path_factory.mktemp("run")
    DetectorCLI(args=["fit", *tiny_args(data_root, run_dir), "--trainer.max_epochs", "2"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return run_dir


@pytest.fixture(autouse=True)
def _plain_argv(monkeypatch):
    """In-process CLIs get their args explicitly; pytest's own argv must not look like CLI input."""
    monkeypatch.setattr("sys.argv", ["train.py"])
