"""Grid axes: any ``train.py`` key as an extra dimension of the ablation.

    python -m detector.ablation --config configs/ablation.yaml --out runs/aligned \\
        --variants roi_pool roi_align_avg --grid model.aligned=false,true

``--grid KEY=V1,V2,...`` (repeatable, several per flag) adds one axis: every variant x stride x
seed is trained once per value (once per combination of values with several axes), into its own
run folder ``<variant>_s<stride>_<axis>-<value>..._seed<k>``, and the results table gets one column
per axis. Differences to RoIPool and the spread rule are taken **within** each combination
(:mod:`.results`), so every row compares runs that differ in the ROI layer only.

Keys are ``train.py fit`` keys without the leading ``--``: ``model.*``, ``data.*``, ``trainer.*``.
Two short forms are accepted for the detector (the names the issue tracker and papers use):

- ``model.<option>`` / ``model.roi_options.<option>`` for an option of the ROI variant table
  (``aligned``, ``sampling_ratio``) means ``model.detector.roi_options.<option>``. Such an axis
  reaches only the variants whose op takes the option (`Variant.roi_options`): an op without it
  (RoIPool) is trained once and shared by every value, and its column says ``-``.
- ``model.<field>`` for a `DetectorConfig` field (``model.fpn``) means ``model.detector.<field>``.

Every value is checked before anything trains: an ROI option by the table's own rule, any other
key by train.py's parser (`detector.cli.read_train_config`), so a wrong key or value is one clear
error naming it. Keys the ablation sets per run (the ROI op, ``mode``, the stride, the seeds, the
run folder) are refused with the flag to use instead, and so is a key also given as a plain
``--key value`` override (which would be ambiguous).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import yaml

from detector.ops import ROI_OPS

from .runs import ROI_OPTION_PREFIX, axis_short, axis_tag
from .variants import Variant

#: Keys the ablation sets for every run, and the flag that chooses them instead.
RESERVED_KEYS = {
    "model.detector.roi_op": "--variants", "model.detector.roi_options": "--variants (and one axis per option)",
    ROI_OPTION_PREFIX + "mode": "--variants (roi_align_avg, roi_align_max, ...)",
    "model.detector.stride": "--strides", "seed_everything": "--seeds", "data.seed": "--seeds",
    "trainer.default_root_dir": "--out", "ckpt_path": "(resuming is automatic)",
}


@dataclass(frozen=True)
class Axis:
    """One grid axis: a canonical train.py key and its values as written (text, in order)."""

    key: str
    values: tuple[str, ...]

    @property
    def short(self) -> str:
        """The column name and run-folder tag: the key's last part (``aligned``)."""
        return axis_short(self.key)

    @property
    def roi_option(self) -> str | None:
        """The ROI option this axis sets (``aligned``), or None for any other key."""
        return self.key[len(ROI_OPTION_PREFIX):] if self.key.startswith(ROI_OPTION_PREFIX) else None

    def applies_to(self, variant: Variant) -> bool:
        """Whether runs of ``variant`` differ along this axis (an op without the option: no)."""
        option = self.roi_option
        return option is None or option in {o.name for o in ROI_OPS[variant.op].options}


def split_values(text: str) -> list[str]:
    """``"1,2,-1"`` -> ``["1", "2", "-1"]``; commas inside brackets stay (``"[16,32],[32,64]"``)."""
    values, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            values.append(cur.strip())
            cur = ""
        else:
            cur += ch
    values.append(cur.strip())
    return values


def canonical_key(key: str) -> str:
    """The train.py key a grid key means (see the module doc); ValueError for a key outside
    ``model.* / data.* / trainer.*`` or one the ablation sets itself."""
    from detector.models import DetectorConfig

    key = key.strip().lstrip("-")
    parts = key.split(".")
    if parts[0] not in ("model", "data", "trainer") or len(parts) < 2 or not all(parts):
        raise ValueError(f"--grid key {key!r}: expected a train.py key under model., data. or trainer. "
                         "(e.g. model.aligned, model.detector.fpn, trainer.max_epochs)")
    roi_option_names = {o.name for spec in ROI_OPS.values() for o in spec.options}
    detector_fields = {f.name for f in dataclasses.fields(DetectorConfig)}
    if parts[0] == "model":
        if len(parts) == 3 and parts[1] == "roi_options":
            key = ROI_OPTION_PREFIX + parts[2]
        elif len(parts) == 2 and parts[1] in roi_option_names:
            key = ROI_OPTION_PREFIX + parts[1]
        elif len(parts) == 2 and parts[1] in detector_fields:
            key = f"model.detector.{parts[1]}"
    if key in RESERVED_KEYS:
        raise ValueError(f"--grid {key}: the ablation sets it for every run; use {RESERVED_KEYS[key]} instead")
    return key


