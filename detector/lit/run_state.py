"""What a checkpoint says about its run, and what makes a resumed run equal an uninterrupted one.

`run_state_of` is the ``checkpoint["detector_run"]`` record (see `detector.checkpointing`):
whether the schedule was complete when the checkpoint was saved. `DetectorModule` writes it
into every checkpoint, whoever saves it.

`RunStateCallback` (train.py adds it to every fit) does the rest:

- **RNG states**: the global torch (CPU and every CUDA device), numpy and Python RNG states go
  into each checkpoint (``checkpoint["detector_rng"]``) and are put back when a resumed fit
  starts training. The model draws from them (the RPN and ROI heads sample boxes with
  ``torch.randperm``); the data does not (`detector.data.sampler` seeds each sample from
  ``(seed, epoch, index)`` and saves the loader's position). Together: a run resumed from
  any checkpoint makes the same steps as one that never stopped, bit for bit on the CPU.
- **Stopping**: Lightning stops at the end of the current step on SIGTERM and saves
  ``last.ckpt``; this does the same on the first Ctrl-C (SIGINT), where Lightning would raise
  KeyboardInterrupt wherever it lands, possibly mid optimizer step. A second Ctrl-C ends the
  process at once (exit 130) without writing anything, so the last complete ``last.ckpt``
  stays. `stop_signal` records the signal, from which train.py's exit code is
  ``128 + signum`` (143 for SIGTERM, 130 for SIGINT).

Under DDP (``--trainer.strategy ddp``) the same holds per rank:

- **RNG states per rank**: only rank 0 writes the checkpoint, so every rank's states are gathered
  into it (``checkpoint["detector_rng"]["per_rank"]``, a list by rank; the top level stays rank
  0's, the one-process format) and each rank takes its own back on resume. Without this, rank 1
  would resume with rank 0's draws.
- **Seeds per rank**: ``seed_everything`` gives every rank the same seed, so every rank's model
  would draw the same random numbers (the same RPN / ROI sampling pattern on different images).
  A fresh DDP fit reseeds rank r's global RNGs with ``seed + r`` when training starts (rank 0 keeps
  the one-process stream); the model weights are not affected (DDP starts every rank from rank
  0's weights) and neither is the data (`detector.data.sampler` seeds from ``(seed, epoch, index)``).
- **SIGTERM**: Lightning's own handler forwards the signal to the other ranks and runs a
  collective inside the handler; when several ranks are signalled (a cluster's preemption
  signals every task, and Lightning's forwarding signals them again) the ranks run different
  numbers of collectives and the fit hangs. Under DDP the handler here only raises the flag (as
  for Ctrl-C); Lightning's training loop broadcasts rank 0's flag before every step, so every rank
  stops after the same step and rank 0 writes ``last.ckpt``.

Exactness has limits, all outside the default setup: on a GPU the resumed run makes the
same steps but the GPU's kernels are not bit-deterministic (not even between two
uninterrupted runs); a checkpoint written by an older version (without loader position or
RNG states) resumes with a new order and new random draws; a resume with another
``data.batch_size``, ``data.seed`` or number of devices gets other batches. The number of
loader workers does not matter (tests/lit/test_run_state.py).
"""

from __future__ import annotations

import math
import os
import random
import signal
import sys
import threading
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerStatus
from pytorch_lightning.utilities.rank_zero import rank_zero_info

from detector.checkpointing import run_record

RNG_KEY = "detector_rng"


def expected_steps(trainer: pl.Trainer) -> int | None:
    """The optimizer steps at which this fit's schedule ends, or None when unknown / endless.

    ``max_epochs`` x steps per epoch (``ceil(batches / accumulate_grad_batches)``: Lightning
    steps on a short accumulation at an epoch's end) and ``max_steps``, whichever is smaller.
    """
    candidates = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        candidates.append(int(trainer.max_steps))
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs >= 0 and math.isfinite(batches):
        per_epoch = math.ceil(int(batches) / max(int(trainer.accumulate_grad_batches), 1))
        candidates.append(int(trainer.max_epochs) * per_epoch)
    return min(candidates) if candidates else None


