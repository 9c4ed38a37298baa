"""Checkpoint files that are never half-written, and that load without running pickle code.

Writing: `AtomicCheckpointIO` (a Lightning ``CheckpointIO`` plugin; `detector.cli` installs
it on every trainer it builds) serializes to a temporary file *in the destination folder*,
fsyncs it, then ``os.replace``-s it over the destination and fsyncs the folder. A
process killed at any moment (SIGKILL, power loss after the fsync) leaves either the old
complete file or the new complete file under the final name, never a truncated one; at
worst a stray ``.tmp-*`` file, which no ``last*.ckpt`` pattern matches. Same folder because
``os.replace`` is atomic only within one file system. `atomic_write_bytes` does the same for
any file (evaluate.py's JSON).

Which checkpoints: `default_checkpoint_callbacks` (``best.ckpt`` and ``last.ckpt``).

Reading: `load_checkpoint` is ``torch.load(weights_only=True)``: tensors, numbers,
strings, lists and dicts only. A checkpoint from the internet cannot run code on load. Any
other file gives a ValueError that says what the file is not.

Whether a run is complete: every checkpoint train.py writes carries
``checkpoint["detector_run"] = {"finished": bool, "global_step": int, "expected_steps": int | None}``
(written by `detector.lit.run_state`); `run_state` reads it. ``finished`` is True only in a
checkpoint saved once the schedule was complete (``global_step`` reached ``expected_steps``,
the optimizer steps that ``max_steps`` / ``max_epochs`` make), never in one saved because
the run was stopped (signal, Ctrl-C, error).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

if TYPE_CHECKING:  # pytorch_lightning is imported lazily: a writer process needs only lightning_fabric
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace `path` atomically with what `write(file)` writes (see module doc).

    Raises OSError with the original errno (so ``PermissionError`` stays ``PermissionError``)
    and a message that names the destination, ``cannot write PATH: No space left on device``:
    the OS's own message for ENOSPC, EROFS, EDQUOT... names no file, or only the temp file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".tmp-{os.path.basename(path)}-", suffix=".partial")
    except OSError as err:
        raise _naming(path, err) from err
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the mode a plain open() would
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(err, OSError):
            raise _naming(path, err) from err
        raise
    _fsync_dir(folder)


def _naming(path: str, err: OSError) -> OSError:
    """`err` as a new OSError of the same errno whose message names `path` (one line)."""
    reason = err.strerror or str(err) or type(err).__name__
    message = f"cannot write {path}: {reason}"
    return OSError(err.errno, message) if err.errno is not None else OSError(message)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """`atomic_write` of a bytes object."""
    atomic_write(path, lambda f: f.write(data))


def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not every platform can open a folder.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong.

    Raises ValueError when the file does not exist, is not a torch file, holds anything but
    plain data (a pickled class: loading it would mean running its code), or is not a dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist (or is not a file)")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... by file kind
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"{path!r} is not a checkpoint that loads safely (torch.load(weights_only=True) failed: "
            f"{first_line}). Give a .ckpt file written by train.py; files that need arbitrary "
            "pickle code are refused on purpose."
        ) from None
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{path!r} holds a {type(checkpoint).__name__}, not a checkpoint dict")
    return checkpoint


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


RUN_STATE_KEY = "detector_run"


def run_state(path: str | os.PathLike) -> dict[str, Any]:
    """``{"finished": bool, "global_step": int, "expected_steps": int | None}`` of a checkpoint.

    A checkpoint from before this record existed reads as not finished (``expected_steps``
    None): resume it rather than trust it. Raises ValueError as `load_checkpoint` does.

    Example (what the ablation asks before recording a run):
        >>> state = run_state("runs/x/checkpoints/last.ckpt")  # doctest: +SKIP
        >>> state["finished"] and state["global_step"] == state["expected_steps"]  # doctest: +SKIP
        True
    """
    checkpoint = load_checkpoint(path)
    stored = checkpoint.get(RUN_STATE_KEY)
    if not isinstance(stored, dict):
        return {"finished": False, "global_step": int(checkpoint.get("global_step", 0)), "expected_steps": None}
    expected = stored.get("expected_steps")
    return {"finished": stored.get("finished") is True, "global_step": int(stored.get("global_step", 0)),
            "expected_steps": None if expected is None else int(expected)}
