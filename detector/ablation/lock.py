"""One ablation per folder: `detector.folder_lock.FolderLock` on ``DIR/.ablation.lock``, held
for the ablation's lifetime.

Two ablations writing one folder would train the same runs twice and interleave their files.
Why an OS lock (atomic, released by the kernel on any exit, content never trusted) is in
`detector.folder_lock`.
"""

from __future__ import annotations

from pathlib import Path

from detector.folder_lock import FolderBusy, FolderLock

LOCK_NAME = ".ablation.lock"
AblationBusy = FolderBusy  # the name the ablation's callers and tests know


class AblationLock(FolderLock):
    """``with AblationLock(out):`` holds ``out/.ablation.lock`` or raises `AblationBusy`.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with AblationLock(folder):
    ...     try:
    ...         AblationLock(folder).acquire()
    ...     except AblationBusy as e:
    ...         print(str(e).startswith("another ablation is running in"))
    True
    >>> with AblationLock(folder):  # released on exit: free again
    ...     pass
    """

    def __init__(self, out: str | Path) -> None:
        super().__init__(out, LOCK_NAME, "another ablation is running in {folder} ({holder})", "--out")
