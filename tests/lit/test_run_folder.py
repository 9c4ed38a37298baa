"""train.py owns its run folder: one training at a time, no earlier run replaced without being
asked, an unwritable folder or a bad dataset named in one message before any training
(issue 12, items 7 and 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from tiny_run import REPO, run_script, tiny_args

from detector.checkpointing import run_state
from detector.cli import DetectorCLI
from detector.lit.run_folder import LOCK_NAME, RunFolderLock


def fit_error(args: list[str], capsys) -> str:
    """Run ``train.py fit`` in-process, expecting exit code 2; its stderr."""
    with pytest.raises(SystemExit) as exit_:
        DetectorCLI(args=["fit", *args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err[-2000:]
    return err


def test_a_folder_in_use_by_another_training_is_refused(data_root, tmp_path, capsys):
    # Before: both trainings ran and exited 0; one last.ckpt (a mix of both) survived.
    holder = RunFolderLock(tmp_path).acquire()  # another open file description: as another process
    try:
        err = fit_error([*tiny_args(data_root, tmp_path), "--trainer.max_steps", "1"], capsys)
    finally:
        holder.release()
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"train.py: error: {tmp_path} is in use by another training (pid {os.getpid()} on ")
    assert not (tmp_path / "checkpoints").exists()


def test_a_running_training_holds_the_lock_and_a_second_one_is_refused(data_root, tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen(
            [
                sys.executable,
                str(REPO / "train.py"),
                "fit",
                *tiny_args(data_root, run_dir),
                "--trainer.max_epochs",
                "500",
                "--trainer.limit_val_batches",
                "0",
            ],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            start = time.time()
            while not (run_dir / LOCK_NAME).exists() or not (run_dir / LOCK_NAME).read_text():
                assert first.poll() is None and time.time() - start < 120, (tmp_path / "first.log").read_text()[-2000:]
                time.sleep(0.2)
            assert json.loads((run_dir / LOCK_NAME).read_text())["pid"] == first.pid
            second = run_script(
                "train.py", ["fit", *tiny_args(data_root, run_dir), "--trainer.max_steps", "1"], check=False
            )
            assert second.returncode == 2
            assert f"{run_dir} is in use by another training (pid {first.pid} on " in second.stderr
            assert "Traceback" not in second.stderr
        finally:
            first.kill()
            first.wait()


def test_a_new_fit_over_earlier_checkpoints_is_refused_unless_resumed_or_overwritten(data_root, tmp_path, capsys):
    # Before: a second `fit` without --ckpt_path silently replaced the first run's last.ckpt.
    args = [*tiny_args(data_root, tmp_path), "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0"]
    DetectorCLI(args=["fit", *args])
    last = tmp_path / "checkpoints" / "last.ckpt"
    before = last.stat().st_mtime_ns
    err = fit_error(args, capsys)
    assert f"{tmp_path} already holds an earlier run's checkpoints ({last})" in err
    assert "--ckpt_path last" in err and "--overwrite true" in err
    assert last.stat().st_mtime_ns == before

    DetectorCLI(args=["fit", *args, "--trainer.max_steps", "3", "--ckpt_path", "last"])  # resuming is allowed
    assert run_state(last)["global_step"] == 3
    (tmp_path / "checkpoints" / "best.ckpt").write_bytes(b"stale")  # an earlier run's file, gone after --overwrite
    DetectorCLI(args=["fit", *args, "--trainer.max_steps", "1", "--overwrite", "true"])
    assert run_state(last)["global_step"] == 1 and sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


def test_a_diverged_attempts_nonfinite_checkpoint_does_not_block_a_new_fit(data_root, tmp_path):
    # nonfinite-step=N.ckpt is a diagnostic, never resumed: the ablation reruns such a run without
    # --ckpt_path, which the folder check refused ("already holds an earlier run's checkpoints").
    (tmp_path / "checkpoints").mkdir()
    diag = tmp_path / "checkpoints" / "nonfinite-step=1.ckpt"
    diag.write_bytes(b"diagnostic")
    args = [*tiny_args(data_root, tmp_path), "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0"]
    DetectorCLI(args=["fit", *args])
    assert run_state(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 1 and diag.is_file()


def test_an_unwritable_run_folder_is_one_line_before_any_training(data_root, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    err = fit_error([*tiny_args(data_root, blocker / "run"), "--trainer.max_steps", "1"], capsys)
    assert (
        err.strip().splitlines()[-1].startswith(f"train.py: error: cannot write to {blocker / 'run'}: ")
    )


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_run_folder_is_one_line(data_root, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        err = fit_error([*tiny_args(data_root, folder), "--trainer.max_steps", "1"], capsys)
    finally:
        folder.chmod(0o755)
    assert f"cannot write to {folder}: Permission denied" in err


def test_a_bad_dataset_prints_the_report_only(data_root, tmp_path):
    # Before: a 38-line traceback, then the report, exit code 1.
    from detector.data.synthetic import ensure_synthetic_coco

    src = ensure_synthetic_coco(num_train=4, num_val=3, width=96, height=64, cache_dir=data_root, workers=1)
    data = json.loads((src / "annotations" / "instances_train.json").read_text())
    data["annotations"][0]["bbox"] = [10, 10, -20, 20]  # a negative width: a checker error
    bad = tmp_path / "instances_train.json"
    bad.write_text(json.dumps(data))
    proc = run_script(
        "train.py",
        [
            "fit",
            *tiny_args(data_root, tmp_path / "run"),
            "--data.dataset",
            "coco",
            "--data.train_images",
            str(src / "train"),
            "--data.train_annotations",
            str(bad),
            "--data.val_images",
            str(src / "val"),
            "--data.val_annotations",
            str(src / "annotations" / "instances_val.json"),
        ],
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "negative width" in proc.stderr
    report = proc.stderr[proc.stderr.index("Checked ") :].rstrip().splitlines()  # the checker's report, to the end
    assert "error(s)" in report[1] and any(line.startswith("ERROR: ") for line in report)
    assert report[-1].lstrip().startswith("fix:")
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))
