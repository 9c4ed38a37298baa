"""Learning-rate schedules as a per-step multiplier: linear warm-up, then cosine / steps / constant.

Detection training is unstable for the first few hundred steps at full learning rate
(the RPN and box losses start large and noisy), hence the linear warm-up that every
Faster R-CNN recipe uses (torchvision's references, detectron2's WarmupMultiStepLR).
After it, one of:

- ``"cosine"``: half a cosine from 1 down to ``min_factor`` at the last step;
- ``"step"``: multiply by ``gamma`` at each fraction of training in ``milestones``
  (``(0.67, 0.89)`` = detectron2's 1x schedule, 60k and 80k of 90k iterations);
- ``"constant"``: 1.

The schedule is expressed in optimizer steps and built once the trainer knows the total
(`Trainer.estimated_stepping_batches`), so the same YAML works for any dataset size or
number of devices. It runs through `torch.optim.lr_scheduler.LambdaLR` stepped every
optimizer step (Lightning's ``"interval": "step"``). The multiplier is a
`functools.partial` of a module-level function: `LambdaLR.state_dict()` then stores
nothing but plain numbers, so checkpoints stay loadable with ``weights_only=True``, and
a resumed run takes its schedule from its own (possibly longer) configuration.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

Schedule = Literal["cosine", "step", "constant"]
SCHEDULES = ("cosine", "step", "constant")


def lr_factor(
    step: int,
    *,
    total_steps: int,
    schedule: Schedule,
    warmup_steps: int,
    warmup_factor: float,
    milestones: Sequence[float],
    gamma: float,
    min_factor: float,
) -> float:
    """The learning-rate multiplier after `step` optimizer steps (0-based).

    >>> f = functools.partial(lr_factor, total_steps=100, schedule="cosine", warmup_steps=10,
    ...                       warmup_factor=0.1, milestones=(), gamma=0.1, min_factor=0.0)
    >>> round(f(0), 3), round(f(10), 3), round(f(100), 3)
    (0.1, 1.0, 0.0)
    """
    if schedule == "cosine":
        progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
        factor = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "step":
        factor = gamma ** sum(step >= m * total_steps for m in milestones)
    else:
        factor = 1.0
    if step < warmup_steps:
        alpha = step / warmup_steps
        factor *= warmup_factor * (1.0 - alpha) + alpha
    return factor


def make_lr_lambda(
    total_steps: int,
    schedule: str = "cosine",
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    milestones: Sequence[float] = (0.67, 0.89),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> Callable[[int], float]:
    """Validate the schedule's settings and return ``step -> multiplier`` for `LambdaLR`.

    Raises ValueError naming the setting when a value is out of range.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"lr_schedule={schedule!r} is not one of {SCHEDULES}")
    if not math.isfinite(total_steps) or total_steps < 1:
        raise ValueError(
            f"the LR schedule needs a finite number of training steps, got {total_steps}: "
            "set trainer.max_epochs or trainer.max_steps"
        )
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps={warmup_steps} must be >= 0")
    if not 0.0 <= warmup_factor <= 1.0:
        raise ValueError(f"warmup_factor={warmup_factor} must lie in [0, 1]")
    if any(not 0.0 < m < 1.0 for m in milestones) or list(milestones) != sorted(milestones):
        raise ValueError(f"lr_milestones={tuple(milestones)} must be increasing fractions of training in (0, 1)")
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"lr_gamma={gamma} must lie in (0, 1]")
    if not 0.0 <= min_factor <= 1.0:
        raise ValueError(f"min_lr_factor={min_factor} must lie in [0, 1]")
    return functools.partial(
        lr_factor,
        total_steps=int(total_steps),
        schedule=schedule,
        warmup_steps=int(warmup_steps),
        warmup_factor=float(warmup_factor),
        milestones=tuple(float(m) for m in milestones),
        gamma=float(gamma),
        min_factor=float(min_factor),
    )
