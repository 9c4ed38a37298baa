"""Helpers for the Lightning / CLI tests: tiny runs of the real code paths.

"Tiny" = 96x64 synthetic images (4 train, 3 val), the detector resized to 64 px, a
16-channel neck and a 32-wide box head: the real CLI, datamodule, detector, COCOeval and
checkpoints in a few seconds per run. (A module with a unique name, imported by the test
files; fixtures live in conftest.py.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytorch_lightning as pl

REPO = Path(__file__).resolve().parents[2]


def tiny_args(data_root: str | os.PathLike, run_dir: str | os.PathLike | None = None) -> list[str]:
    """CLI flags for a tiny run (subcommand not included)."""
    args = [
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.num_sanity_val_steps", "0", "--trainer.log_every_n_steps", "1",
        "--data.root", str(data_root), "--data.synthetic_train", "4", "--data.synthetic_val", "3",
        "--data.synthetic_width", "96", "--data.synthetic_height", "64",
        "--data.batch_size", "2", "--data.num_workers", "0",
        "--model.detector.min_size", "64", "--model.detector.max_size", "96", "--model.detector.out_channels", "16",
        "--model.detector.representation_size", "32",
        "--model.detector.rpn_pre_nms_top_n_train", "100", "--model.detector.rpn_post_nms_top_n_train", "50",
        "--model.detector.rpn_pre_nms_top_n_test", "100", "--model.detector.rpn_post_nms_top_n_test", "50",
        "--model.detector.rpn_batch_size_per_image", "32", "--model.detector.box_batch_size_per_image", "32",
        "--model.warmup_steps", "1",
        # an untrained model scores below the usual 0.05: keep its detections so that
        # the evaluation code has something to convert, gather and score
        "--model.detector.box_score_thresh", "0.0", "--model.detector.box_detections_per_img", "20",
    ]
    if run_dir is not None:
        args += ["--trainer.default_root_dir", str(run_dir)]
    return args


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
    from detector.models import DetectorConfig

    fields = dict(num_classes=8, min_size=64, max_size=96, out_channels=16, representation_size=32,
                  rpn_pre_nms_top_n_train=100, rpn_post_nms_top_n_train=50, rpn_pre_nms_top_n_test=100,
                  rpn_post_nms_top_n_test=50, rpn_batch_size_per_image=32, box_batch_size_per_image=32)
    fields.update(overrides)
    return DetectorConfig(**fields)


def tiny_module_kwargs(**overrides) -> dict:
    """`DetectorModule` arguments matching `tiny_args`; `overrides` may name module arguments
    (``lr=...``) or `DetectorConfig` fields (``roi_op=...``), which go into the detector."""
    import inspect

    from detector.lit import DetectorModule

    module_args = set(inspect.signature(DetectorModule.__init__).parameters) - {"self", "detector"}
    kwargs = {"warmup_steps": 1, **{k: v for k, v in overrides.items() if k in module_args}}
    kwargs["detector"] = tiny_detector(**{k: v for k, v in overrides.items() if k not in module_args})
    return kwargs


def tiny_datamodule(data_root):
    from detector.data import DetectionDataModule

    return DetectionDataModule(root=str(data_root), synthetic_train=4, synthetic_val=3, synthetic_width=96,
                               synthetic_height=64, batch_size=2, num_workers=0)



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
    callback = {"class_path": "lit_helpers.SignalAtStep", "init_args": {"step": step, "signum": int(signum)}}
    return ["--trainer.callbacks", json.dumps([callback])]
