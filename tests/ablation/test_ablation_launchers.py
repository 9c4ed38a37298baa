"""The ablation's launchers (detector.ablation.launchers) with the stand-in commands of
tests/ablation/ablation_stand_ins.py (the ``fake`` fixture: fake train/evaluate/timing scripts, ~1 s each).

- ``--launcher local --jobs N``: N runs at once, each on its own slot (one GPU via
  ``CUDA_VISIBLE_DEVICES``, or a share of the CPU threads), never two on one GPU; ``--jobs``
  above the GPUs is refused (exit code 2); a failed run is reported with its log and the
  others go on; the table equals the sequential one.
- Two launcher *processes* on one folder: every run is executed exactly once (per-run locks).
- ``--launcher slurm`` through submitit's local executor (the real submitit code path, no
  SLURM): array tasks, a preempted task requeued and resumed from last.ckpt; skipped when
  submitit is not installed; without submitit the error names the extra to install.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detector.ablation import launchers
from detector.ablation.cli import main
from detector.ablation.launchers import UsageError, local_slots
from detector.ablation.runner import RunFailed
from detector.ablation.runs import RunDir, RunSpec
from detector.ablation.variants import Variant

REPO = Path(__file__).resolve().parents[2]
NAMES = ["roi_pool_s32_seed0", "roi_align_max_s32_seed0", "roi_pool_s32_seed1", "roi_align_max_s32_seed1"]


def argv_of(config, out, *extra):
    return ["--config", str(config), "--out", str(out), "--no-analysis", "--variants", "roi_pool", "roi_align_max",
            "--seeds", "2", "--timing-images", "0", *extra]


def env_log(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def most_at_once(entries) -> int:
    """The largest number of trainings whose [start, end] intervals overlap."""
    events = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries])
    now = most = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def quiet(*_):
    pass


# ------------------------------------------------------------------ slots
def test_local_slots():
    assert local_slots(1, [], gpus=["0", "1"]) == [{}]  # --jobs 1: our environment, as before launchers
    assert local_slots(2, [], gpus=["4", "6", "7"]) == [{"CUDA_VISIBLE_DEVICES": "4"}, {"CUDA_VISIBLE_DEVICES": "6"}]
    assert local_slots(4, [], gpus=[], cores=2) == [{"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}] * 4
    assert local_slots(2, [], gpus=[], cores=16)[1] == {"OMP_NUM_THREADS": "8", "MKL_NUM_THREADS": "8"}
    # training on the CPU by request: the cores are split, the GPUs are not handed out
    assert local_slots(3, ["--trainer.accelerator", "cpu"], gpus=["0"], cores=9)[0]["OMP_NUM_THREADS"] == "3"
    with pytest.raises(UsageError, match=r"--jobs 3 asks for 3 runs at once but this machine shows 2 GPU\(s\).*"
                                         r"use --jobs 2 or fewer"):
        local_slots(3, [], gpus=["0", "1"])
    with pytest.raises(UsageError, match="--jobs must be >= 1"):
        local_slots(0, [])


def test_visible_gpus_honour_cuda_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert launchers.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert launchers.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert launchers.visible_gpus() == []


# ------------------------------------------------------------------ local --jobs N
def test_jobs_two_on_cpu_run_at_once_with_split_threads_and_the_same_table(fake, tmp_path, monkeypatch):
    commands, config, out, calls = fake
    log = tmp_path / "env.jsonl"
    monkeypatch.setenv("FAKE_ENV_LOG", str(log))
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.5")
    monkeypatch.setattr(launchers, "visible_gpus", list)
    said = []
    doc = main(argv_of(config, out, "--jobs", "2"), commands=commands, echo=said.append)
    entries = env_log(log)
    assert len(entries) == 4 and most_at_once(entries) == 2  # two at once, never more
    threads = str(max(1, launchers.usable_cores() // 2))
    assert {e["omp"] for e in entries} == {threads}
    assert sorted(o["state"] for o in doc["launch"]) == ["done"] * 4 and not doc["missing"]
    assert "4 runs: 4 done here, 0 skipped (complete), 0 running elsewhere, 0 failed" in said
    assert sum(line.startswith("--- run ") and line.endswith(f"on {threads} CPU thread(s)") for line in said) == 4
    assert f"OMP_NUM_THREADS={threads} " in (out / "runs" / NAMES[0] / "train.log").read_text()  # the log says so

    # the same ablation run one after another: the same table
    monkeypatch.delenv("FAKE_EPOCH_SLEEP")
    seq = main(argv_of(config, tmp_path / "seq"), commands=commands, echo=quiet)
    keys = [k for k in seq["summary"][0] if k.startswith("AP") or k in ("variant", "stride")]

    def table(d):  # JSON text: NaN (no spread with one value) compares equal to itself
        return json.dumps([{k: s[k] for k in keys} for s in d["summary"]], sort_keys=True)

    assert "AP_mean" in keys and table(doc) == table(seq)
    assert len([c for c in calls() if c[0] == "train"]) == 8  # 4 + 4: each ablation trained its own


def test_jobs_on_gpus_one_run_per_gpu(fake, tmp_path, monkeypatch):
    """Three runs on two (pretend) GPUs: a run gets one GPU, two runs never share one."""
    commands, config, out, _ = fake
    log = tmp_path / "env.jsonl"
    monkeypatch.setenv("FAKE_ENV_LOG", str(log))
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.4")
    monkeypatch.setattr(launchers, "visible_gpus", lambda: ["2", "7"])
    main(argv_of(config, out, "--jobs", "2", "--seeds", "1", "--variants", "roi_pool", "roi_align_max", "roi_warp"),
         commands=commands, echo=quiet)
    entries = env_log(log)
    assert len(entries) == 3 and {e["cuda"] for e in entries} <= {"2", "7"}
    for gpu in ("2", "7"):
        assert most_at_once([e for e in entries if e["cuda"] == gpu]) <= 1
    with pytest.raises(UsageError, match="--jobs 3 asks for 3 runs at once but this machine shows 2 GPU"):
        main(argv_of(config, out, "--jobs", "3"), commands=commands, echo=quiet)


def test_launcher_input_errors_exit_2_in_one_line(fake):
    _, config, out, _ = fake
    for extra, message in ((["--jobs", "0"], "error: --jobs must be >= 1, got 0"),
                           (["--slurm-partition", "gpu"], ("error: --slurm-partition is for --launcher slurm; "
                                                           "add --launcher slurm or drop it"))):
        proc = subprocess.run([sys.executable, "-m", "detector.ablation", *argv_of(config, out, *extra)], cwd=REPO,
                              capture_output=True, text=True, timeout=300, check=False,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 2 and proc.stderr.strip() == message, proc.stderr
    assert not (out / "runs").exists()  # nothing ran


@pytest.mark.parametrize("keep_going", [True, False], ids=["keep-going", "stop"])
def test_failed_run_is_reported_with_its_log_and_the_others_go_on(fake, monkeypatch, keep_going):
    """--jobs 2: roi_align_max fails at once. --keep-going: every other run completes, the table
    is written from them. Without it: no new run starts, the run under way finishes, the table
    is written, the failure raised names the log."""
    commands, config, out, _ = fake
    monkeypatch.setenv("FAKE_FAIL_OP", "roi_align")
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "0.3")
    monkeypatch.setattr(launchers, "visible_gpus", list)
    log = out / "runs" / "roi_align_max_s32_seed0" / "train.log"
    argv = argv_of(config, out, "--jobs", "2") + (["--keep-going"] if keep_going else [])
    said = []
    if keep_going:
        doc = main(argv, commands=commands, echo=said.append)
        assert [r["name"] for r in doc["runs"]] == ["roi_pool_s32_seed0", "roi_pool_s32_seed1"]
        assert sorted(doc["missing"]) == ["roi_align_max_s32_seed0", "roi_align_max_s32_seed1"]
        assert any(line.startswith("FAILED: run roi_align_max_s32_seed0: training exited with code 3") and
                   f"see {log}" in line for line in said)
        assert "4 runs: 2 done here, 0 skipped (complete), 0 running elsewhere, 2 failed" in "\n".join(said)
        assert f"FAILED roi_align_max_s32_seed0: see {log}" in "\n".join(said)
    else:
        with pytest.raises(RunFailed, match=f"roi_align_max_s32_seed0: training exited with code 3.*see {log}"):
            main(argv, commands=commands, echo=said.append)
        doc = json.loads((out / "results.json").read_text())
        # run 1 (roi_pool seed 0) was under way beside the failing run 2: it finished and is tabulated;
        # no further run started
        assert [r["name"] for r in doc["runs"]] == ["roi_pool_s32_seed0"]
        assert not (out / "runs" / "roi_pool_s32_seed1").exists()
        assert any("no new run starts, the runs under way finish" in line for line in said)


# ------------------------------------------------------------------ two launchers, one folder
DRIVER = """
import json, sys
from detector.ablation.cli import main
from detector.ablation.runner import Commands
train, evaluate, timing, *argv = sys.argv[1:]
py = sys.executable
doc = main(argv, commands=Commands(train=[py, train], evaluate=[py, evaluate], timing=[py, timing]))
print("LAUNCH " + json.dumps(doc["launch"]), flush=True)
"""


def test_two_launcher_processes_execute_every_run_exactly_once(fake, tmp_path):
    commands, config, out, calls = fake
    env = {**os.environ, "PYTHONPATH": str(REPO), "FAKE_EPOCH_SLEEP": "0.3", "CUDA_VISIBLE_DEVICES": ""}
    scripts = [commands.train[1], commands.evaluate[1], commands.timing[1]]
    argv = argv_of(config, out, "--jobs", "2", "--seeds", "3")
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, *scripts, *argv], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    trained = [c[c.index("--trainer.default_root_dir") + 1] for c in calls() if c[0] == "train"]
    assert len(trained) == 6 and len(set(trained)) == 6  # each of the 6 runs trained once, by one launcher
    evaluated = [c[1] for c in calls() if c[0] == "evaluate"]
    assert len(evaluated) == 6 and len(set(evaluated)) == 6
    launches = [json.loads(next(line for line in o.splitlines() if line.startswith("LAUNCH "))[7:]) for o in outputs]
    done = [o["name"] for launch in launches for o in launch if o["state"] == "done"]
    assert sorted(done) == sorted(RunSpec(Variant(v, m), 32, k).name for k in range(3)
                                  for v, m in (("roi_pool", None), ("roi_align", "max")))
    for launch in launches:  # what one did not do, it found done or running elsewhere
        assert {o["state"] for o in launch} <= {"done", "skipped", "elsewhere"}
    # whichever wrote the table last saw every run finished
    doc = json.loads((out / "results.json").read_text())
    assert not doc["missing"] and len(doc["runs"]) == 6


# ------------------------------------------------------------------ slurm through submitit
def test_slurm_without_submitit_names_the_extra(fake, monkeypatch):
    _, config, out, _ = fake
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    with pytest.raises(UsageError, match=r"--launcher slurm needs submitit, which is not installed: "
                                         r"pip install -e '\.\[cluster\]'"):
        main(argv_of(config, out, "--launcher", "slurm"), echo=quiet)


def test_slurm_without_sbatch_is_a_clear_error(fake, monkeypatch):
    pytest.importorskip("submitit", reason="submitit not installed (pip install -e '.[cluster]')")
    _, config, out, _ = fake
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(UsageError, match="no sbatch on PATH"):
        main(argv_of(config, out, "--launcher", "slurm", "--slurm-partition", "gpu"), echo=quiet)


def test_slurm_array_through_submitit_local_executor(fake):
    pytest.importorskip("submitit", reason="submitit not installed (pip install -e '.[cluster]')")
    commands, config, out, calls = fake
    said = []
    argv = argv_of(config, out, "--seeds", "1", "--launcher", "slurm", "--slurm-cluster", "local",
                   "--slurm-time", "10", "--slurm-gpus-per-run", "0")
    doc = main(argv, commands=commands, echo=said.append)
    assert not doc["missing"] and [o["state"] for o in doc["launch"]] == ["done", "done"]
    submitted = [line for line in said if " submitted as job " in line]
    assert len(submitted) == 2 and all("(log: " + str(out / "slurm") in line for line in submitted)
    assert "2 runs: 2 done here, 0 skipped (complete), 0 running elsewhere, 0 failed" in said
    # rerun: nothing is submitted, both are complete
    said.clear()
    doc = main(argv, commands=commands, echo=said.append)
    assert [o["state"] for o in doc["launch"]] == ["skipped", "skipped"] and not any("submitted" in s for s in said)
    assert len([c for c in calls() if c[0] == "train"]) == 2


def test_slurm_preempted_task_is_requeued_and_resumes_from_last_ckpt(fake, monkeypatch):
    """SIGUSR2 to the task (what SLURM sends before preempting / at the time limit, via
    submitit's --signal): submitit calls RunJob.checkpoint and requeues the task, the training
    is stopped, the requeued task resumes it from last.ckpt and the run completes."""
    pytest.importorskip("submitit", reason="submitit not installed (pip install -e '.[cluster]')")
    commands, config, out, calls = fake
    monkeypatch.setenv("FAKE_EPOCH_SLEEP", "1.5")
    spec = RunSpec(Variant("roi_pool"), 32, 0)
    run = RunDir(out, spec)
    options = launchers.SlurmOptions(time_min=10, gpus_per_run=0, cluster="local")
    config_args = ["--config", str(config)]
    jobs, settled = launchers.submit_slurm(out, [spec], config_args, ["--trainer.max_epochs", "4"], commands, 0,
                                           options, echo=quiet)
    assert settled == [] and len(jobs) == 1
    deadline = time.time() + 120
    while not (run.train_dir / "checkpoints" / "last.ckpt").exists():  # epoch 1 saved: preempt now
        assert time.time() < deadline and not jobs[0].done(), "the task did not start training"
        time.sleep(0.2)
    worker = json.loads((run.path / ".run.lock").read_text())["pid"]  # the task holding the run
    os.kill(worker, signal.SIGUSR2)
    [outcome] = launchers.wait_slurm(jobs, poll_s=0.5, echo=quiet)
    assert outcome.state == "done", outcome
    trains = [c for c in calls() if c[0] == "train"]
    assert len(trains) == 2 and "--ckpt_path" not in trains[0]
    assert trains[1][trains[1].index("--ckpt_path") + 1].endswith("last.ckpt")
    rec = run.record()
    assert rec["global_step"] == 4 and rec["train_attempts"] == 2
    assert "Requeued job" in Path(jobs[0].paths.stderr).read_text() + Path(jobs[0].paths.stdout).read_text()
