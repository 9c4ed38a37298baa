"""Did a run's training reach its whole schedule? Read from its checkpoint, never from an exit code.

A training stopped early (SIGTERM from a scheduler or a user, Ctrl-C, an exception) still
leaves a loadable ``last.ckpt``, and older train.py versions even exited 0 after a SIGTERM.
Tabulating such a run would put a model trained for 2 of 6 steps beside fully trained ones,
with nothing in the table to tell them apart. So before a run counts, the ablation reads
its final checkpoint and requires ``global_step`` to equal the number of optimizer steps
the schedule asks for:

1. ``checkpoint["detector_run"] = {"finished", "global_step", "expected_steps"}``, which
   train.py writes into every checkpoint (``finished`` only once the schedule completed;
   ``expected_steps`` is Lightning's ``Trainer.estimated_stepping_batches``). Read through
   ``detector.checkpointing.run_state`` when it exists, else from the file directly.
2. Checkpoints without that key (train.py before it existed): the schedule train.py was
   given, from the ``config.yaml`` LightningCLI saves into the run folder (``trainer.max_steps``,
   ``trainer.max_epochs``), against Lightning's own loop counters in the checkpoint (how many
   epochs were processed to their end, how many optimizer steps the last one took). A
   checkpoint saved mid-epoch has processed one epoch fewer than it started, so it never
   passes for a finished one.

Anything that cannot be read or checked counts as *not finished*: the cost of a false "no"
is a resume that ends at once, the cost of a false "yes" is a wrong number in the table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.checkpointing import RUN_STATE_KEY


@dataclass(frozen=True)
class TrainingProgress:
    """How far the training behind ``checkpoint`` got, and whether that is the whole schedule.

    ``source`` says where ``expected_steps`` comes from: ``"detector_run"`` (train.py's own
    record) or ``"config.yaml"`` (the fallback of the module doc). ``problem`` is set when
    the checkpoint could not be judged (then ``complete`` is False).
    """

    checkpoint: str
    global_step: int | None
    expected_steps: int | None
    finished: bool
    source: str
    problem: str | None = None

    @property
    def complete(self) -> bool:
        """Finished, with a known schedule, and the checkpoint's step is exactly that schedule."""
        return (self.problem is None and self.finished and self.expected_steps is not None
                and self.global_step == self.expected_steps)

    def describe(self) -> str:
        """``"step 2 of 6 (not finished)"``, for messages."""
        if self.problem:
            return f"cannot tell whether training finished: {self.problem}"
        of = "?" if self.expected_steps is None else str(self.expected_steps)
        state = "finished" if self.finished else "not finished"
        return f"step {self.global_step} of {of} ({state}; per {self.source})"

    def stamp(self) -> dict:
        """What run.json keeps as the evidence it was verified (see `stamp_problem`)."""
        return {"global_step": self.global_step, "expected_steps": self.expected_steps, "source": self.source}


def stamp_problem(stamp: Any, global_step: Any) -> str | None:
    """Why a run.json ``verified`` stamp is not evidence of a complete run, or None when it is."""
    if not isinstance(stamp, dict):
        return f"'verified' is {type(stamp).__name__}, not an object"
    steps, expected = stamp.get("global_step"), stamp.get("expected_steps")
    if not _is_int(steps) or not _is_int(expected) or not isinstance(stamp.get("source"), str):
        return f"'verified' needs integer global_step and expected_steps and a source, got {stamp}"
    if steps != expected:
        return f"verified step {steps} is not the schedule's {expected}"
    if global_step != steps:
        return f"global_step {global_step} differs from the verified step {steps}"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def training_progress(checkpoint: str | os.PathLike, train_dir: str | os.PathLike | None = None) -> TrainingProgress:
    """Judge ``checkpoint`` (see the module doc); ``train_dir`` is where train.py saved its
    ``config.yaml`` (needed only for checkpoints without train.py's run record). Never raises
    for a bad file: the problem is in the result."""
    path = os.fspath(checkpoint)
    try:
        state, ckpt = _run_state(path)
    except ValueError as e:
        return TrainingProgress(path, None, None, False, RUN_STATE_KEY, problem=str(e))
    if state is not None:
        return _from_run_state(path, state)
    return _from_schedule(path, ckpt, Path(train_dir) if train_dir is not None else Path(path).parent)


