"""The README's commands run as written (issue 12, item 12), read from README.md itself, so the
README and this test cannot drift apart.

What runs, each in a fresh folder with ``python`` on PATH (``train.py``, ``evaluate.py`` and
``configs/`` linked in, so ``runs/`` lands in tmp_path, never in the checkout):

- "Your own COCO data": every command verbatim, ``DIR`` replaced by a tiny COCO folder made
  here (4 train / 3 val images of 96 x 64: the built-in generator's output, which has the
  standard layout). The quickstart config's schedule is kept: 6 epochs of 1 step.
- "Set up and run the main job": ``train.py fit`` with `TINY_DATA` appended (the built-in
  dataset at the same tiny size: the real run takes ~10 minutes), ``evaluate.py`` verbatim.
- "Ablate the ROI layer ...": the ablation with ``--dry-run`` appended (it plans all 18
  runs and trains none); the quantization analysis verbatim, marked slow (it generates the
  full built-in val split).
- Not run: `NOT_RUN` (setting up the environment this test runs in, and the test suite).

`test_every_readme_command_is_covered` fails on any other README command, so a new one
cannot go untested.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

OWN_COCO = "Your own COCO data"
QUICKSTART = "Set up and run the main job"
ABLATION = "Ablate the ROI layer and look at the quantization"
CHECKPOINT = "Use a checkpoint: predict, test split, fine-tune"

#: Command prefixes the test does not run, and why.
NOT_RUN = {
    "python3 -m venv": "creates the environment this test already runs in",
    ". .venv/bin/activate": "activates that environment",
    "pip install": "installs packages (the test runs in the installed environment)",
    "python -m pytest": "the test suite itself",
}
#: Appended to the quickstart's ``train.py fit``: the one tiny layer (built-in data and detector, tiny).
TINY_DATA = ["--config", "configs/tiny.yaml"]
#: The ablation section's commands: prefix -> what is appended ("" = run verbatim, slow).
ABLATION_COMMANDS = {"python -m detector.ablation ": " --dry-run", "python -m detector.analysis.quantization ": ""}


def readme_commands() -> list[tuple[str, str]]:
    """``(section, command)`` for every command in the README's ```` ```bash ```` blocks, in order:
    backslash continuations joined, ``a && b`` split, comments and blank lines dropped."""
    found, section, block = [], None, None
    for line in README.read_text(encoding="utf-8").splitlines():
        if block is None and line.startswith("## "):
            section = line[3:].strip()
        elif block is None and line.strip() == "```bash":
            block = []
        elif block is not None and line.strip().startswith("```"):
            joined = re.sub(r"\\\n\s*", "", "\n".join(block))
            for logical in joined.splitlines():
                for command in logical.split(" && "):
                    command = re.sub(r"\s+#.*$", "", command).strip()  # a trailing comment (no '#' in our args)
                    if command and not command.startswith("#"):
                        found.append((section, command))
            block = None
        elif block is not None:
            block.append(line)
    return found


def commands_of(section: str) -> list[str]:
    """The commands of `section` that the test runs (`NOT_RUN` left out)."""
    return [c for s, c in readme_commands() if s == section and not c.startswith(tuple(NOT_RUN))]


def test_every_readme_command_is_covered():
    commands = readme_commands()
    assert commands_of(OWN_COCO) and commands_of(QUICKSTART) and commands_of(ABLATION)  # the sections exist
    assert commands_of(CHECKPOINT)
    uncovered = [
        (section, command) for section, command in commands
        if not command.startswith(tuple(NOT_RUN))
        and section not in (OWN_COCO, QUICKSTART, CHECKPOINT)
        and not (section == ABLATION and command.startswith(tuple(ABLATION_COMMANDS)))
    ]
    assert not uncovered, f"README commands that tests/test_readme.py does not run: {uncovered}"


@pytest.fixture()
def workspace(tmp_path) -> tuple[Path, dict[str, str]]:
    """A folder to run README commands in, and their environment."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("train.py", "evaluate.py", "configs"):
        (work / name).symlink_to(REPO / name)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the test's interpreter, venv and all
    python.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", PYTHONPATH=str(REPO),
               OMP_NUM_THREADS="1", DETECTOR_CACHE=str(tmp_path / "cache"))
    return work, env


