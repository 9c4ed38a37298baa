"""A checkpoint writer that records who wrote what, for the DDP tests' subprocesses.

`RecordingCheckpointIO` is `AtomicCheckpointIO` (train.py's writer) that also appends
``<rank> <path>`` to the file named by `log` for every checkpoint it writes; a
``--trainer.plugins`` flag puts it in place of the default one (tests/lit/test_ddp.py runs
train.py with ``tests/lit`` on ``PYTHONPATH``).
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist

from detector.lit.checkpoints import AtomicCheckpointIO


class RecordingCheckpointIO(AtomicCheckpointIO):
    def __init__(self, log: str) -> None:
        super().__init__()
        self.log = log

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        with open(self.log, "a") as f:
            f.write(f"{rank} {path}\n")
        super().save_checkpoint(checkpoint, path, storage_options)
