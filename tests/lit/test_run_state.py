"""A stopped fit exits 128 + signum with a checkpoint that says it is partial; a resumed fit equals
an uninterrupted one, weight for weight (issue 12, items 1 and 4).

The stop is a real signal (SIGTERM / SIGINT sent to this process by a callback at an exact step,
handled by Lightning's and train.py's handlers) in an in-process fit; test_resume.py kills real
train.py subprocesses at arbitrary moments.
"""

from __future__ import annotations

import signal

import pytest
import torch
from tiny_run import signal_at_step, tiny_args

from detector.checkpointing import load_checkpoint, run_state
from detector.cli import DetectorCLI

# 4 training images in batches of 2: 2 steps per epoch; 5 steps end mid-epoch 2. No validation
# during training, as in the quickstart and the ablation.
SCHEDULE = ["--trainer.max_steps", "5", "--trainer.limit_val_batches", "0"]


def fit(args: list[str]) -> int:
    """Run ``train.py fit`` in-process; its exit code (0 when it returns)."""
    try:
        DetectorCLI(args=["fit", *args])
    except SystemExit as exit_:
        return 0 if exit_.code is None else exit_.code
    return 0


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_fit_with_128_plus_signum_and_a_partial_checkpoint(sig, code, data_root, tmp_path, capsys):
    # Before: SIGTERM exited 0 (Lightning's graceful exit), Ctrl-C 1, and last.ckpt did not say it was partial.
    sigint_before = signal.getsignal(signal.SIGINT)  # Python's default, or SIG_IGN under nohup / a background job
    assert fit([*tiny_args(data_root, tmp_path), *SCHEDULE, *signal_at_step(3, sig)]) == code
    assert f"stopped by signal {int(sig)}" in capsys.readouterr().err
    state = run_state(tmp_path / "checkpoints" / "last.ckpt")
    assert state == {"finished": False, "global_step": 3, "expected_steps": 5}
    assert signal.getsignal(signal.SIGINT) == sigint_before  # Ctrl-C handling put back as it was

    assert fit([*tiny_args(data_root, tmp_path), *SCHEDULE, "--ckpt_path", "last"]) == 0
    assert run_state(tmp_path / "checkpoints" / "last.ckpt") == {
        "finished": True,
        "global_step": 5,
        "expected_steps": 5,
    }


def test_a_completed_fit_is_finished_and_counts_the_schedule(trained_run):
    # max_epochs 2 x 2 steps; the last.ckpt written at the very end says finished.
    assert run_state(trained_run / "checkpoints" / "last.ckpt") == {
        "finished": True,
        "global_step": 4,
        "expected_steps": 4,
    }
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.ckpt")  # plain data only (weights_only=True)
    assert set(ckpt["detector_rng"]) == {"torch", "torch.cuda", "numpy", "python"}


def test_an_old_checkpoint_without_the_record_reads_as_unfinished(tmp_path):
    torch.save({"global_step": 7, "state_dict": {}}, tmp_path / "old.ckpt")
    assert run_state(tmp_path / "old.ckpt") == {"finished": False, "global_step": 7, "expected_steps": None}


def _weights(root):
    return load_checkpoint(root / "checkpoints" / "last.ckpt")["state_dict"]


# step 3: mid-epoch (a loader position inside epoch 1); step 2: at an epoch's end, where Lightning
# alone trains one batch too many on resume when the epoch does not validate.
@pytest.mark.parametrize("stop_at", [3, 2], ids=["mid-epoch", "epoch-end"])
def test_a_resumed_fit_equals_an_uninterrupted_one(stop_at, data_root, tmp_path):
    # Before: data order restarted from epoch 0's permutation, augmentation and the RPN/ROI box
    # sampling drew from where the fresh process's RNGs stood: every weight differed.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert fit([*tiny_args(data_root, whole), *SCHEDULE]) == 0
    assert fit([*tiny_args(data_root, resumed), *SCHEDULE, *signal_at_step(stop_at, signal.SIGTERM)]) == 143
    assert fit([*tiny_args(data_root, resumed), *SCHEDULE, "--ckpt_path", "last"]) == 0
    a, b = _weights(whole), _weights(resumed)
    assert load_checkpoint(resumed / "checkpoints" / "last.ckpt")["global_step"] == 5
    assert [k for k in a if not torch.equal(a[k], b[k])] == []  # bit for bit


def test_a_resumed_fit_with_loader_workers_equals_an_uninterrupted_one_without(data_root, tmp_path):
    # Order and augmentation are functions of (seed, epoch, index): the number of workers does not matter.
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert fit([*tiny_args(data_root, whole), *SCHEDULE]) == 0
    workers = ["--data.num_workers", "2"]
    assert fit([*tiny_args(data_root, resumed), *SCHEDULE, *workers, *signal_at_step(3, signal.SIGTERM)]) == 143
    assert fit([*tiny_args(data_root, resumed), *SCHEDULE, *workers, "--ckpt_path", "last"]) == 0
    a, b = _weights(whole), _weights(resumed)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
