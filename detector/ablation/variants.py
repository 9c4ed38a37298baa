"""The ROI-layer variants an ablation compares, and how each becomes train-CLI flags.

A variant is an ROI op plus, for the sampling ops, the reduction over sampling points. Names
are the registry keys of ``shared/ROI_OPS.md`` with the mode appended where there is one:
``roi_pool``, ``roi_warp_avg``, ``roi_warp_max``, ``roi_align_avg``, ``roi_align_max``,
``prroi_pool`` (the rows of Mask R-CNN Table 2c, plus PrRoIPool). On the command line
``roi_align`` alone means ``roi_align_avg``, and ``roi_align:max`` / ``"roi_align max"`` are
accepted spellings of ``roi_align_max``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: ROI ops that reduce sampling points with a mode ("avg" / "max").
OPS_WITH_MODE = ("roi_warp", "roi_align")
#: ROI ops without modes.
OPS_WITHOUT_MODE = ("roi_pool", "prroi_pool")
MODES = ("avg", "max")
#: The reference every other variant is compared with.
REFERENCE = "roi_pool"


@dataclass(frozen=True, order=True)
class Variant:
    """One ROI layer configuration: ``op`` (registry key) and ``mode`` (None for ops without one)."""

    op: str
    mode: str | None = None

    def __post_init__(self) -> None:
        if self.op in OPS_WITH_MODE:
            if self.mode not in MODES:
                raise ValueError(f"variant {self.op!r} needs a mode in {MODES}, got {self.mode!r}")
        elif self.op in OPS_WITHOUT_MODE:
            if self.mode is not None:
                raise ValueError(f"{self.op!r} has no sampling-point mode; drop {self.mode!r}")
        else:
            raise ValueError(f"unknown ROI op {self.op!r}; known: {OPS_WITHOUT_MODE + OPS_WITH_MODE}")

    @property
    def name(self) -> str:
        """Short, filesystem-safe name: ``roi_align_max``, ``roi_pool``."""
        return self.op if self.mode is None else f"{self.op}_{self.mode}"

    @property
    def label(self) -> str:
        """Name for tables and plots, the way the papers write it."""
        pretty = {"roi_pool": "RoIPool", "roi_warp": "RoIWarp", "roi_align": "RoIAlign",
                  "prroi_pool": "PrRoIPool"}[self.op]
        return pretty if self.mode is None else f"{pretty} {self.mode}"

    def train_flags(self) -> list[str]:
        """``--model.*`` flags of the train CLI that select this variant.

        ``roi_mode`` is always given (``avg`` for ops without modes, which the module
        requires), so a base config that sets ``roi_mode: max`` cannot leak into a RoIPool run.
        """
        return ["--model.roi_op", self.op, "--model.roi_mode", self.mode or "avg"]


DEFAULT_VARIANTS = (
    Variant("roi_pool"),
    Variant("roi_warp", "avg"),
    Variant("roi_warp", "max"),
    Variant("roi_align", "avg"),
    Variant("roi_align", "max"),
    Variant("prroi_pool"),
)


def parse_variant(text: str) -> Variant:
    """``roi_align_max``, ``roi_align:max``, ``"roi_align max"`` or ``roi_align`` (= avg) -> Variant."""
    t = text.strip().lower()
    parts = [p for p in re.split(r"[\s:/]+", t) if p]
    if len(parts) == 1:
        for mode in MODES:
            if parts[0].endswith("_" + mode) and parts[0][: -len(mode) - 1] in OPS_WITH_MODE:
                return Variant(parts[0][: -len(mode) - 1], mode)
        op = parts[0]
        return Variant(op, "avg" if op in OPS_WITH_MODE else None)
    if len(parts) == 2:
        return Variant(parts[0], parts[1])
    raise ValueError(f"cannot read variant {text!r}; write e.g. roi_pool, roi_align_max, roi_warp:avg")


def parse_variants(texts) -> list[Variant]:
    """Parse a list, keeping order and refusing duplicates (they would share run folders)."""
    out: list[Variant] = []
    for t in texts:
        v = parse_variant(t)
        if v in out:
            raise ValueError(f"variant {v.name!r} is listed twice in --variants")
        out.append(v)
    return out
