"""The runnable examples in detector.ops docstrings stay true."""

import doctest
import importlib

import pytest

MODULES = ["roi_pool", "roi_align", "roi_warp", "prroi_pool", "registry", "options", "regions"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"detector.ops.{name}")  # the module, not the same-named function
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
