"""One owner per folder: an OS lock on a file in it, held from `FolderLock.acquire` to `release`.

Used by train.py (``ROOT/.fit.lock``, `detector.lit.run_folder`) and by the ablation (one
lock per run, ``OUT/runs/<run>/.run.lock``, and ``OUT/.results.lock`` while the tables are
written; `detector.ablation.lock`): two processes writing one folder would interleave their
files and both report success.

Why the kernel's lock and not a pid file: ``fcntl.flock`` (exclusive, non-blocking) on an
open descriptor of the lock file

- is taken atomically: of any number of processes racing for it, at most one holds it (a
  pid file needs a "stale lock" takeover, which lets two holders in);
- is released by the kernel when the holder exits in any way (return, exception,
  ``kill -9``, a crash): there is no stale lock to detect.

The file's *content* (pid, host, start time, as JSON) is information for the error message
only and is never trusted: an empty, truncated or garbage file blocks nobody. The file is
never deleted: deleting a locked file would let a newcomer lock a fresh file of the same name
while the old holder still runs. ``flock`` is POSIX (Linux, macOS); on a network file system
it is as reliable as that file system's locking.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class FolderBusy(ValueError):
    """Another process holds the folder's lock, or the lock file cannot be created; the
    message (one line) names the folder, the holder and the way out."""


class FolderLock:
    """Holds ``folder/name`` from `acquire` to `release` (or as a context manager).

    Args:
        folder: the folder to own (created if missing).
        name: the lock file's name inside it.
        busy: how the refusal starts, with ``{folder}`` and ``{holder}`` filled in, e.g.
            ``"{folder} is in use by another training ({holder})"``.
        option: the command-line option that chooses the folder, named in the fix text.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with FolderLock(folder, ".x.lock", "{folder} is busy ({holder})", "--out"):
    ...     try:
    ...         FolderLock(folder, ".x.lock", "{folder} is busy ({holder})", "--out").acquire()
    ...     except FolderBusy as err:
    ...         print(str(err).endswith("; wait for it to end, or choose another --out"))
    True
    >>> FolderLock(folder, ".x.lock", "busy", "--out").acquire().release()  # free again
    """

    def __init__(self, folder: str | os.PathLike, name: str, busy: str, option: str) -> None:
        self.folder = Path(folder)
        self.path = self.folder / name
        self.busy, self.option = busy, option
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise FolderBusy(
                f"cannot write to {self.folder}: {err.strerror or err} (fix: make it writable or choose "
                f"another {self.option})"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError (EWOULDBLOCK) when held
            os.close(fd)
            message = self.busy.format(folder=self.folder, holder=self.holder())
            raise FolderBusy(f"{message}; wait for it to end, or choose another {self.option}") from None
        info = json.dumps(
            {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        )
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # nobody holds it now; the next holder writes its own info
            finally:
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> bool:
        self.release()
        return False

    def holder(self) -> str:
        """What the lock file says about its holder: ``pid 12 on host since T`` (information only)."""
        try:
            info = json.loads(self.path.read_text())
            return f"pid {int(info['pid'])} on {info['host']} since {info['since']}; lock file {self.path}"
        except (OSError, ValueError, TypeError, KeyError):
            return f"holder not recorded; lock file {self.path}"
