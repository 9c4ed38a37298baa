"""evaluate.py's output folder: checked before the work, never silently mixed with older results.

What evaluate.py writes there (and so what it calls *its* files):

- one checkpoint: ``metrics.json`` and ``detections.json``;
- several: ``<label>/metrics.json`` and ``<label>/detections.json`` per checkpoint, and
  ``comparison.json``;
- with the error analysis (the default), beside each metrics.json: ``analysis.json`` and the
  plots `ANALYSIS_PLOTS` (``ap_vs_iou.png``, ``<bbox|segm>_pr_curves.png``,
  ``<bbox|segm>_confusion.png``, ``<bbox|segm>_breakdown.png``); side by side also the
  folder's own ``ap_vs_iou.png``;
- while writing, ``.tmp-<name>-*.partial`` (`detector.io.atomic_write`), which a
  killed process can leave behind.

`check_output` runs before any image is read. It refuses a folder that already holds any of
those files unless ``overwrite`` (results of one evaluation replaced piecemeal by another's,
or ``A/`` and ``B/`` of an old comparison beside ``C/`` and ``D/`` of a new one, would make a
folder whose files disagree), and it proves the folder writable by writing, fsyncing and
removing a probe file: a read-only, full or mistyped ``--output`` fails in seconds with
its path, not after the evaluation with a traceback. Folders the probe had to create are
removed again, so a refused run leaves nothing behind.

`clear_results` (``--overwrite true``, once every check has passed) removes exactly those
files, by name, in the folder and its direct subfolders, and then the subfolders left
empty; any other file is the user's and stays.

`write_results` writes the files and turns an OSError (disk full on a 2 GB detections.json)
into `OutputError`, whose message names the file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from detector.io import write_json

METRICS = "metrics.json"
DETECTIONS = "detections.json"
COMPARISON = "comparison.json"
ANALYSIS = "analysis.json"
AP_VS_IOU = "ap_vs_iou.png"
#: The error analysis's figures (`detector.evaluation.runner.write_analysis_plots`).
ANALYSIS_PLOTS = (AP_VS_IOU, *(f"{iou}_{kind}.png" for iou in ("bbox", "segm")
                               for kind in ("pr_curves", "confusion", "breakdown")))
_TOP_LEVEL = (METRICS, DETECTIONS, COMPARISON, ANALYSIS, *ANALYSIS_PLOTS)
_PER_CHECKPOINT = (METRICS, DETECTIONS, ANALYSIS, *ANALYSIS_PLOTS)


class OutputError(OSError):
    """Writing evaluate.py's results failed; ``strerror`` is one line naming the file and the reason."""


def result_files(folder: str | os.PathLike) -> list[Path]:
    """evaluate.py's files (see the module doc) present in `folder` and its direct subfolders."""
    root = Path(folder)
    if not root.is_dir():
        return []
    found = [root / name for name in _TOP_LEVEL if (root / name).is_file()]
    found += _partials(root, _TOP_LEVEL)
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        found += [sub / name for name in _PER_CHECKPOINT if (sub / name).is_file()]
        found += _partials(sub, _PER_CHECKPOINT)
    return found


def _partials(folder: Path, names: Iterable[str]) -> list[Path]:
    return sorted(p for name in names for p in folder.glob(f".tmp-{name}-*.partial") if p.is_file())


def check_output(folder: str | os.PathLike, overwrite: bool = False) -> None:
    """Raise ValueError (one line, naming `folder`) when it holds results and not `overwrite`,
    or when a file cannot be written in it. Leaves the file system as it found it."""
    folder = os.fspath(folder)
    existing = result_files(folder)
    if existing and not overwrite:
        shown = ", ".join(os.path.relpath(p, folder) for p in existing[:4]) + (", ..." if len(existing) > 4 else "")
        raise ValueError(
            f"--output {folder} already holds evaluation results ({shown}); pass --overwrite true to replace "
            "them (evaluate.py's earlier files there are removed first, nothing else), or choose another --output"
        )
    probe_writable(folder)


def probe_writable(folder: str | os.PathLike) -> None:
    """Raise ValueError naming `folder` unless a file can be created, written, synced and removed in it.

    Creates the missing folders for the probe and removes them again afterwards.
    """
    folder = os.path.abspath(os.fspath(folder))
    missing = []
    parent = folder
    while not os.path.exists(parent):
        missing.append(parent)
        parent = os.path.dirname(parent)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".tmp-write-probe-")
        try:
            os.write(fd, b"evaluate.py checks that it can write here\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.remove(probe)
    except OSError as err:
        reason = err.strerror or str(err)
        if os.path.isfile(parent):  # the folder itself, or the first part of its path that exists
            reason = f"{parent} is a file, not a folder"
        raise ValueError(f"--output {folder}: cannot write there ({reason}); choose a writable folder") from None
    finally:
        for path in missing:  # deepest first
            with contextlib.suppress(OSError):
                os.rmdir(path)


def clear_results(folder: str | os.PathLike) -> list[Path]:
    """Remove evaluate.py's files from `folder` (see the module doc); return what was removed."""
    removed = []
    for path in result_files(folder):
        with contextlib.suppress(FileNotFoundError):  # another rank (DDP) may have removed it first
            path.unlink()
            removed.append(path)
    root = Path(folder)
    for sub in {p.parent for p in removed if p.parent != root}:
        with contextlib.suppress(OSError):  # not empty: it holds the user's files, which stay
            sub.rmdir()
    return removed


def analysis_plot(iou_type: str, kind: str) -> str:
    """The file name of one of the `ANALYSIS_PLOTS` (``kind``: pr_curves, confusion or breakdown)."""
    name = f"{iou_type}_{kind}.png"
    if name not in ANALYSIS_PLOTS:
        raise ValueError(f"no analysis plot {name!r} (known: {', '.join(ANALYSIS_PLOTS)})")
    return name


def write_results(folder: str | os.PathLike, files: Iterable[tuple[str, Any]]) -> None:
    """Write each ``(relative path, JSON object)`` under `folder`, atomically, in the given order.

    Raises OutputError naming the file that could not be written.
    """
    for name, obj in files:
        try:
            write_json(os.path.join(folder, name), obj)
        except OSError as err:
            raise OutputError(err.errno, err.strerror or str(err)) from err