def _run_state(path: str) -> tuple[Any, dict | None]:
    """``(run state or None, the loaded checkpoint or None)``; ValueError for an unreadable file."""
    from detector import checkpointing

    state = checkpointing.run_state(path)
    if state["expected_steps"] is not None:
        return state, None
    # run_state reads a checkpoint without the record as "not finished, schedule unknown";
    # look at the file itself, to judge such a one by the schedule instead (module doc, 2)
    ckpt = checkpointing.load_checkpoint(path)
    return ckpt.get(RUN_STATE_KEY), ckpt


def _from_run_state(path: str, state: Any) -> TrainingProgress:
    if not isinstance(state, Mapping):
        return TrainingProgress(path, None, None, False, RUN_STATE_KEY, problem=f"{RUN_STATE_KEY} is not a dict: {state!r}")
    finished, step, expected = state.get("finished"), state.get("global_step"), state.get("expected_steps")
    if not isinstance(finished, bool) or not _is_int(step) or not (expected is None or _is_int(expected)):
        return TrainingProgress(path, None, None, False, RUN_STATE_KEY, problem=f"{RUN_STATE_KEY} has wrong types: {state}")
    return TrainingProgress(path, step, expected, finished, RUN_STATE_KEY)


def _from_schedule(path: str, ckpt: dict, train_dir: Path) -> TrainingProgress:
    """The fallback for checkpoints without ``detector_run`` (module doc, 2)."""
    step = ckpt.get("global_step")
    if not _is_int(step):
        return TrainingProgress(path, None, None, False, "config.yaml", problem="the checkpoint has no global_step")
    max_epochs, max_steps, problem = _schedule(train_dir)
    if problem:
        return TrainingProgress(path, step, None, False, "config.yaml", problem=problem)
    fit = (ckpt.get("loops") or {}).get("fit_loop") or {}
    started = _dig(fit, "epoch_progress", "total", "started")
    epochs_done = _dig(fit, "epoch_progress", "total", "processed")  # epochs run to their last batch
    epoch_steps = _dig(fit, "epoch_loop.automatic_optimization.optim_progress", "optimizer", "step", "current",
                       "completed")  # optimizer steps in the current epoch so far
    if not all(_is_int(v) for v in (started, epochs_done, epoch_steps)):
        return TrainingProgress(path, step, None, False, "config.yaml",
                                problem="the checkpoint has no Lightning loop counters (loops.fit_loop)")
    # Lightning stops at max_steps optimizer steps or after max_epochs whole epochs, whichever
    # comes first; every whole epoch takes the same number of steps, known once one ended.
    at_epoch_end = epochs_done == started
    before_this_epoch = step if at_epoch_end else step - epoch_steps  # steps of the whole epochs
    per_epoch = epoch_steps if at_epoch_end else before_this_epoch // max(epochs_done, 1)
    budgets = [max_steps] if max_steps > 0 else []
    if max_epochs >= 0 and epochs_done >= 1 and per_epoch * epochs_done == before_this_epoch:
        budgets.append(max_epochs * per_epoch)
    finished = (max_steps > 0 and step >= max_steps) or (0 <= max_epochs <= epochs_done)
    if max_steps <= 0 and max_epochs < 0:
        return TrainingProgress(path, step, None, False, "config.yaml",
                                problem="config.yaml sets neither max_steps nor max_epochs")
    return TrainingProgress(path, step, min(budgets) if budgets else None, finished, "config.yaml")


def _schedule(train_dir: Path) -> tuple[int, int, str | None]:
    """``(max_epochs, max_steps, problem)`` from the newest config.yaml under ``train_dir``
    (-1 = no limit, Lightning's convention; max_epochs None means 1000 without max_steps)."""
    import yaml

    found = sorted(train_dir.rglob("config.yaml"), key=lambda p: p.stat().st_mtime) if train_dir.is_dir() else []
    if not found:
        return -1, -1, f"no train.py config.yaml under {train_dir} to read the schedule from"
    try:
        trainer = (yaml.safe_load(found[-1].read_text()) or {}).get("trainer") or {}
        max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    except (OSError, ValueError, AttributeError, yaml.YAMLError) as e:
        return -1, -1, f"cannot read the schedule from {found[-1]}: {e}"
    max_steps = -1 if max_steps is None else max_steps
    if max_epochs is None:
        max_epochs = 1000 if max_steps == -1 else -1  # Lightning's defaults
    if not _is_int(max_epochs) or not _is_int(max_steps):
        return -1, -1, f"{found[-1]}: trainer.max_epochs / max_steps are not integers"
    return max_epochs, max_steps, None


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, Mapping):
            return None
        d = d.get(k)
    return d