def parse_grid(texts: Sequence[str], variants: Sequence[Variant], config_args: Sequence[str],
               overrides: Sequence[str]) -> list[Axis]:
    """``["model.aligned=false,true", ...]`` -> checked axes (see the module doc for the rules).

    Raises ValueError naming the axis, the key or the value at fault.
    """
    from detector.cli import read_train_config

    from .runner import split_overrides

    overridden = {flag.lstrip("-") for flag, _ in split_overrides(list(overrides))}
    axes: list[Axis] = []
    for text in texts:
        if "=" not in text:
            raise ValueError(f"--grid {text!r}: write KEY=V1,V2,... (e.g. model.aligned=false,true)")
        raw_key, raw_values = text.split("=", 1)
        key = canonical_key(raw_key)
        values = tuple(split_values(raw_values))
        where = f"--grid {raw_key}"
        if any(v == "" for v in values):
            raise ValueError(f"{where}: an empty value in {raw_values!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"{where}: a value is listed twice in {raw_values!r}")
        if len({axis_tag(v) for v in values}) != len(values):
            raise ValueError(f"{where}: values {values} would share run folders ({[axis_tag(v) for v in values]}); "
                             "spell them apart")
        flag = "model.detector.roi_options" if key.startswith(ROI_OPTION_PREFIX) else key
        if flag in overridden:
            raise ValueError(f"{where}: --{flag} is also given as an override; set {key} in one place")
        for other in axes:
            if other.key == key:
                raise ValueError(f"{where}: {key} is already an axis")
            if other.short == axis_short(key):
                raise ValueError(f"{where}: {key} and {other.key} would both be called {other.short!r} in run "
                                 "folders and columns; make one of them a plain override")
        axis = Axis(key, values)
        _check_values(axis, where, variants, config_args, overrides, read_train_config)
        axes.append(axis)
    return axes


def _check_values(axis: Axis, where, variants, config_args, overrides, read_train_config) -> None:
    option = axis.roi_option
    if option is None:
        for value in axis.values:  # train.py's own parser: its message names the key (on stderr)
            try:
                read_train_config([*config_args, *overrides, f"--{axis.key}", value])
            except ValueError as err:
                raise ValueError(f"{where}: value {value!r} is refused by train.py ({err}); "
                                 "its message above names the problem") from None
        return
    takers = [v for v in variants if axis.applies_to(v)]
    if not takers:
        ops = sorted({spec.name for spec in ROI_OPS.values() if any(o.name == option for o in spec.options)})
        if not ops:
            known = sorted({o.name for spec in ROI_OPS.values() for o in spec.options} - {"mode"})
            raise ValueError(f"{where}: no ROI op has an option {option!r}; options of the table: {known}")
        raise ValueError(f"{where}: none of --variants takes {option!r} (ops that do: {ops}); the axis would "
                         "change nothing")
    spec = ROI_OPS[takers[0].op]
    for value in axis.values:
        try:
            spec.check_options({option: yaml.safe_load(value)})  # the table's rule, in words
        except ValueError as err:
            raise ValueError(f"{where}: value {value!r}: {err}") from None


def combinations(axes: Sequence[Axis]) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of axis values, first axis slowest: ``[(("k1", "a"), ("k2", "1")), ...]``;
    ``[()]`` without axes."""
    return [tuple(zip((a.key for a in axes), values)) for values in itertools.product(*(a.values for a in axes))]


def for_variant(combo: tuple[tuple[str, str], ...], axes: Sequence[Axis], variant: Variant) -> tuple[tuple[str, str], ...]:
    """The part of ``combo`` that changes ``variant``'s runs (axes it does not take dropped)."""
    keep = {a.key for a in axes if a.applies_to(variant)}
    return tuple((k, v) for k, v in combo if k in keep)


def describe(combo: tuple[tuple[str, str], ...]) -> str:
    """``"aligned=true, sampling_ratio=2"`` (empty without axes)."""
    return ", ".join(f"{axis_short(k)}={v}" for k, v in combo)


def parse_value(text: str):
    """A grid value as YAML reads it (``true`` -> True, ``-1`` -> -1), for ROI options."""
    return yaml.safe_load(text)


__all__ = [
    "RESERVED_KEYS",
    "Axis",
    "canonical_key",
    "combinations",
    "describe",
    "for_variant",
    "parse_grid",
    "parse_value",
    "split_values",
]
