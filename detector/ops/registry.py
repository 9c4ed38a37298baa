"""The ROI variant table: every fact about an ROI op that the rest of the project needs.

Configs, the CLIs, the ablation, the analysis, plots, tests and benchmarks name the ROI
layer with a string (``roi_op: roi_align``); this table is the one place that says what
such a name means: the module, the options it takes (each with its default, its validation
rule and the short tag a run folder uses), its modes (the ablation variants), its label and
colour in tables and plots, and the function giving the image region it reads (for
:mod:`detector.analysis`). Adding an op is one :func:`register_roi_op` call, in
``detector.ops`` or in a plugin module (``docs/roi_ops.md``, "Adding an op").

The table is a plain dict behind a read-only view, filled in registration order: the four
built-in ops below, then plugins, which ``detector/ops/__init__.py`` imports last (modules
named in ``DETECTOR_PLUGINS`` and entry points of group ``detector.roi_ops``; see
:mod:`.plugins`).

Two defaults, on purpose: an option's ``default`` here is what the *detector* uses when a
config leaves it out (``sampling_ratio=2``, Mask R-CNN's choice); the module's own keyword
default stays torchvision's (``RoIAlign(7, 1/16)`` has ``sampling_ratio=-1``), so the ops
remain drop-in replacements for ``torchvision.ops``. :func:`build_roi_op` passes only the
options it is given; the detector passes ``resolve_options(...)``, i.e. all of them.

Example:
    >>> spec = get_roi_op("roi_align")
    >>> spec.label, spec.modes, [o.name for o in spec.options]
    ('RoIAlign', ('avg', 'max'), ['sampling_ratio', 'aligned', 'mode'])
    >>> spec.resolve_options({"mode": "max"})
    {'sampling_ratio': 2, 'aligned': False, 'mode': 'max'}
    >>> build_roi_op("roi_align", 7, 1 / 16, sampling_ratio=2, mode="max")
    RoIAlign(output_size=(7, 7), spatial_scale=0.0625, sampling_ratio=2, aligned=False, mode='max')
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import nn

from .options import (
    ALIGNED_EXPECTED,
    MODE_EXPECTED,
    MODES,
    SAMPLING_RATIO_EXPECTED,
    is_aligned,
    is_mode,
    is_sampling_ratio,
)
from .prroi_pool import PrRoIPool
from .regions import roi_align_region, roi_pool_region, roi_warp_region
from .roi_align import RoIAlign
from .roi_pool import RoIPool
from .roi_warp import RoIWarp

_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")  # config values, run-folder names, CLI variant names


@dataclass(frozen=True)
class RoiOption:
    """One keyword option of an ROI op, as configs and the ablation see it.

    Attributes:
        name: the keyword (``"sampling_ratio"``).
        default: what the detector uses when a config does not set it.
        check: True when a value is valid; the same predicate the op applies to its own
            arguments (:mod:`.options`), so config and op cannot disagree.
        expected: a valid value in words, for error messages.
        tag: short name of a non-default value for run folders (``sr4``); None: no tag.
    """

    name: str
    default: Any
    check: Callable[[Any], bool]
    expected: str
    tag: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class RoiOpSpec:
    """One row of the variant table.

    Attributes:
        name: the registry key configs use (``"roi_align"``): lower case, digits, ``_``.
        module: the ``nn.Module`` class, called as ``module(output_size, spatial_scale,
            **options)`` and then ``module(input, boxes) -> Tensor[K, C, PH, PW]``
            (``docs/roi_ops.md``).
        label: the name tables and plots print (``"RoIAlign"``).
        color: a matplotlib colour for plots (``"tab:blue"``).
        options: the keyword options the module takes (none for RoIPool / PrRoIPool).
        modes: values of the option ``mode`` that are separate ablation variants; ``()``
            when the op has no modes.
        region: the image-space region the op reads (:mod:`.regions` states the signature),
            used by :mod:`detector.analysis`; None when the op is not analysed.
        ablate: whether the default ablation compares this op.
    """

    name: str
    module: type[nn.Module]
    label: str
    color: str
    options: tuple[RoiOption, ...] = ()
    modes: tuple[str, ...] = ()
    region: Callable[..., Any] | None = None
    ablate: bool = True

    def option(self, key: str) -> RoiOption:
        """The option called ``key``; ValueError naming the op and its valid keys."""
        for option in self.options:
            if option.name == key:
                return option
        valid = ", ".join(o.name for o in self.options) or "none"
        raise ValueError(f"ROI op {self.name!r} takes no option {key!r}; its options: {valid}")

    def check_options(self, options: Mapping[str, Any]) -> None:
        """ValueError for an unknown key or an invalid value (naming the op, the key, the value
        and what a valid value looks like)."""
        if not isinstance(options, Mapping):
            raise ValueError(f"options of ROI op {self.name!r} must be a mapping of keyword -> value, got {options!r}")
        for key, value in options.items():
            option = self.option(key)
            if not option.check(value):
                raise ValueError(
                    f"ROI op {self.name!r}: option {key}={value!r} is invalid; expected {option.expected}"
                )

    def resolve_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every option of this op: the defaults, completed by ``options`` (checked first).

        >>> get_roi_op("roi_pool").resolve_options(None)
        {}
        >>> get_roi_op("roi_warp").resolve_options({"sampling_ratio": 65})
        Traceback (most recent call last):
        ...
        ValueError: ROI op 'roi_warp': option sampling_ratio=65 is invalid; expected an int <= 64 (sampling points per bin side; 0 or less means adaptive, ceil(bin size) capped at 64; -1 is the usual spelling)
        """
        options = {} if options is None else options
        self.check_options(options)
        return {**{o.name: o.default for o in self.options}, **dict(options)}


