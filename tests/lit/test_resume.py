"""Killed runs resume: SIGKILL and SIGTERM at an arbitrary moment, then ``--ckpt_path last``.

Real subprocesses of train.py (a signal is process-wide). The run is long enough (up to 200
epochs of 2 steps) that the kill lands mid-training; the resumed run is told to stop two
epochs after the checkpoint it finds.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time

import pytest
from tiny_run import REPO, run_script, tiny_args

from detector.checkpointing import load_checkpoint, run_state


def _start(args, log):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), "fit", *args], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def _wait_for(path, proc, timeout=180):
    start = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"train.py exited ({proc.returncode}) before writing {path}")
        if time.time() - start > timeout:
            proc.kill()
            raise AssertionError(f"no {path} after {timeout} s")
        time.sleep(0.2)


def _steps_logged(run_dir, version):
    rows = csv.DictReader(open(run_dir / "csv" / f"version_{version}" / "metrics.csv"))
    return sorted({int(r["step"]) for r in rows if r.get("train/loss")})


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_resume_after_kill_continues_from_the_saved_step(sig, data_root, tmp_path):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = tiny_args(data_root, run_dir) + ["--trainer.check_val_every_n_epoch", "1000"]
    with open(tmp_path / "first.log", "w") as log:
        proc = _start(args + ["--trainer.max_epochs", "200"], log)
        _wait_for(last, proc)
        time.sleep(1.0)  # somewhere in a later epoch, maybe mid-save
        proc.send_signal(sig)
        proc.wait(timeout=60)
    first_log = (tmp_path / "first.log").read_text()
    if sig == signal.SIGTERM:  # saved at a step boundary, then exit 128 + 15 (Lightning alone exits 0)
        assert proc.returncode == 143, first_log[-3000:]
        assert "stopped by signal 15 (SIGTERM)" in first_log
        assert run_state(last)["finished"] is False
    else:
        assert proc.returncode == -signal.SIGKILL
    # A kill during a save may leave a stray temp file, never a half-written file under the final name.
    assert all(p.name == "last.ckpt" or (p.name.startswith(".tmp-last.ckpt-") and p.suffix == ".partial")
               for p in last.parent.iterdir())
    saved = load_checkpoint(last)  # loads: never truncated
    step, epoch = saved["global_step"], saved["epoch"]
    assert step >= 2

    proc = run_script("train.py", ["fit", *args, "--trainer.max_epochs", str(epoch + 2), "--ckpt_path", "last"])
    assert f"Restoring states from the checkpoint path at {last}" in proc.stdout + proc.stderr
    resumed = _steps_logged(run_dir, 1)
    # The resumed process trained from the saved step on, not from step 0.
    assert resumed[0] >= step - 1 and resumed[0] > 0, (step, resumed[:5])
    final = load_checkpoint(last)
    assert final["global_step"] > step and final["epoch"] >= epoch
    assert run_state(last) == {"finished": True, "global_step": final["global_step"],
                               "expected_steps": final["global_step"]}
