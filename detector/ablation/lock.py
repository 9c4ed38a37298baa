"""One ablation per folder: an OS lock on ``DIR/.ablation.lock``, held for the ablation's lifetime.

Two ablations writing one folder would train the same runs twice and interleave their files.
The lock is the kernel's (``fcntl.flock``, exclusive, non-blocking) on an open descriptor of
the lock file, so:

- taking it is atomic: of any number of processes racing for it, at most one holds it;
- it is released by the kernel when the holder exits in any way (return, exception,
  ``kill -9``, a crash): there is no stale lock to detect or take over;
- the file's *content* (pid, host, start time, as JSON) is information for the error
  message only and is never trusted: an empty, truncated or garbage file blocks nobody.

The file is never deleted: deleting a locked file would let a newcomer lock a fresh file of
the same name while the old holder still runs (two holders). ``flock`` is POSIX (Linux,
macOS), which is what the project runs on; on a network file system it is as reliable as
that file system's locking (Linux NFS emulates it with byte-range locks).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".ablation.lock"


class AblationBusy(ValueError):
    """Another process holds the folder's lock; the message names the folder and the holder."""


class AblationLock:
    """``with AblationLock(out):`` holds ``out/.ablation.lock`` or raises `AblationBusy`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with AblationLock(folder):
    ...     try:
    ...         AblationLock(folder).__enter__()
    ...     except AblationBusy as e:
    ...         print(str(e).split(";")[0].startswith("another ablation"))
    True
    >>> with AblationLock(folder):  # released on exit: free again
    ...     pass
    """

    def __init__(self, out: Path):
        self.folder = Path(out)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError (EWOULDBLOCK) when held; anything else: cannot lock here
            os.close(fd)
            raise AblationBusy(f"another ablation is running in {self.folder} ({self.holder()}); wait for it to "
                               "finish, or use another --out") from None
        info = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, info.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> bool:
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)  # nobody holds it now; the next holder writes its own info
            finally:
                os.close(self._fd)  # closing the descriptor releases the lock
                self._fd = None
        return False

    def holder(self) -> str:
        """What the lock file says about its holder, for messages: ``pid 12 on host since T``."""
        try:
            info = json.loads(self.path.read_text())
            return f"pid {int(info['pid'])} on {info['host']} since {info['since']}"
        except (OSError, ValueError, TypeError, KeyError):
            return "holder not recorded yet"
