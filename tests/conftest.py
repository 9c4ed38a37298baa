"""Test-wide setup: import the checkout without installing it, and skip CUDA tests without a GPU.

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
