"""One training per run folder, and no run's checkpoints replaced by accident.

A run folder (``trainer.default_root_dir``) holds one run's ``checkpoints/`` and logs. Two
trainings writing one folder would both exit 0 with one ``last.ckpt`` left, a mix of both;
a second ``fit`` without ``--ckpt_path`` would silently replace the first run's checkpoints.
`claim_run_folder` (train.py calls it before ``fit``, before any data is read) therefore:

1. checks that the folder and the checkpoint folders can be written (one-line error naming
   the path, instead of a traceback after the first epoch);
2. takes the folder's lock, ``ROOT/.fit.lock``, held until the fit ends (`RunFolderLock`);
3. refuses to start a new run over checkpoints already there, unless the fit resumes
   (``--ckpt_path last``, or a checkpoint inside those folders) or ``--overwrite true`` was
   given, in which case the old ``*.ckpt`` files are deleted (so no stale ``best.ckpt``
   stays beside the new run's files).

The lock is `detector.folder_lock.FolderLock` (the kernel's ``flock``: atomic, released
when the holder exits in any way, its file's content never trusted), as the ablation's.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from detector.folder_lock import FolderBusy, FolderLock

LOCK_NAME = ".fit.lock"


class RunFolderError(ValueError):
    """The run folder cannot be used; the message (one line) names the folder and the way out."""


class RunFolderLock(FolderLock):
    """Holds ``folder/.fit.lock`` from `acquire` to `release`, or raises `RunFolderError`.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> first = RunFolderLock(folder).acquire()
    >>> try:
    ...     RunFolderLock(folder).acquire()
    ... except RunFolderError as err:
    ...     print(str(err).startswith(f"{folder} is in use by another training"))
    True
    >>> first.release(); RunFolderLock(folder).acquire().release()  # free again
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        super().__init__(
            folder, LOCK_NAME, "{folder} is in use by another training ({holder})", "--trainer.default_root_dir"
        )

    def acquire(self) -> RunFolderLock:
        try:
            super().acquire()
        except FolderBusy as err:
            raise RunFolderError(str(err)) from None
        return self


def check_writable(folder: str | os.PathLike) -> None:
    """Create `folder` if needed and a file in it, or raise `RunFolderError` naming it."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise RunFolderError(
            f"cannot write to {folder}: {err.strerror or err} (fix: make it writable or choose "
            "another --trainer.default_root_dir)"
        ) from None


def claim_run_folder(
    root: str | os.PathLike, checkpoint_dirs: list[str], ckpt_path: str | None, overwrite: bool
) -> RunFolderLock:
    """Steps 1-3 of the module doc; returns the held lock (release it when the fit ends).

    Args:
        root: the run folder (``trainer.default_root_dir``).
        checkpoint_dirs: where the run's ModelCheckpoints write.
        ckpt_path: ``fit``'s ``--ckpt_path`` (None: a new run).
        overwrite: delete earlier checkpoints in `checkpoint_dirs` instead of refusing.
    """
    checkpoint_dirs = list(dict.fromkeys(str(d) for d in checkpoint_dirs))
    lock = RunFolderLock(root).acquire()
    try:
        for folder in checkpoint_dirs:
            check_writable(folder)
        # nonfinite-step=N.ckpt is a diagnostic of a diverged attempt, never resumed: it does not
        # make the folder "taken" (a rerun starts over), and --overwrite deletes it with the rest
        earlier = sorted(p for folder in checkpoint_dirs for p in Path(folder).glob("*.ckpt"))
        resumable = [p for p in earlier if not p.name.startswith("nonfinite-")]
        if resumable and not overwrite and not _resumes(ckpt_path, checkpoint_dirs):
            names = ", ".join(str(p) for p in resumable[:4]) + (", ..." if len(resumable) > 4 else "")
            raise RunFolderError(
                f"{root} already holds an earlier run's checkpoints ({names}): resume it with "
                "--ckpt_path last, start over with --overwrite true (deletes them), or choose "
                "another --trainer.default_root_dir"
            )
        if earlier and overwrite and not _resumes(ckpt_path, checkpoint_dirs):
            for path in earlier:
                path.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _resumes(ckpt_path: str | None, checkpoint_dirs: list[str]) -> bool:
    """Whether `ckpt_path` continues the run of these folders (``last``/``best``/``hpc`` or a file in them)."""
    if ckpt_path is None:
        return False
    if ckpt_path in ("last", "best", "hpc", "registry"):
        return True
    here = {Path(d).resolve() for d in checkpoint_dirs}
    return Path(ckpt_path).resolve().parent in here
