"""The ROI variants the op-tests run over, read from the variant table (``detector.ops.ROI_OPS``).

Every registered op is tested, plus the toy plugin ``toy_pool`` (``tests/plugins/toy_roi_op.py``),
which a test registers only while it runs (:func:`registered`), so the rest of the suite sees
the table as a plain run does. Option values come from the table: every mode, and for the
built-in options a few values (``SAMPLE_VALUES``); an option this file does not know takes
its default. A new op is therefore tested by registering it; only its slow reference (if it
has one) is added here, in ``REFERENCES``.
"""

from __future__ import annotations

import contextlib
import importlib
from itertools import product

from roi_reference import prroi_ref, roi_align_ref, roi_pool_ref, roi_warp_ref

import detector.ops as ops
import detector.ops.registry as registry  # internal on purpose: _SPECS, to unregister the toy op
from detector.ops import ROI_OPS, register_roi_op

TOY = "toy_pool"
TOY_MODULE = "tests.plugins.toy_roi_op"


def _toy_spec():
    """The toy plugin's spec, without leaving it registered (importing the plugin registers it)."""
    was_there = TOY in ROI_OPS  # e.g. DETECTOR_PLUGINS=tests.plugins.toy_roi_op pytest ...
    spec = importlib.import_module(TOY_MODULE).SPEC
    if not was_there:
        registry._SPECS.pop(TOY, None)
    return spec


#: name -> spec: every op registered at collection, then the toy plugin.
SPECS = {**ROI_OPS, TOY: _toy_spec()}
NAMES = list(SPECS)


@contextlib.contextmanager
def registered(name: str):
    """``name`` is in the table for the duration (the toy op is registered, then removed again)."""
    added = name not in ROI_OPS
    if added:
        register_roi_op(SPECS[name])
    try:
        yield SPECS[name]
    finally:
        if added:
            registry._SPECS.pop(name, None)


SAMPLE_VALUES = {"sampling_ratio": (1, 2, 3, -1), "aligned": (False, True)}


def option_grid(name: str, values=SAMPLE_VALUES) -> list[dict]:
    """Every combination of the op's option values: its modes, ``values`` for known options,
    the default for the others; ``[{}]`` for an op without options."""
    spec = SPECS[name]
    axes = []
    for option in spec.options:
        if option.name == "mode" and spec.modes:
            choices = spec.modes
        else:
            choices = values.get(option.name, (option.default,))
        axes.append([(option.name, v) for v in choices])
    return [dict(combo) for combo in product(*axes)]


def case_id(name: str, options: dict) -> str:
    return "-".join([name] + [f"{k}={v}" for k, v in options.items()])


def cases(values=SAMPLE_VALUES) -> list[tuple[str, dict]]:
    return [(name, options) for name in NAMES for options in option_grid(name, values)]


#: name -> slow reference ``(feat, rois, ph, pw, scale, options) -> Tensor[K, C, PH, PW]``.
REFERENCES = {
    "roi_pool": lambda f, r, ph, pw, s, o: roi_pool_ref(f, r, ph, pw, s),
    "roi_warp": lambda f, r, ph, pw, s, o: roi_warp_ref(f, r, ph, pw, s, o["sampling_ratio"], o["aligned"], o["mode"]),
    "roi_align": lambda f, r, ph, pw, s, o: roi_align_ref(
        f, r, ph, pw, s, o["sampling_ratio"], o["aligned"], o["mode"]
    ),
    "prroi_pool": lambda f, r, ph, pw, s, o: prroi_ref(f, r, ph, pw, s),
    # the toy is RoIAlign avg with a 2 x 2 grid and aligned=True (its module doc)
    TOY: lambda f, r, ph, pw, s, o: roi_align_ref(f, r, ph, pw, s, 2, True, "avg"),
}


def contract_variants() -> dict[str, tuple[str, dict]]:
    """``id -> (name, options)`` for the ops of ``detector.ops`` itself (those with a function of
    the registry key's name there, as docs/roi_ops.md promises), whose every bad-input rule the
    project keeps: each mode once at the detector's defaults and once adaptive + aligned."""
    variants = {}
    for name, spec in ROI_OPS.items():
        if not callable(getattr(ops, name, None)):
            continue
        if not spec.modes:
            variants[name] = (name, {})
        for mode in spec.modes:
            variants[f"{name}_{mode}"] = (name, {"mode": mode})
            variants[f"{name}_{mode}_adaptive_aligned"] = (name, {"mode": mode, "sampling_ratio": -1, "aligned": True})
    return variants