@pytest.fixture()
def coco_dir(tmp_path) -> Path:
    """A tiny COCO folder: DIR/{train,val}/*.jpg, DIR/annotations/instances_{train,val}.json."""
    from detector.data.synthetic import ensure_synthetic_coco

    return ensure_synthetic_coco(num_train=4, num_val=3, width=96, height=64, cache_dir=tmp_path / "coco", workers=1)


def run(command: str, work: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"README command exited {proc.returncode}: {command}\n"
                                  f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}")
    return proc


def test_own_coco_commands_run_as_written(workspace, coco_dir):
    """Then the evaluate.py line again where only the val split exists (the README says the val
    flags are enough): before the fix it needed the training files (exit 2, "needs root ... or
    train_images", or the training JSON not found)."""
    work, env = workspace
    commands = [re.sub(r"\bDIR\b", str(coco_dir), c) for c in commands_of(OWN_COCO)]
    for command in commands:
        run(command, work, env)
    eval_dir = work / "runs" / "my_coco" / "eval"
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["annotation_file"] == str(coco_dir / "annotations" / "instances_val.json")

    shutil.rmtree(eval_dir)
    shutil.rmtree(coco_dir / "train")
    (coco_dir / "annotations" / "instances_train.json").unlink()
    run(next(c for c in commands if c.startswith("python evaluate.py")), work, env)
    assert json.loads((eval_dir / "metrics.json").read_text())["bbox"] == metrics["bbox"]


def test_quickstart_on_tiny_data(workspace):
    work, env = workspace
    commands = commands_of(QUICKSTART)
    assert any(c.startswith("python train.py fit") for c in commands)
    for command in commands:
        run(command + (" " + " ".join(TINY_DATA) if command.startswith("python train.py fit") else ""), work, env)
    metrics = json.loads((work / "runs" / "quickstart" / "eval" / "metrics.json").read_text())
    assert metrics["num_images"] == 3 and metrics["bbox"]["AP"] is not None


def test_checkpoint_commands_run_on_tiny_data(workspace, tmp_path):
    """"Use a checkpoint": every command as written, with configs/tiny.yaml layered after the
    quickstart's config, on the tiny quickstart run (trained first), a tiny COCO folder with a
    test split for ``DIR`` and the images the predict examples name."""
    from PIL import Image

    from detector.data.synthetic import ensure_synthetic_coco

    work, env = workspace
    coco = ensure_synthetic_coco(num_train=4, num_val=3, num_test=3, width=96, height=64,
                                 cache_dir=tmp_path / "coco-test", workers=1)
    fit = next(c for c in commands_of(QUICKSTART) if c.startswith("python train.py fit"))
    run(fit + " " + " ".join(TINY_DATA), work, env)
    (work / "my_photos").mkdir()
    (work / "more_photos").mkdir()
    val = sorted((coco / "val").iterdir())
    for i, target in enumerate(["my_photos/1.jpg", "my_photos/2.png", "a.jpg", "b.png", "more_photos/c.jpg"]):
        Image.open(val[i % len(val)]).save(work / target)
    commands = commands_of(CHECKPOINT)
    assert {"evaluate.py", "train.py test", "train.py predict", "init_from"} <= {
        k for k in ("evaluate.py", "train.py test", "train.py predict", "init_from") if any(k in c for c in commands)}
    for command in commands:
        command = re.sub(r"\bDIR\b", str(coco), command)
        command = command.replace("--config configs/quickstart.yaml", "--config configs/quickstart.yaml " + " ".join(TINY_DATA))
        run(command, work, env)
    assert len(json.loads((work / "runs" / "quickstart" / "predict" / "images.json").read_text())["images"]) == 2
    assert (work / "runs" / "predict" / "predictions.json").is_file()
    assert (work / "runs" / "quickstart" / "predictions.json").is_file()
    assert list((work / "runs" / "my_finetune" / "checkpoints").glob("last.ckpt"))


def _ablation_commands(slow: bool) -> list[str]:
    chosen = []
    for command in commands_of(ABLATION):
        suffix = next(s for p, s in ABLATION_COMMANDS.items() if command.startswith(p))
        if (suffix == "") == slow:
            chosen.append(command + suffix)
    return chosen


def test_ablation_command_plans(workspace):
    work, env = workspace
    for command in _ablation_commands(slow=False):
        proc = run(command, work, env, timeout=120)
        assert "new" in proc.stdout  # every run is planned as new in an empty folder


@pytest.mark.slow
def test_quantization_command_runs_as_written(workspace):
    work, env = workspace
    for command in _ablation_commands(slow=True):
        run(command, work, env, timeout=600)
