"""Run records: the few small files that make a finished run count, kept apart from its weights.

A run folder (:mod:`.runs`) holds checkpoints of about 80 MB each and lives under ``--out``,
usually scratch space: when the machine or the disk goes, the runs go, and a table that took
hours has to be trained again to add one seed. Yet a finished run counts by its files, not by
its weights: run.json with its ``verified`` stamp (`RunDir.check_record` then never opens the
checkpoint), the train commands for the recipe check (:mod:`.recipe`), and evaluate.py's
analysis for the AP-at-IoU columns. ``--records DIR`` keeps exactly those:

- *archive* (`archive_records`): each time the tables are written, every run that counts for the
  command at hand has its record files copied to ``DIR/runs/<run>/`` (small enough to commit beside a
  published table: about 190 kB a run, no checkpoint);
- *restore* (`restore_records`): before anything runs, ``DIR/runs/<run>/`` is copied into
  ``OUT/runs/<run>/`` where that folder is absent or empty, so the run is skipped as complete and
  enters the table, and only the missing runs train.

Neither side ever replaces a file: a run folder that already holds files keeps them (restore
says so), and an archived run whose record differs from the run's now is kept and reported
(archive writes a run only where ``DIR/runs/<run>/`` is absent; the same record again is a no-op).
A record that another command trained, or that does not verify (no stamp, broken, of another
run), is neither archived nor restored, and the line says why.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .lock import RunLock
from .recipe import recipe_problem
from .runs import RunDir, RunSpec, read_json

#: Files of a run folder that make up its record (relative paths; those absent are skipped).
#: Training curves and the resolved config come along (a few kB) so that a restored run can be
#: inspected; logs and checkpoints do not.
RECORD_FILES = ("run.json", "train.json", "attempts.jsonl", "timing.json", "eval/metrics.json",
                "eval/analysis.json")
RECORD_GLOBS = ("train/csv/*/metrics.csv", "train/tensorboard/*/config.yaml")


def record_files(run_path: Path) -> list[Path]:
    """The record files present in `run_path`, as paths relative to it."""
    found = [Path(name) for name in RECORD_FILES if (run_path / name).is_file()]
    for pattern in RECORD_GLOBS:
        found += sorted(p.relative_to(run_path) for p in run_path.glob(pattern) if p.is_file())
    return found


def record_problem(run: RunDir, recipe: list[str]) -> str | None:
    """Why `run`'s folder is not a record of `recipe` that stands without its checkpoint (None: it is)."""
    raw = read_json(run.marker)
    if not isinstance(raw, dict):
        return "has no readable run.json"
    if "verified" not in raw:
        return "its run.json has no 'verified' stamp (written before stamps existed: it needs its checkpoint)"
    rec, problem = run.check_record()
    if rec is None:
        return f"its run.json does not count ({problem or 'the run is not complete'})"
    return recipe_problem(run.path, recipe)


def _is_empty(path: Path) -> bool:
    """No folder, or one without files (a lock file left by an aborted start counts as nothing)."""
    return not path.is_dir() or not any(p.is_file() and p.name != ".run.lock" for p in path.rglob("*"))


def _same_file(a: Path, b: Path) -> bool:
    return a.is_file() and b.is_file() and filecmp.cmp(a, b, shallow=False)


def _copy_tree(src_root: Path, files: Iterable[Path], dst: Path) -> None:
    """Copy `files` (relative to `src_root`) into a new folder `dst`, which appears whole or not at all."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        for rel in files:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src_root / rel, tmp / rel)
        if dst.is_dir():  # empty (checked by the caller): a lock file at most
            shutil.rmtree(dst)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore_records(records: Path, out: Path, specs: Iterable[RunSpec], recipe_for: Callable[[RunSpec], list[str]],
                    echo=print, dry_run: bool = False) -> list[str]:
    """Copy ``records/runs/<run>/`` into ``out/runs/<run>/`` for each planned run whose folder there is
    absent or empty and whose record verifies under this command; return the names restored.

    Raises:
        ValueError: `records` exists and is not a folder.
    """
    records = Path(records)
    if not records.exists():
        return []  # nothing kept yet: archive_records creates it
    if not records.is_dir():
        raise ValueError(f"--records {str(records)!r} is not a folder (an earlier --records DIR, or a published table's "
                         "folder such as docs/ablation/s16_mask, with runs/<run>/ inside)")
    restored = []
    for spec in specs:
        archived = RunDir(records, spec)  # a run folder without its weights
        src, dst = archived.path, RunDir(out, spec).path
        if not archived.marker.is_file() or src.resolve() == dst.resolve():
            continue
        problem = record_problem(archived, recipe_for(spec))
        if problem:
            echo(f"[{spec.name}] record in {src} not restored: it {problem}")
        elif not _is_empty(dst) or RunLock(dst).is_held_elsewhere():
            if not _same_file(archived.marker, dst / "run.json"):
                echo(f"[{spec.name}] record in {src} not restored: {dst} already holds files or is being run by "
                     "another launcher (kept as it is)")
        else:
            if not dry_run:
                _copy_tree(src, record_files(src), dst)
            restored.append(spec.name)
    if restored:
        echo(f"{'would restore' if dry_run else 'restored'} {len(restored)} finished run(s) from {records}: "
             f"{', '.join(restored)}")
    return restored


def archive_records(records: Path, out: Path, specs: Iterable[RunSpec], recipe_for: Callable[[RunSpec], list[str]],
                    echo=print) -> list[str]:
    """Copy the record files of each run of `specs` that counts for this command into
    ``records/runs/<run>/`` (never over a different record); return the names newly archived."""
    records = Path(records)
    archived = []
    for spec in specs:
        run, dst = RunDir(out, spec), RunDir(records, spec).path
        if not run.marker.is_file() or run.path.resolve() == dst.resolve() or record_problem(run, recipe_for(spec)):
            continue
        if (dst / "run.json").is_file():
            if not _same_file(run.marker, dst / "run.json"):
                echo(f"[{spec.name}] not archived: {dst} holds another record of this run (kept; move it away "
                     "to archive this one)")
            continue
        if not _is_empty(dst):
            echo(f"[{spec.name}] not archived: {dst} holds other files (kept)")
            continue
        _copy_tree(run.path, record_files(run.path), dst)
        archived.append(spec.name)
    if archived:
        echo(f"archived {len(archived)} run record(s) to {records}: {', '.join(archived)}")
    return archived
