"""Who may work on what in an ablation folder: one OS lock per run, one around the tables.

- ``DIR/runs/<run>/.run.lock`` (`RunLock`, non-blocking): held by the launcher or worker
  that executes the run, from before its first file is read to after run.json is written.
  Any number of launchers (``--launcher local --jobs N`` in several shells, SLURM array
  tasks, a mix) can share one folder: a run locked by another is skipped ("running
  elsewhere"), never executed twice at once, and a crashed holder's lock is released by
  the kernel, so a rerun resumes the run.
- ``DIR/.results.lock`` (`results_lock`, blocking, held for a moment): around writing
  results.{csv,json,md}, runs.csv, ablation.png and the quantization analysis, so two
  launchers never interleave those files. Each write reads the runs' files at that moment:
  the last writer's table holds everything finished by then.

Why an OS lock (atomic, released on any exit, content never trusted) is in
`detector.folder_lock`. On a network file system (a cluster's shared disk) ``flock`` is as
reliable as that file system's locking (NFSv4 and Lustre/GPFS with flock enabled: yes).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from detector.folder_lock import FolderBusy, FolderLock

RUN_LOCK_NAME = ".run.lock"
RESULTS_LOCK_NAME = ".results.lock"
RunBusy = FolderBusy  # raised by RunLock.acquire when another process holds the run


class RunLock(FolderLock):
    """``with RunLock(run_dir):`` holds ``run_dir/.run.lock`` or raises `RunBusy`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with RunLock(folder):
    ...     try:
    ...         RunLock(folder).acquire()
    ...     except RunBusy as e:
    ...         print(str(e).startswith(f"run {folder.name} is running elsewhere"))
    True
    >>> with RunLock(folder):  # released on exit: free again
    ...     pass
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        name = Path(run_dir).name
        super().__init__(run_dir, RUN_LOCK_NAME, f"run {name} is running elsewhere ({{holder}})", "--out")

    def is_held_elsewhere(self) -> bool:
        """Probe: is the run locked by another process now? (takes and drops the lock when free)"""
        if not self.path.exists():
            return False
        try:
            self.acquire()
        except RunBusy:
            return True
        self.release()
        return False


@contextlib.contextmanager
def results_lock(out: str | os.PathLike) -> Iterator[None]:
    """Hold ``out/.results.lock``, waiting for another launcher that writes the tables now."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out / RESULTS_LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        raise FolderBusy(f"cannot write to {out}: {err.strerror or err} (fix: make it writable or choose "
                         "another --out)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # per open file: also excludes other threads of this process
        yield
    finally:
        os.close(fd)
