"""Plugin loading: ROI ops registered from modules outside ``detector/``.

A plugin is a Python module that calls :func:`detector.ops.register_roi_op` when imported
(``tests/plugins/toy_roi_op.py`` is one). ``detector/ops/__init__.py`` calls
:func:`load_plugins` as its last line, after every public name is bound, so a plugin can
``from detector.ops import RoiOpSpec, register_roi_op`` and every later reader of the table
(configs, ablation, analysis) sees its op. Two ways to name plugins:

- ``DETECTOR_PLUGINS``: comma-separated import paths (``DETECTOR_PLUGINS=tests.plugins.toy_roi_op``).
  Environment variables reach subprocesses, so ``train.py`` runs started by the ablation
  see the same ops as the ablation itself.
- Installed packages: entry points of group ``detector.roi_ops`` whose value is the module
  to import (``[project.entry-points."detector.roi_ops"] toy = "my_pkg.toy_roi_op"``).

A module that cannot be imported is an ImportError naming where it was named (the variable
or the entry point) and the module, raised when ``detector.ops`` is imported: better than a
config failing later with "unknown ROI op".
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from importlib.metadata import entry_points

ENV_VAR = "DETECTOR_PLUGINS"
ENTRY_POINT_GROUP = "detector.roi_ops"


def plugin_modules(environ: Mapping[str, str] | None = None) -> list[str]:
    """The module paths named in ``DETECTOR_PLUGINS`` (blank entries skipped)."""
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    return [name.strip() for name in value.split(",") if name.strip()]


def load_plugins(environ: Mapping[str, str] | None = None) -> list[str]:
    """Import every plugin module (env first, then entry points); return what was loaded.

    Importing a module twice runs it once (``sys.modules``), so calling this again is harmless.
    """
    environ = os.environ if environ is None else environ
    loaded = []
    for name in plugin_modules(environ):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ImportError(
                f"{ENV_VAR}={environ.get(ENV_VAR, '')!r} names the module {name!r}, which cannot be "
                f"imported: {err}. Use a dotted import path reachable from sys.path (e.g. "
                f"tests.plugins.toy_roi_op from the repository root), or unset {ENV_VAR}"
            ) from err
        loaded.append(name)
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            point.load()
        except ImportError as err:
            raise ImportError(
                f"entry point {point.name!r} of group {ENTRY_POINT_GROUP!r} names the module "
                f"{point.value!r}, which cannot be imported: {err}. Reinstall or uninstall the package "
                f"that declares it ({getattr(point.dist, 'name', 'unknown')})"
            ) from err
        loaded.append(point.value)
    return loaded
