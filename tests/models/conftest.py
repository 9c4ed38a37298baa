"""Fixtures for tests/models (helpers live in model_helpers.py, a unique module name)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """One thread: tiny inputs gain little from more, and on a shared, oversubscribed CPU
    spinning OpenMP threads slow a 2-thread run down 10x or more. Deterministic seed."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)
