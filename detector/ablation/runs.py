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
                      the results table needs, including ``verified``: the final checkpoint's
                      step and the schedule's (:mod:`.progress`), which must be equal

Every JSON file here is written by `detector.io.write_json` (atomically; non-finite numbers as
``null``, which a field of kind ``"num"`` rejects and one of kinds ``("num", None)`` reads as "not
measured").

State is derived from files only, so a rerun after any interruption (Ctrl-C, kill -9, a
reboot) continues where the files say it stopped: a complete run is skipped, finished
training is not repeated, and an interrupted training resumes from its newest checkpoint.

Every file is checked on read, field by field (`field_problems`): one that is broken JSON,
has a field of the wrong type, describes another run, or claims a training that its
checkpoint does not show finished, counts as absent (a `RunFileWarning` names the file and
the reason), so the stage it records is redone; it never crashes the ablation and never
reaches the table.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.io import to_json_text

from .progress import stamp_problem, training_progress
from .variants import Variant


class RunFileWarning(UserWarning):
    """A run's bookkeeping file is broken or contradicts its checkpoint; the run is not counted."""


#: Field kinds for `field_problems`: "int" excludes bools; "num" is a finite int or float.
RUN_FIELDS = {
    "complete": "bool", "name": "str", "variant": "str", "op": "str", "mode": ("str", None), "stride": "int",
    "seed": "int", "bbox": "metrics", "segm": ("metrics", None), "num_images": ("int", None), "global_step": "int",
    "checkpoint": "str", "train_time_s": "num", "train_attempts": "int", "eval_time_s": ("num", None),
    "infer_ms_per_image": ("num", None), "roi_ms_per_image": ("num", None), "finished_at": "str",
    "train_command": "strs",
}
TRAIN_FIELDS = {"returncode": "int", "checkpoint": "str", "train_time_s": "num", "attempts": "int", "resumed": "int",
                "command": "strs"}
EVAL_STAMP_FIELDS = {"checkpoint": "str", "eval_time_s": ("num", None)}
TIMING_FIELDS = {"checkpoint": "str", "global_step": "int", "ms_per_image": ("num", None),
                 "roi_ms_per_image": ("num", None)}


def _kind_ok(value: Any, kind: str | None) -> bool:
    if kind is None:
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "num":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "str":
        return isinstance(value, str)
    if kind == "strs":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "metrics":  # {"AP": 0.25, ...}: numbers, or null for a metric COCOeval could not compute
        return isinstance(value, dict) and all(v is None or _kind_ok(v, "num") for v in value.values())
    raise ValueError(f"unknown field kind {kind!r}")


def field_problems(obj: Any, fields: dict) -> list[str]:
    """What is wrong with ``obj`` against ``{key: kind or (kinds...)}``; ``[]`` when nothing.

    >>> field_problems({"seed": "0", "name": "a"}, {"seed": "int", "name": "str", "mode": ("str", None)})
    ["'seed' is '0' (str), expected int", "'mode' is missing"]
    """
    if not isinstance(obj, dict):
        return [f"holds a {type(obj).__name__}, not an object"]
    problems = []
    for key, kinds in fields.items():
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if key not in obj:
            problems.append(f"{key!r} is missing")
        elif not any(_kind_ok(obj[key], k) for k in kinds):
            want = " or ".join("null" if k is None else k for k in kinds)
            problems.append(f"{key!r} is {obj[key]!r:.60} ({type(obj[key]).__name__}), expected {want}")
    return problems


def warn_file(path: Path, problem: str, consequence: str) -> None:
    """One `RunFileWarning` naming the file, what is wrong and what the ablation does about it."""
    warnings.warn(f"{path}: {problem}; {consequence}", RunFileWarning, stacklevel=3)


#: Grid keys under this prefix set one ROI option of the variant (:mod:`.grid`).
ROI_OPTION_PREFIX = "model.detector.roi_options."


def axis_short(key: str) -> str:
    """A grid key's column name and run-folder word: its last part (``aligned``)."""
    return key.rsplit(".", 1)[-1]


def axis_tag(value: str) -> str:
    """A grid value as a run-folder word: letters, digits and ``.+-`` kept, anything else ``_``."""
    return re.sub(r"[^A-Za-z0-9.+-]", "_", value)


@dataclass(frozen=True, order=True)
class RunSpec:
    """What one run trains: a variant at a stride with a seed, and its grid values (:mod:`.grid`):
    ``axes`` = ``((train.py key, value as written), ...)`` of the axes that change this variant."""

    variant: Variant
    stride: int
    seed: int
    axes: tuple[tuple[str, str], ...] = ()

    @property
    def name(self) -> str:
        """``roi_align_avg_s32_seed0``; with axes ``roi_align_avg_s32_aligned-true_seed0``."""
        tags = "".join(f"_{axis_short(k)}-{axis_tag(v)}" for k, v in self.axes)
        return f"{self.variant.name}_s{self.stride}{tags}_seed{self.seed}"

    def axis_flags(self) -> list[str]:
        """train.py flags of the axes that are not ROI options (``["--trainer.max_epochs", "2"]``)."""
        return [t for k, v in self.axes if not k.startswith(ROI_OPTION_PREFIX) for t in (f"--{k}", v)]

    def roi_axis_options(self) -> dict[str, Any]:
        """The ROI options the axes set (``{"aligned": True}``), values read as YAML."""
        import yaml

        return {k[len(ROI_OPTION_PREFIX):]: yaml.safe_load(v) for k, v in self.axes if k.startswith(ROI_OPTION_PREFIX)}


def read_json(path: Path):
    """The JSON in ``path``, or None when missing or unreadable (e.g. cut short by a crash)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_checked(path: Path, fields: dict, consequence: str) -> dict | None:
    """The object in ``path`` if it exists and passes `field_problems`; else None, with a
    `RunFileWarning` when the file exists but is broken (missing files are silent)."""
    path = Path(path)
    if not path.exists():
        return None
    obj = read_json(path)
    problems = ["is not valid JSON"] if obj is None else field_problems(obj, fields)
    if problems:
        warn_file(path, "; ".join(problems), consequence)
        return None
    return obj


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
    def record(self, warn: bool = True) -> dict | None:
        """The completion record if the run is complete *and verified*, else None.

        A run.json that is broken, of the wrong types, about another run, or whose training
        did not reach its schedule is not a record (a `RunFileWarning` says why when ``warn``).
        A run.json written before the ``verified`` stamp existed is verified against its
        checkpoint now (the stamp is then added to the returned record, not to the file).
        """
        rec, problem = self.check_record()
        if problem and warn:
            warn_file(self.marker, problem, "the run is not counted; a rerun redoes what is missing")
        return rec

    def check_record(self) -> tuple[dict | None, str | None]:
        """``(record, None)`` for a complete, verified run; ``(None, why not)`` for a run.json
        that does not count; ``(None, None)`` when there is no run.json."""
        if not self.marker.exists():
            return None, None
        rec = read_json(self.marker)
        problems = ["is not valid JSON"] if rec is None else field_problems(rec, RUN_FIELDS)
        if problems:
            return None, "; ".join(problems)
        if rec["complete"] is not True:
            return None, None
        spec = self.spec
        mine = {"name": spec.name, "variant": spec.variant.name, "stride": spec.stride, "seed": spec.seed}
        other = {k: rec[k] for k, v in mine.items() if rec[k] != v}
        if other:
            return None, f"describes another run ({other}, this folder is {spec.name})"
        if "verified" in rec:
            problem = stamp_problem(rec["verified"], rec["global_step"])
            return (None, problem) if problem else (rec, None)
        progress = training_progress(rec["checkpoint"], self.train_dir)  # written before stamps existed
        if not progress.complete:
            return None, f"its checkpoint {rec['checkpoint']} is at {progress.describe()}"
        if progress.global_step != rec["global_step"]:
            return None, f"it evaluated step {rec['global_step']}, the final checkpoint is at {progress.global_step}"
        return {**rec, "verified": progress.stamp()}, None

    def is_complete(self) -> bool:
        return self.record(warn=False) is not None

    def training_done(self) -> dict | None:
        """train.json if it is well formed and says training exited 0, else None. Whether its
        checkpoint really finished the schedule is the runner's check (it resumes if not)."""
        rec = read_checked(self.train_marker, TRAIN_FIELDS, "training is checked again (resumed if unfinished)")
        return rec if rec is not None and rec["returncode"] == 0 else None

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
            f.write(to_json_text({"event": event, "time": time.time(), **fields}, indent=None))
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
            for line in self.attempts_file.read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                if isinstance(ev, dict) and _kind_ok(ev.get("time"), "num"):  # anything else: not ours, skip
                    events.append(ev)
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
