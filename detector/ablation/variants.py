"""The ROI-layer variants an ablation compares, read from the ROI variant table, and their train flags.

A variant is an ROI op of `detector.ops.ROI_OPS` plus, for ops with modes (the table's
``RoiOpSpec.modes``: ``avg`` / ``max`` over the sampling points), one mode. Names are the
registry keys with the mode appended: ``roi_pool``, ``roi_warp_avg``, ``roi_warp_max``,
``roi_align_avg``, ``roi_align_max``, ``prroi_pool`` (the rows of Mask R-CNN Table 2c, plus
PrRoIPool), and any op a plugin registers (docs/roi_ops.md). On the command line
``roi_align`` alone means its first mode (``roi_align_avg``), and ``roi_align:max`` /
``"roi_align max"`` are accepted spellings of ``roi_align_max``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detector.ops import ROI_OPS, get_roi_op

#: The reference every other variant is compared with.
REFERENCE = "roi_pool"


@dataclass(frozen=True, order=True)
class Variant:
    """One ROI layer configuration: ``op`` (registry key) and ``mode`` (None for ops without modes)."""

    op: str
    mode: str | None = None

    def __post_init__(self) -> None:
        spec = get_roi_op(self.op)  # ValueError listing the registered ops
        if spec.modes and self.mode not in spec.modes:
            raise ValueError(f"variant {self.op!r} needs a mode in {spec.modes}, got {self.mode!r}")
        if not spec.modes and self.mode is not None:
            raise ValueError(f"{self.op!r} has no sampling-point mode; drop {self.mode!r}")

    @property
    def name(self) -> str:
        """Short, filesystem-safe name: ``roi_align_max``, ``roi_pool``."""
        return self.op if self.mode is None else f"{self.op}_{self.mode}"

    @property
    def label(self) -> str:
        """Name for tables and plots, the way the papers write it (``RoIAlign max``)."""
        label = get_roi_op(self.op).label
        return label if self.mode is None else f"{label} {self.mode}"

    @property
    def color(self) -> str:
        return get_roi_op(self.op).color

    def roi_options(self, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The op's options for this variant: `base` (the base config's ``roi_options``) limited
        to the keys this op takes, and the variant's mode. So ``aligned: true`` in a base
        config reaches every op that has ``aligned``, and never an op without it."""
        takes = {option.name for option in get_roi_op(self.op).options}
        options = {k: v for k, v in dict(base or {}).items() if k in takes}
        if self.mode is not None:
            options["mode"] = self.mode
        return options

    def train_flags(self, base_options: Mapping[str, Any] | None = None) -> list[str]:
        """``--model.detector.*`` flags of the train CLI that select this variant.

        ``roi_options`` is always given in full (a JSON object), so options of a base config
        written for another op cannot leak into this one.
        """
        import json

        return ["--model.detector.roi_op", self.op,
                "--model.detector.roi_options", json.dumps(self.roi_options(base_options), sort_keys=True)]


def default_variants() -> tuple[Variant, ...]:
    """Every op of the table marked ``ablate`` (registration order), one variant per mode."""
    return tuple(Variant(spec.name, mode) for spec in ROI_OPS.values() if spec.ablate
                 for mode in (spec.modes or (None,)))


def parse_variant(text: str) -> Variant:
    """``roi_align_max``, ``roi_align:max``, ``"roi_align max"`` or ``roi_align`` (= first mode) -> Variant."""
    parts = [p for p in re.split(r"[\s:/]+", text.strip().lower()) if p]
    if len(parts) == 2:
        return Variant(parts[0], parts[1])
    if len(parts) != 1:
        raise ValueError(f"cannot read variant {text!r}; write e.g. roi_pool, roi_align_max, roi_warp:avg")
    word = parts[0]
    if word in ROI_OPS:
        modes = ROI_OPS[word].modes
        return Variant(word, modes[0] if modes else None)
    for spec in ROI_OPS.values():
        for mode in spec.modes:
            if word == f"{spec.name}_{mode}":
                return Variant(spec.name, mode)
    return Variant(word)  # raises, listing the registered ops


def parse_variants(texts) -> list[Variant]:
    """Parse a list, keeping order and refusing duplicates (they would share run folders)."""
    out: list[Variant] = []
    for t in texts:
        v = parse_variant(t)
        if v in out:
            raise ValueError(f"variant {v.name!r} is listed twice in --variants")
        out.append(v)
    return out
