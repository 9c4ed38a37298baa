"""train.py's checkpoint files: written atomically, under stable names, also on a diverged loss.

- `AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin; `detector.cli` installs it on
  every trainer it builds) serializes to memory, then writes through
  `detector.io.atomic_write_bytes` (temp file in the destination folder, fsync,
  ``os.replace``): a process killed at any moment leaves the old complete file or the new
  complete one under the final name, never a truncated one.
- `default_checkpoint_callbacks`: ``best.ckpt`` and ``last.ckpt``.
- `nonfinite_checkpoint_path`: where the weights go when the loss turns non-finite.

What a checkpoint holds, and reading it back: `detector.checkpointing`.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from detector.io import atomic_write_bytes

if TYPE_CHECKING:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are atomic and durable (temp file, fsync, os.replace).

    Remote paths (``s3://`` etc.) go through Lightning's own writer unchanged.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        buffer = io.BytesIO()  # serialize first: an error in torch.save leaves no file at all
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getbuffer())




def nonfinite_checkpoint_path(trainer: pl.Trainer) -> str:
    """Where the weights are saved when the loss goes non-finite: next to the regular
    checkpoints (the first ModelCheckpoint's folder), else under the trainer's root dir."""
    folder = None
    for callback in trainer.checkpoint_callbacks:
        folder = getattr(callback, "dirpath", None)
        if folder:
            break
    folder = folder or os.path.join(trainer.default_root_dir, "checkpoints")
    return os.path.join(str(folder), f"nonfinite-step={trainer.global_step}.ckpt")


def default_checkpoint_callbacks(root_dir: str, best: bool = True) -> list[ModelCheckpoint]:
    """train.py's two checkpoints, both in ``ROOT/checkpoints/`` under stable names:

    - ``best.ckpt``: the highest ``val/bbox_AP`` so far (overwritten when it improves);
    - ``last.ckpt``: written after every epoch *and* when the run is interrupted
      (SIGTERM, Ctrl+C, an exception such as a non-finite loss), so
      ``--ckpt_path last`` resumes with at most one epoch lost to a SIGKILL and nothing
      lost to a SIGTERM.

    Fixed names (no version counter) so that scripts and the README can name the files.
    ``best=False`` (a run without validation) leaves out ``best.ckpt``.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    folder = os.path.join(root_dir, "checkpoints")
    best_cb = ModelCheckpoint(dirpath=folder, filename="best", monitor="val/bbox_AP", mode="max", save_top_k=1,
                           auto_insert_metric_name=False, enable_version_counter=False)
    # save_on_train_epoch_end: every epoch, also when validation runs only every N epochs.
    last = ModelCheckpoint(dirpath=folder, filename="last", monitor=None, save_top_k=1, save_on_train_epoch_end=True,
                           enable_version_counter=False, save_on_exception=True)
    return [best_cb, last] if best else [last]
