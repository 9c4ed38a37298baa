"""Helpers for the Lightning and CLI tests (tests/lit, tests/cli): tiny runs of the real code paths.

"Tiny" = 96x64 synthetic images (4 train, 3 val), the detector resized to 64 px, a
16-channel neck and a 32-wide box head: the real CLI, datamodule, detector, COCOeval and
checkpoints in a few seconds per run. (A module with a unique name, imported by the test
files; the fixtures `data_root` and `trained_run` live in tests/conftest.py.)
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[1]


TINY_CONFIG = REPO / "configs" / "tiny.yaml"


def tiny_args(data_root: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> list[str]:
    """CLI flags for a tiny run (subcommand not included): configs/tiny.yaml, data under `data_root`."""
    args = ["--config", str(TINY_CONFIG), "--data.root", str(data_root)]
    if run_dir is not None:
        args += ["--trainer.default_root_dir", str(run_dir)]
    return args


@functools.cache
def _tiny():
    """configs/tiny.yaml as train.py reads it (the one tiny recipe of tests and notebooks)."""
    from detector.cli import read_train_config

    return read_train_config(["--config", str(TINY_CONFIG)])


def run_script(script: str, args: list[str], timeout: float = 240, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run train.py / evaluate.py in a fresh interpreter (one torch thread: the machine is shared)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(REPO / script), *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-5000:]}")
    return proc


def tiny_detector(**overrides):
    """The `DetectorConfig` of `tiny_args` (8 classes: 7 shapes + background)."""
    from detector.cli import section
    from detector.models import DetectorConfig

    return DetectorConfig.from_dict({**section(_tiny().model, "detector"), "num_classes": 8, **overrides})


def tiny_module_kwargs(**overrides) -> dict:
    """`DetectorModule` arguments matching `tiny_args`; `overrides` may name module arguments
    (``lr=...``) or `DetectorConfig` fields (``roi_op=...``), which go into the detector."""
    import inspect

    from detector.lit import DetectorModule

    module_args = set(inspect.signature(DetectorModule.__init__).parameters) - {"self", "detector"}
    kwargs = {"warmup_steps": _tiny().model.warmup_steps, **{k: v for k, v in overrides.items() if k in module_args}}
    kwargs["detector"] = tiny_detector(**{k: v for k, v in overrides.items() if k not in module_args})
    return kwargs


def tiny_datamodule(data_root):
    from detector.cli import section
    from detector.data import DetectionDataModule

    return DetectionDataModule(**{**section(_tiny(), "data"), "root": str(data_root)})


class SignalAtStep(pl.Callback):
    """Sends `signum` to its own process once ``global_step`` reaches `step`: a kill at an exact
    step, through the real signal path. Add it with `signal_at_step` (in-process runs only: it is
    imported from this test module)."""

    def __init__(self, step: int, signum: int = 15) -> None:
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def signal_at_step(step: int, signum: int) -> list[str]:
    """CLI flags adding `SignalAtStep` (as the only ``trainer.callbacks``; the defaults still come)."""
    callback = {"class_path": "tiny_run.SignalAtStep", "init_args": {"step": step, "signum": int(signum)}}
    return ["--trainer.callbacks", json.dumps([callback])]