def run_state_of(trainer: pl.Trainer) -> dict[str, Any]:
    """``{"finished", "global_step", "expected_steps"}`` for a checkpoint saved now.

    ``finished`` needs the schedule complete *and* the fit not stopping for another reason
    (a signal, Ctrl-C or an exception: Lightning's status INTERRUPTED).
    """
    expected = expected_steps(trainer)
    stopped = trainer.received_sigterm or trainer.state.status == TrainerStatus.INTERRUPTED
    finished = not stopped and expected is not None and trainer.global_step >= expected
    return run_record(finished, trainer.global_step, expected)


def rng_states() -> dict[str, Any]:
    """The global RNG states as plain data (tensors, ints, lists: loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "torch.cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(gauss),
        ],
        "python": [int(version), list(internal), gauss_next],
    }


def set_rng_states(states: dict[str, Any]) -> None:
    """Put back what `rng_states` returned (CUDA states for the devices both runs have)."""
    torch.set_rng_state(states["torch"])
    cuda = states.get("torch.cuda") or []
    if cuda and torch.cuda.is_available():
        for device, state in enumerate(cuda[: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(state, device)
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _finish_restarted_epoch_without_validation(trainer: pl.Trainer) -> bool:
    """Work around Lightning 2.x training one batch too many after an epoch-end checkpoint.

    A checkpoint saved at an epoch's end (``last.ckpt`` every epoch, or on SIGTERM after the
    epoch's last batch) restores the epoch loop with all its batches done. The loop then
    waits for that epoch's validation before it ends the epoch (``_is_validation_done``);
    when the epoch does not validate (``limit_val_batches: 0``, as in the quickstart and the
    ablation, or ``check_val_every_n_epoch`` skipping it) that never happens, so it trains one
    more batch in the finished epoch: one step more than the schedule, with the data of the
    next epoch's first batch, and every later step shifted. Marking the validation as done
    ends the epoch as an uninterrupted run does (a test compares the weights); the loop's
    restart flag, which its (now empty) epoch would have cleared, is cleared at that epoch's
    end (`RunStateCallback.on_train_epoch_end`), and so is the epoch's second "processed"
    count (from which Lightning numbers the next epoch for the sampler's ``set_epoch``).
    Returns whether it applied.
    """
    loop = trainer.fit_loop.epoch_loop
    val_loop = getattr(loop, "val_loop", None)
    if (
        loop.restarting
        and val_loop is not None
        and hasattr(val_loop, "_has_run")
        and loop.batch_progress.current.completed >= trainer.num_training_batches
        and not loop._should_check_val_epoch()
    ):
        val_loop._has_run = True
        return True
    return False


PER_RANK = "per_rank"


def _world(trainer: pl.Trainer) -> tuple[int, int]:
    """``(rank, world size)`` of a running DDP fit, ``(0, 1)`` otherwise."""
    world = int(getattr(trainer, "world_size", 1) or 1)
    return (int(trainer.global_rank), world) if world > 1 else (0, 1)


def gather_rng_states(trainer: pl.Trainer) -> dict[str, Any]:
    """This rank's `rng_states`, plus every rank's under ``"per_rank"`` when the fit runs on several
    processes (a collective: Lightning saves checkpoints on every rank, rank 0 writes them)."""
    states = rng_states()
    world = _world(trainer)[1]
    if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
        gathered: list[Any] = [None] * world
        torch.distributed.all_gather_object(gathered, states)
        states = {**gathered[0], PER_RANK: gathered}
    return states


def states_for_rank(states: dict[str, Any], rank: int, world: int) -> dict[str, Any]:
    """This rank's RNG states from a checkpoint's ``detector_rng``: its own entry when the checkpoint
    was written by as many ranks, else the top level (rank 0's; another device count gets other draws)."""
    per_rank = states.get(PER_RANK)
    if per_rank and len(per_rank) == world:
        return per_rank[rank]
    return {k: v for k, v in states.items() if k != PER_RANK}


def seed_rank(rank: int, base_seed: int) -> None:
    """Global torch / numpy / Python RNGs of rank `rank` seeded with ``base_seed + rank`` (see the module doc)."""
    seed = int(base_seed) + int(rank)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


class RunStateCallback(pl.Callback):
    """RNG states in checkpoints and back on resume; Ctrl-C stops like SIGTERM (see the module doc).

    Attributes:
        stop_signal: the signal that stopped (or arrived during) the fit, else None.
    """

    def __init__(self) -> None:
        self.stop_signal: int | None = None
        self._rng_to_restore: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._previous_sigint: Any = None
        self._previous_sigterm: Any = None
        self._ending_restarted_epoch = False

    # ------------------------------------------------------------------ RNG
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[RNG_KEY] = gather_rng_states(trainer)

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        self._rng_to_restore = checkpoint.get(RNG_KEY)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The last moment before the first resumed step: nothing between here and the step draws from
        # the global RNGs, so the resumed run starts from exactly where the saved one stopped.
        rank, world = _world(trainer)
        if self._rng_to_restore is not None:
            set_rng_states(states_for_rank(self._rng_to_restore, rank, world))
            self._rng_to_restore = None
        elif rank > 0 and trainer.global_step == 0:  # a fresh DDP fit: each rank its own draws
            seed_rank(rank, int(os.environ.get("PL_GLOBAL_SEED", "0") or 0))
        self._ending_restarted_epoch = _finish_restarted_epoch_without_validation(trainer)
        self._install_sigint(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._ending_restarted_epoch:  # see _finish_restarted_epoch_without_validation
            trainer.fit_loop.epoch_loop.restarting = False
            progress = trainer.fit_loop.epoch_progress  # counted "processed" twice (before the save, and now)
            progress.current.processed, progress.total.processed = progress.current.started, progress.total.started
            self._ending_restarted_epoch = False

    # ------------------------------------------------------------------ signals
    def _install_sigint(self, trainer: pl.Trainer) -> None:
        # Installed once training runs: Lightning (re)arms its SIGTERM flag just before.
        if threading.current_thread() is threading.main_thread() and self._trainer is None:
            self._trainer = trainer
            self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)
            if _world(trainer)[1] > 1:  # see "SIGTERM" in the module doc
                self._previous_sigterm = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        """DDP: raise Lightning's flag only (no forwarding, no collective inside a signal handler)."""
        if self.stop_signal is None:
            self.stop_signal = signal.SIGTERM
        self._trainer._signal_connector.received_sigterm = True  # type: ignore[union-attr]

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_signal is not None:
            print(
                "\nSecond Ctrl-C: stopping now, writing nothing (the last complete last.ckpt stays).",
                file=sys.stderr,
                flush=True,
            )
            os._exit(128 + signal.SIGINT)
        self.stop_signal = signal.SIGINT
        rank_zero_info("\nCtrl-C: stopping after this step and saving last.ckpt (Ctrl-C again to stop at once).")
        # Lightning's SIGTERM flag: the loops stop at the next step boundary and save last.ckpt.
        self._trainer._signal_connector.received_sigterm = True  # type: ignore[union-attr]

    def _uninstall_sigint(self) -> None:
        if self._trainer is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint or signal.default_int_handler)
            if self._previous_sigterm is not None and signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._previous_sigterm)  # (unless Lightning restored its originals first)
            self._previous_sigterm = None
        self._trainer = None

    def _note_sigterm(self, trainer: pl.Trainer) -> None:
        if self.stop_signal is None and trainer.received_sigterm:
            self.stop_signal = signal.SIGTERM

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._note_sigterm(trainer)
        if self.stop_signal is None and isinstance(exception, KeyboardInterrupt):  # Ctrl-C before training ran
            self.stop_signal = signal.SIGINT
        self._uninstall_sigint()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._note_sigterm(trainer)
        self._uninstall_sigint()
