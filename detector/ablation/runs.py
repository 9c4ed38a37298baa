"""One ablation run (variant x stride x seed) and what its folder says about its progress.

Layout of ``DIR/runs/<variant>_s<stride>_seed<k>/``::

    train/            the trainer's default_root_dir (logs, checkpoints)
    train.log         stdout + stderr of every training attempt, appended
    attempts.jsonl    one {"event": "start"|"end", ...} line per attempt start / end
    train.json        written when training exited 0: time, checkpoint, command
    eval/metrics.json written by evaluate.py (atomically)
    eval.log          its stdout + stderr
    timing.json       inference timing (detector.ablation.timing)
    run.json          the completion marker: written last, atomically, holds everything
                      the results table needs

State is derived from files only, so a rerun after any interruption (Ctrl-C, kill -9, a
reboot) continues where the files say it stopped: a complete run is skipped, finished
training is not repeated, and an interrupted training resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .variants import Variant


@dataclass(frozen=True, order=True)
class RunSpec:
    """What one run trains: a variant at a stride with a seed."""

    variant: Variant
    stride: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.variant.name}_s{self.stride}_seed{self.seed}"


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON to a temp file in the same folder, then rename it over ``path``.

    A reader (or a rerun after a kill) sees either the old file or the complete new one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-", suffix=".partial")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_json(path: Path):
    """The JSON in ``path``, or None when missing or unreadable (e.g. cut short by a crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


class RunDir:
    """The folder of one run and the state its files imply (see the module doc)."""

    def __init__(self, root: Path, spec: RunSpec):
        self.spec = spec
        self.path = Path(root) / "runs" / spec.name
        self.train_dir = self.path / "train"
        self.eval_dir = self.path / "eval"
        self.train_log = self.path / "train.log"
        self.eval_log = self.path / "eval.log"
        self.attempts_file = self.path / "attempts.jsonl"
        self.train_marker = self.path / "train.json"
        self.metrics_file = self.eval_dir / "metrics.json"
        self.timing_file = self.path / "timing.json"
        self.marker = self.path / "run.json"

    # ------------------------------------------------------------------ state
    def record(self) -> dict | None:
        """The completion record, or None when the run is not complete."""
        rec = read_json(self.marker)
        return rec if isinstance(rec, dict) and rec.get("complete") is True else None

    def is_complete(self) -> bool:
        return self.record() is not None

    def training_done(self) -> dict | None:
        rec = read_json(self.train_marker)
        return rec if isinstance(rec, dict) and rec.get("returncode") == 0 else None

    def checkpoints(self) -> list[Path]:
        """Checkpoints under ``train/``, oldest first (by modification time).

        Temp files of atomic saves (``.tmp-*.partial``) do not match; weights saved because
        the loss went non-finite are left out: resuming from them repeats the failure.
        """
        if not self.train_dir.is_dir():
            return []
        found = [p for p in self.train_dir.rglob("*.ckpt")
                 if p.is_file() and "nonfinite" not in p.name and not p.name.startswith(".tmp-")]
        return sorted(found, key=lambda p: (p.stat().st_mtime, p.name == "last.ckpt"))

    def latest_checkpoint(self) -> Path | None:
        """The newest ``last*.ckpt`` (train.py's end-of-epoch and on-interrupt save), else the
        newest checkpoint. Used to resume and, once training is done, as the model to
        evaluate: the final weights, never the "best" ones, which were selected on the very
        validation split the ablation reports (an optimistic bias)."""
        ckpts = self.checkpoints()
        last = [p for p in ckpts if p.name.startswith("last")]
        return (last or ckpts)[-1] if ckpts else None

    # ------------------------------------------------------------------ attempts and time
    def log_attempt(self, event: str, **fields) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        with self.attempts_file.open("a") as f:
            f.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def attempts(self) -> list[dict]:
        """Training attempts as ``{"start", "end", "returncode", "resumed_from", "interrupted"}``.

        An attempt without an end event was killed; its end is taken as the time of the last
        checkpoint it wrote (work after that checkpoint is lost and redone, so it is not
        counted), or its start when it wrote none.
        """
        events = []
        if self.attempts_file.is_file():
            for line in self.attempts_file.read_text().splitlines():
                try:
                    events.append(json.loads(line))
                except ValueError:  # a line cut short by a kill
                    continue
        attempts: list[dict] = []
        for ev in events:
            if ev.get("event") == "start":
                attempts.append({"start": ev["time"], "end": None, "returncode": None,
                                 "resumed_from": ev.get("resumed_from"), "interrupted": True})
            elif ev.get("event") == "end" and attempts and attempts[-1]["end"] is None:
                attempts[-1].update(end=ev["time"], returncode=ev.get("returncode"), interrupted=False)
        ckpt_times = [p.stat().st_mtime for p in self.checkpoints()]
        for i, a in enumerate(attempts):
            if a["end"] is None:
                nxt = attempts[i + 1]["start"] if i + 1 < len(attempts) else float("inf")
                written = [t for t in ckpt_times if a["start"] <= t <= nxt]
                a["end"] = max(written) if written else a["start"]
        return attempts

    def train_seconds(self) -> float:
        """Wall-clock seconds of training that the final model builds on (see `attempts`)."""
        return float(sum(a["end"] - a["start"] for a in self.attempts()))
