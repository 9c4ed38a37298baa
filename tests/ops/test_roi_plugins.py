"""Plugins: ROI ops registered from modules outside detector/ (DETECTOR_PLUGINS, entry points).

The environment variable is read when ``detector.ops`` is first imported, so those tests run
a fresh interpreter; the toy plugin (tests/plugins/toy_roi_op.py) is the op they register.
"""

import os
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import torch
from roi_variants import TOY, registered

import detector.ops.plugins as plugins
from detector.ops import ROI_OPS, build_roi_op, get_roi_op, roi_align

ROOT = Path(__file__).resolve().parents[2]
PROBE = """
import torch
from detector.ops import ROI_OPS, build_roi_op
print(",".join(ROI_OPS))
op = build_roi_op("toy_pool", 2, 0.5)
x = torch.randn(1, 3, 8, 8, requires_grad=True)
op(x, torch.tensor([[0, 1.0, 1.0, 9.0, 12.0]])).sum().backward()
print(type(op).__module__, float(x.grad.abs().sum()) > 0)
"""


def _python(code: str, plugins_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != plugins.ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if plugins_value is not None:
        env[plugins.ENV_VAR] = plugins_value
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)


def test_env_var_registers_the_toy_op_in_a_fresh_process():
    proc = _python(PROBE, " tests.plugins.toy_roi_op , ")  # blanks and empty entries are skipped
    assert proc.returncode == 0, proc.stderr
    names, built = proc.stdout.split()[:1], proc.stdout.split()[1:]
    assert names == ["roi_pool,roi_warp,roi_align,prroi_pool,toy_pool"]  # plugins after the built-ins
    assert built == ["tests.plugins.toy_roi_op", "True"]


def test_without_the_env_var_the_toy_op_is_unknown():
    proc = _python("from detector.ops import get_roi_op; get_roi_op('toy_pool')", None)
    assert proc.returncode != 0
    assert "ValueError: unknown ROI op 'toy_pool'; known ops: prroi_pool, roi_align, roi_pool, roi_warp" in proc.stderr


def test_a_bad_plugin_module_name_is_a_clear_import_error():
    proc = _python("import detector.ops", "tests.plugins.toy_roi_op,tests.plugins.no_such_plugin")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: DETECTOR_PLUGINS='tests.plugins.toy_roi_op,tests.plugins.no_such_plugin' "
                           "names the module 'tests.plugins.no_such_plugin', which cannot be imported"), last
    assert "unset DETECTOR_PLUGINS" in last


def test_plugin_modules_parses_the_variable():
    assert plugins.plugin_modules({"DETECTOR_PLUGINS": "a.b, c ,,"}) == ["a.b", "c"]
    assert plugins.plugin_modules({}) == []


def test_entry_points_are_imported_and_a_broken_one_is_named(monkeypatch):
    group = plugins.ENTRY_POINT_GROUP
    good = EntryPoint(name="fine", value="json", group=group)  # any importable module
    monkeypatch.setattr(plugins, "entry_points", lambda group: [good] if group == plugins.ENTRY_POINT_GROUP else [])
    assert plugins.load_plugins({}) == ["json"]
    broken = EntryPoint(name="broken", value="no_such_package.roi_op", group=group)
    monkeypatch.setattr(plugins, "entry_points", lambda group: [good, broken])
    with pytest.raises(ImportError, match=r"entry point 'broken' of group 'detector.roi_ops' names the module "
                                          r"'no_such_package.roi_op', which cannot be imported"):
        plugins.load_plugins({})


def test_toy_op_builds_by_name_and_runs_forward_and_backward(feat, rois):
    assert TOY not in ROI_OPS  # registered only inside `registered`
    with registered(TOY):
        spec = get_roi_op(TOY)
        assert (spec.label, spec.options, spec.modes, spec.region) == ("ToyPool", (), (), None)
        assert spec.module.__module__ == "tests.plugins.toy_roi_op"  # defined outside detector/
        module = build_roi_op(TOY, (2, 3), 0.5, **spec.resolve_options(None))
        x = feat.clone().requires_grad_(True)
        out = module(x, rois)
        # its module doc: RoIAlign avg with a 2 x 2 grid and aligned=True
        torch.testing.assert_close(out, roi_align(feat, rois, (2, 3), 0.5, 2, True, "avg"), rtol=1e-10, atol=1e-12)
        out.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
    assert TOY not in ROI_OPS
