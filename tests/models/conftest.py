"""Fixtures for tests/models (helpers live in model_helpers.py, a unique module name)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    """The machine is shared; keep tests at two threads and deterministic."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)
