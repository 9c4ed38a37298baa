"""Fixtures for tests/ops (the slow references live in roi_reference.py, a unique module name)."""

import pytest
import torch
from roi_reference import random_rois
from roi_shapes import BATCH, CHANNELS, HEIGHT, SCALE, WIDTH


@pytest.fixture(autouse=True)
def _two_threads():
    """The machine is shared: two threads, fixed seed."""
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def feat() -> torch.Tensor:
    """(2, 3, 9, 11) float64 features, distinct values (no max ties)."""
    return torch.randn(BATCH, CHANNELS, HEIGHT, WIDTH, dtype=torch.float64, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def rois() -> torch.Tensor:
    """(16, 5) float64 boxes with every corner case of roi_reference.random_rois, at SCALE."""
    return random_rois(torch.Generator().manual_seed(2), BATCH, HEIGHT, WIDTH, SCALE)


#: The three ways of giving no boxes at all: (0, 5) tensor, a list of (0, 4) tensors, an empty list.
EMPTY_BOXES = {
    "tensor": lambda: torch.zeros(0, 5, dtype=torch.float64),
    "list_of_empty": lambda: [torch.zeros(0, 4, dtype=torch.float64)] * 2,
    "empty_list": lambda: [],
}


@pytest.fixture(params=list(EMPTY_BOXES))
def no_boxes(request):
    """Each spelling of "no boxes" (`EMPTY_BOXES`), one test per spelling."""
    return EMPTY_BOXES[request.param]()
