"""Small, dependency-free writers for result tables (rows of dicts) as CSV, JSON and Markdown.

Every report in this project (quantization analysis, ablation) is a list of flat rows; one
set of writers keeps their formats identical, so a notebook can read any of them the same
way (``csv.DictReader`` or ``json.load``) without pandas.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path


def format_value(v, digits: int = 3) -> str:
    """Human form of one cell: floats to ``digits`` decimals, NaN/None as an empty dash."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "-" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None, digits: int = 3) -> str:
    """GitHub-flavoured Markdown table of ``rows`` (``columns`` default: the first row's keys)."""
    # every row's keys, in first-seen order: rows of different runs may carry different columns
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    headers = list(headers or columns)
    if len(headers) != len(columns):
        raise ValueError(f"headers ({len(headers)}) and columns ({len(columns)}) differ in length")
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(format_value(r.get(c), digits) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN; None reads back as "not measured"
    if hasattr(v, "item"):  # numpy scalar
        return _jsonable(v.item())
    return v


def write_csv(rows: Iterable[dict], path: str | Path, columns: Sequence[str] | None = None) -> Path:
    """CSV with a header row; floats at full precision (the table is data, not display)."""
    rows = list(rows)
    # every row's keys, in first-seen order: rows of different runs may carry different columns
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: _jsonable(r.get(c)) for c in columns})
    return path