_SPECS: dict[str, RoiOpSpec] = {}
#: name -> spec, in registration order (built-ins, then plugins); read-only, see register_roi_op.
ROI_OPS: Mapping[str, RoiOpSpec] = MappingProxyType(_SPECS)


def register_roi_op(spec: RoiOpSpec) -> RoiOpSpec:
    """Add ``spec`` to :data:`ROI_OPS` and return it.

    Checks what would otherwise fail later and far away: the name's form, a duplicate name,
    duplicate option names, a default that fails its own check, and modes that the op's
    ``mode`` option does not accept. Raises ValueError naming the op and the problem.
    """
    if not isinstance(spec, RoiOpSpec):
        raise ValueError(f"register_roi_op takes a detector.ops.RoiOpSpec, got {type(spec).__name__}")
    where = f"ROI op {spec.name!r}"
    if not isinstance(spec.name, str) or not _NAME.match(spec.name):
        raise ValueError(f"{where}: a name is lower case letters, digits and '_', starting with a letter")
    if spec.name in _SPECS:
        raise ValueError(
            f"{where} is registered already (by {_SPECS[spec.name].module.__module__}); "
            f"pick another name (registered: {', '.join(_SPECS)})"
        )
    if not callable(spec.module):
        raise ValueError(f"{where}: module must be an nn.Module class, got {spec.module!r}")
    names = [o.name for o in spec.options]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: option names repeat: {names}")
    for option in spec.options:
        if not option.check(option.default):
            raise ValueError(
                f"{where}: the default {option.name}={option.default!r} fails its own check ({option.expected})"
            )
    if spec.modes:
        if "mode" not in names:
            raise ValueError(f"{where}: modes {spec.modes} need an option called 'mode'")
        bad = [m for m in spec.modes if not spec.option("mode").check(m)]
        if bad:
            raise ValueError(f"{where}: modes {bad} fail the 'mode' option's check")
    _SPECS[spec.name] = spec
    return spec


def get_roi_op(name: str) -> RoiOpSpec:
    """The spec registered as ``name``; ValueError listing the known names."""
    try:
        return _SPECS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown ROI op {name!r}; known ops: {', '.join(sorted(_SPECS))}") from None


def build_roi_op(name: str, output_size, spatial_scale: float, **options) -> nn.Module:
    """Build the ROI module registered as ``name``.

    Args:
        name: a key of :data:`ROI_OPS` (``roi_pool``, ``roi_warp``, ``roi_align``,
            ``prroi_pool``, and any plugin's).
        output_size: ``int`` or ``(PH, PW)``.
        spatial_scale: ``1 / stride`` of the feature map the op reads.
        **options: op-specific keywords (``sampling_ratio``, ``aligned``, ``mode`` for
            ``roi_align`` / ``roi_warp``; none for the others), checked by the table's rules.
            Options left out take the module's own defaults (module doc).

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones), or an option value
            its rule refuses (the message names the key and what is expected).
        TypeError: an option the op does not take (the message names it and lists the valid ones).
    """
    spec = get_roi_op(name)
    for key in options:
        if key not in {o.name for o in spec.options}:
            valid = ", ".join(o.name for o in spec.options) or "none"
            raise TypeError(f"ROI op {name!r} takes no option {key!r}; its options: {valid}")
    spec.check_options(options)
    return spec.module(output_size, spatial_scale, **options)


def _sampling_options() -> tuple[RoiOption, ...]:
    """The options of the sampling ops (RoIWarp is RoIAlign on the snapped box: same options)."""
    return (
        RoiOption("sampling_ratio", 2, is_sampling_ratio, SAMPLING_RATIO_EXPECTED, tag=lambda v: f"sr{v}"),
        RoiOption("aligned", False, is_aligned, ALIGNED_EXPECTED, tag=lambda v: "aligned" if v else "unaligned"),
        RoiOption("mode", "avg", is_mode, MODE_EXPECTED, tag=str),
    )


register_roi_op(RoiOpSpec("roi_pool", RoIPool, "RoIPool", "tab:red", region=roi_pool_region))
register_roi_op(
    RoiOpSpec("roi_warp", RoIWarp, "RoIWarp", "tab:orange", _sampling_options(), MODES, region=roi_warp_region)
)
register_roi_op(
    RoiOpSpec("roi_align", RoIAlign, "RoIAlign", "tab:blue", _sampling_options(), MODES, region=roi_align_region)
)
register_roi_op(RoiOpSpec("prroi_pool", PrRoIPool, "PrRoIPool", "tab:green"))
