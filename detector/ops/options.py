"""The option rules of the sampling ROI ops (RoIAlign, RoIWarp), each written once.

Every option has one predicate (``is_*``: True when the value is valid) and one checker
(``check_*``: the predicate, raising an error that names the value and the fix). The ops
call the checkers on their arguments; the variant table (:mod:`.registry`) hands the same
predicates to configs as ``RoiOption.check``. So a value a config accepts is exactly a
value the op accepts, and the two can no longer disagree (they did before issue 13: the
config wanted ``sampling_ratio >= 1`` or ``-1``, the op took any int up to 64).

The rules (``docs/roi_ops.md``):

- ``sampling_ratio``: an int (not a bool) of at most :data:`MAX_SAMPLING_GRID` sampling
  points per bin side; any value ``<= 0`` means adaptive, ``ceil(bin size)`` per box
  (torchvision's rule; ``-1`` is the usual spelling), capped at :data:`MAX_SAMPLING_GRID`.
- ``aligned``: a bool (``0`` / ``1`` are accepted as such). A string such as ``"false"``
  is refused: it used to be truthy, i.e. silently ``True``.
- ``mode``: ``"avg"`` or ``"max"`` (:data:`MODES`).

Example:
    >>> is_sampling_ratio(2), is_sampling_ratio(-1), is_sampling_ratio(0), is_sampling_ratio(65)
    (True, True, True, False)
    >>> check_mode("median")
    Traceback (most recent call last):
    ...
    ValueError: mode must be 'avg' or 'max', got 'median'
"""

from __future__ import annotations

from typing import Any

# Most sampling points per bin side (RoIAlign / RoIWarp), for an explicit sampling_ratio and
# for the adaptive grid alike; csrc/align_common.h holds the same number (kMaxGrid), and
# _extension.py refuses a build where they differ. Why 64: realistic grids are 1-4
# (Mask R-CNN uses 2, detectron2 adaptive), and the cap only changes an adaptive grid
# ceil(bin size) for bins over 64 feature cells, i.e. boxes over 448 cells with a 7 x 7
# output (7168 px at stride 16, 1792 px even at stride 4): no box of a real image. 64 x 64
# = 4096 points per bin keep even an absurd box at ~200k samples per channel for a 7 x 7
# output, a few milliseconds, where torchvision's uncapped grid for a box of 1e30 never
# finishes (and casts the grid size to int, undefined behaviour).
MAX_SAMPLING_GRID = 64

#: How a sampling op combines the points of a bin.
MODES = ("avg", "max")

#: What a valid value of each option looks like, for error messages (the table's ``expected``).
SAMPLING_RATIO_EXPECTED = (
    f"an int <= {MAX_SAMPLING_GRID} (sampling points per bin side; 0 or less means adaptive, "
    f"ceil(bin size) capped at {MAX_SAMPLING_GRID}; -1 is the usual spelling)"
)
ALIGNED_EXPECTED = "True or False"
MODE_EXPECTED = " or ".join(repr(m) for m in MODES)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_sampling_ratio(value: Any) -> bool:
    """True for an int ``<= MAX_SAMPLING_GRID`` (``<= 0``: adaptive)."""
    return _is_int(value) and value <= MAX_SAMPLING_GRID


def is_aligned(value: Any) -> bool:
    """True for a bool (or the ints 0 / 1)."""
    return isinstance(value, (bool, int)) and value in (0, 1)


def is_mode(value: Any) -> bool:
    """True for ``"avg"`` or ``"max"``."""
    return isinstance(value, str) and value in MODES


def check_sampling_ratio(sampling_ratio: Any) -> int:
    """:func:`is_sampling_ratio`, or TypeError (not an int) / ValueError (above the cap)."""
    if is_sampling_ratio(sampling_ratio):
        return sampling_ratio
    if not _is_int(sampling_ratio):
        raise TypeError(f"sampling_ratio must be an int (<= 0 means adaptive), got {sampling_ratio!r}")
    raise ValueError(
        f"sampling_ratio {sampling_ratio} is above the limit of {MAX_SAMPLING_GRID} points per bin side "
        f"({MAX_SAMPLING_GRID}x{MAX_SAMPLING_GRID} per bin); use at most {MAX_SAMPLING_GRID} (2 is usual), "
        "or -1 for adaptive"
    )


def check_aligned(aligned: Any) -> bool:
    """:func:`is_aligned` as a bool, or TypeError naming the value."""
    if not is_aligned(aligned):
        raise TypeError(f"aligned must be True or False, got {aligned!r}")
    return bool(aligned)


def check_mode(mode: Any) -> str:
    """:func:`is_mode`, or ValueError naming the value."""
    if not is_mode(mode):
        raise ValueError(f"mode must be 'avg' or 'max', got {mode!r}")
    return mode
