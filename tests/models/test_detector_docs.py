"""The runnable examples in detector.models' docstrings run and print what they claim."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["config", "backbones", "detector"]  # the modules with examples


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"detector.models.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"no examples found in detector.models.{name}"
    assert result.failed == 0, f"{result.failed} docstring example(s) of detector.models.{name} failed"
