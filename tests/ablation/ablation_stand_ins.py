"""Stand-ins for train.py / evaluate.py / timing used by the ablation's tests, and the ``fake``
fixture (registered for tests/ablation by its conftest.py).

The stand-ins keep the real command-line contract (``fit --config ... --trainer.default_root_dir
D [--ckpt_path P]`` writing torch checkpoints under D, with train.py's ``detector_run`` record,
Lightning's loop counters and a ``config.yaml``; ``CKPT --output DIR`` writing
DIR/metrics.json) but take a second, so skipping, resuming, the tables and the launchers are
tested fast; tests/ablation/test_ablation_real.py runs the real CLI. One epoch = one optimizer
step. Behaviour knobs are environment variables: FAKE_CALLS (a file each call appends its argv
to), FAKE_DIE_AT_EPOCH (a fresh, not resumed, training SIGKILLs itself right after writing
that epoch's checkpoint), FAKE_STOP_AT_EPOCH (a fresh training stops there as after a
SIGTERM, with exit code FAKE_STOP_RC, default 0 as train.py did before it learned 143),
FAKE_NO_RUN_STATE (checkpoints without ``detector_run``, as train.py wrote before it),
FAKE_EPOCH_SLEEP (seconds each epoch takes), FAKE_FAIL_OP (a training of that ROI op exits
3 at once), FAKE_ENV_LOG (a file each finished training appends its root, start and end time,
``CUDA_VISIBLE_DEVICES`` and ``OMP_NUM_THREADS`` to: for the launchers' tests).
"""

import json
import sys

import pytest

from detector.ablation.runner import Commands

TRAIN = r'''
import json, os, pathlib, signal, sys, time
started = time.time()
import torch
argv = sys.argv[1:]
def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["train"] + argv) + "\n")
if os.environ.get("FAKE_FAIL_OP") == opt("--model.detector.roi_op"):
    sys.exit(3)
assert argv[0] == "fit" and "--config" in argv
root = pathlib.Path(opt("--trainer.default_root_dir"))
epochs = int(opt("--trainer.max_epochs", 3))
resume = opt("--ckpt_path")
start = torch.load(resume, weights_only=True)["global_step"] if resume else 0
root.mkdir(parents=True, exist_ok=True)
(root / "config.yaml").write_text(f"trainer:\n  max_epochs: {epochs}\n  max_steps: -1\n")  # as LightningCLI saves it
ckdir = root / "checkpoints"
ckdir.mkdir(parents=True, exist_ok=True)
for epoch in range(start + 1, epochs + 1):
    time.sleep(float(os.environ.get("FAKE_EPOCH_SLEEP", "0")))
    options = json.loads(opt("--model.detector.roi_options"))
    state = {"epoch": epoch, "op": opt("--model.detector.roi_op"), "mode": options.get("mode"), "aligned": options.get("aligned"),
             "stride": int(opt("--model.detector.stride")), "seed": int(opt("--seed_everything"))}
    ckpt = {"epoch": epoch - 1, "global_step": epoch, "fake": state,
            "loops": {"fit_loop": {"epoch_progress": {"total": {"started": epoch, "processed": epoch}},
                                   "epoch_loop.automatic_optimization.optim_progress": {
                                       "optimizer": {"step": {"current": {"completed": 1}}}}}}}
    if not os.environ.get("FAKE_NO_RUN_STATE"):
        ckpt["detector_run"] = {"finished": epoch == epochs, "global_step": epoch, "expected_steps": epochs}
    torch.save(ckpt, ckdir / "last.ckpt")
    (ckdir / "last.ckpt.json").write_text(json.dumps(state))  # for the evaluate stand-in (no torch import)
    if os.environ.get("FAKE_DIE_AT_EPOCH") == str(epoch) and not resume:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get("FAKE_STOP_AT_EPOCH") == str(epoch) and not resume:
        sys.exit(int(os.environ.get("FAKE_STOP_RC", "0")))
if os.environ.get("FAKE_ENV_LOG"):
    with open(os.environ["FAKE_ENV_LOG"], "a") as f:
        f.write(json.dumps({"root": str(root), "start": started, "end": time.time(),
                            "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                            "omp": os.environ.get("OMP_NUM_THREADS")}) + "\n")
'''

EVALUATE = r'''
import json, os, pathlib, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["evaluate"] + argv) + "\n")
state = json.loads(pathlib.Path(argv[0] + ".json").read_text())
out = pathlib.Path(argv[argv.index("--output") + 1])
out.mkdir(parents=True, exist_ok=True)
base = {"roi_pool": 0.20, "roi_align": 0.30, "roi_warp": 0.22, "prroi_pool": 0.31}[state["op"]]
ap = base + 0.01 * state["seed"] + (0.005 if state["mode"] == "max" else 0.0) + (0.02 if state.get("aligned") else 0.0)
bbox = {k: ap * f for k, f in zip(["AP", "AP50", "AP75", "APs", "APm", "APl"], [1, 1.8, 0.9, 0.5, 1.1, 1.3])}
(out / "metrics.json").write_text(json.dumps({"bbox": bbox, "num_images": 5, "global_step": state["epoch"]}))
'''

TIMING = r'''
import json, os, pathlib, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_CALLS"], "a") as f:
    f.write(json.dumps(["timing"] + argv) + "\n")
out = pathlib.Path(argv[argv.index("--out") + 1])
out.write_text(json.dumps({"checkpoint": argv[0], "ms_per_image": 12.5, "roi_ms_per_image": 0.5}))
'''


def write_stand_ins(folder):
    """Write the three scripts into ``folder``; return their paths (train, evaluate, timing)."""
    paths = []
    for name, text in (("train", TRAIN), ("evaluate", EVALUATE), ("timing", TIMING)):
        p = folder / f"fake_{name}.py"
        p.write_text(text)
        paths.append(p)
    return paths


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Stand-in commands, a config file and a call log."""
    train, evaluate, timing = write_stand_ins(tmp_path)
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    for knob in ("FAKE_DIE_AT_EPOCH", "FAKE_STOP_AT_EPOCH", "FAKE_STOP_RC", "FAKE_NO_RUN_STATE", "FAKE_EPOCH_SLEEP",
                 "FAKE_FAIL_OP", "FAKE_ENV_LOG"):
        monkeypatch.delenv(knob, raising=False)
    config = tmp_path / "base.yaml"
    config.write_text("trainer:\n  max_epochs: 3\n")
    commands = Commands(train=[sys.executable, str(train)], evaluate=[sys.executable, str(evaluate)],
                        timing=[sys.executable, str(timing)])

    def read_calls():
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.exists() else []

    return commands, config, tmp_path / "abl", read_calls
