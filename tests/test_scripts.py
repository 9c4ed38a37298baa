"""pyproject.toml's console scripts: every target imports and is callable, every module CLI it
runs exists, and a script behaves as ``python -m`` does (exit status included)."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import tomllib

from detector import scripts

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SCRIPTS = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_console_script_target_imports_and_is_callable(name):
    module, _, attr = SCRIPTS[name].partition(":")
    target = getattr(importlib.import_module(module), attr)
    assert callable(target), f"{name} = {SCRIPTS[name]} is not callable"


def test_every_module_cli_has_a_script_and_exists():
    for name, module in scripts.MODULE_SCRIPTS.items():
        assert name in SCRIPTS, f"{name} (python -m {module}) is not in pyproject.toml's [project.scripts]"
        assert importlib.util.find_spec(module) is not None, module


def test_train_and_evaluate_scripts_find_their_clis():
    from detector.cli import main_evaluate, main_train

    assert callable(main_train) and callable(main_evaluate)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # when another test imported it first
def test_check_script_runs_the_module_cli(tmp_path, monkeypatch, capsys):
    """``detector-check`` is ``python -m detector.data.check``: same output, same exit status."""
    (tmp_path / "bad.json").write_text("{")
    monkeypatch.setattr(sys, "argv", ["detector-check", "--images", str(tmp_path),
                                      "--annotations", str(tmp_path / "bad.json")])
    with pytest.raises(SystemExit) as exit_:
        scripts.check()
    assert exit_.value.code == 1
    assert "not valid JSON" in capsys.readouterr().out
