"""Execute one ablation run with the project's real command lines: train, evaluate, time.

Each stage is a subprocess (``python train.py fit ...``, ``python evaluate.py CKPT ...``,
``python -m detector.ablation.timing CKPT ...``), exactly what a user would type, so the
ablation measures the shipped CLI and a crash in one run cannot corrupt the others. Every
stage is skipped when its output already exists (see :mod:`.runs`), training resumes from
the newest checkpoint with ``--ckpt_path``, and ``run.json`` is written last.

Training is done only when train.py exited 0 *and* its final checkpoint has reached the
whole schedule (:mod:`.progress`); otherwise the run fails with the step it reached and a
rerun resumes it. Evaluation and timing outputs are reused only for the same checkpoint at
the same step, so a resumed run is never scored with its interrupted weights.
"""

from __future__ import annotations

import functools
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from detector.io import write_json

from .progress import training_progress
from .recipe import ROOT_FLAG, recipe_problem
from .runs import (
    EVAL_STAMP_FIELDS,
    TIMING_FIELDS,
    RunDir,
    RunSpec,
    read_checked,
    read_json,
    warn_file,
)

#: Flags the ablation sets per run; passing them through would break the design.
RESERVED_FLAGS = {
    "--model.detector.roi_op": "--variants", "--model.detector.stride": "--strides",
    "--seed_everything": "--seeds", "--data.seed": "--seeds",
    "--trainer.default_root_dir": "--out", "--ckpt_path": "(resuming is automatic)",
}


def base_roi_options(config_args: list[str], overrides: list[str]) -> dict:
    """``model.detector.roi_options`` of the base config with the overrides, as train.py reads it
    (each variant keeps the options its op takes, e.g. ``aligned: true``; see `Variant.roi_options`)."""
    return dict(_base_roi_options(tuple(config_args), tuple(overrides)))


@functools.lru_cache(maxsize=8)
def _base_roi_options(config_args: tuple[str, ...], overrides: tuple[str, ...]) -> dict:
    from detector.cli import read_train_config

    return dict(read_train_config([*config_args, *overrides]).model.detector.roi_options or {})


def train_recipe(spec: RunSpec, config_args: list[str], overrides: list[str]) -> list[str]:
    """The flags of `spec`'s train.py command that decide its result (:mod:`.recipe`): the
    configs, the overrides, the grid axes, the variant's op and options, stride and seeds."""
    roi_options = {**base_roi_options(config_args, overrides), **spec.roi_axis_options()}
    return [*config_args, *overrides, *spec.axis_flags(), *spec.variant.train_flags(roi_options),
            "--model.detector.stride", str(spec.stride), "--seed_everything", str(spec.seed),
            "--data.seed", str(spec.seed)]


def eval_flags(overrides: list[str]) -> list[str]:
    """evaluate.py's flags for a run trained with `overrides`: the ``--data.*`` overrides, and the
    trainer's accelerator and precision as ``--device`` / ``--precision`` (same hardware, same numerics)."""
    groups = split_overrides(overrides)
    flags = flatten_overrides([g for g in groups if g[0].startswith("--data.")])
    accelerator = flag_value(overrides, "--trainer.accelerator")
    if accelerator is not None:
        flags += ["--device", {"gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}.get(accelerator, "auto")]
    precision = flag_value(overrides, "--trainer.precision")
    if precision is not None:
        flags += ["--precision", str(precision)]
    return flags


def _script(name: str) -> list[str]:
    """``[python, <repo>/name.py]`` in a checkout, else the same entry point through ``-c``."""
    import detector

    path = Path(detector.__file__).resolve().parents[1] / f"{name}.py"
    if path.is_file():
        return [sys.executable, str(path)]
    entry = {"train": "main_train", "evaluate": "main_evaluate"}[name]
    return [sys.executable, "-c", f"from detector.cli import {entry}; {entry}()"]


@dataclass
class Commands:
    """Command prefixes of the three stages (replaceable, e.g. by stand-ins in tests), and the
    environment variables set for them on top of ours (``env``: a launcher's slot, e.g.
    ``CUDA_VISIBLE_DEVICES`` or ``OMP_NUM_THREADS``; see :mod:`.launchers`)."""

    train: list[str] = field(default_factory=lambda: _script("train"))
    evaluate: list[str] = field(default_factory=lambda: _script("evaluate"))
    timing: list[str] = field(default_factory=lambda: [sys.executable, "-m", "detector.ablation.timing"])
    env: dict[str, str] = field(default_factory=dict)


class RunFailed(RuntimeError):
    """A stage exited non-zero; the message names the run, the stage and the log to read."""


def split_overrides(tokens: list[str]) -> list[tuple[str, list[str]]]:
    """``["--model.lr", "0.01", "--trainer.max_epochs=2"]`` -> ``[(flag, [tokens...]), ...]``.

    Raises ValueError for a token that is not a ``--trainer.* / --model.* / --data.*`` flag or
    its value, and for flags the ablation sets itself (naming the ablation option to use).
    """
    groups: list[tuple[str, list[str]]] = []
    for tok in tokens:
        if tok.startswith("--"):
            flag = tok.split("=", 1)[0]
            if flag in RESERVED_FLAGS:
                raise ValueError(f"{flag} is set by the ablation for every run; use {RESERVED_FLAGS[flag]} instead")
            if not flag.startswith(("--trainer.", "--model.", "--data.")):
                raise ValueError(f"unknown option {flag!r}: the ablation passes only --trainer.*, --model.* "
                                 "and --data.* through to train.py (see --help)")
            groups.append((flag, [tok]))
        elif groups:
            groups[-1][1].append(tok)
        else:
            raise ValueError(f"unexpected argument {tok!r}; overrides look like --model.lr 0.01")
    return groups


def flag_value(tokens: list[str], flag: str) -> str | None:
    """The last value given to ``flag`` in ``tokens`` (``--f v`` or ``--f=v``), or None."""
    value = None
    for name, toks in split_overrides(tokens):
        if name == flag:
            value = toks[0].split("=", 1)[1] if "=" in toks[0] else (toks[1] if len(toks) > 1 else None)
    return value


def flatten_overrides(groups) -> list[str]:
    return [t for _, toks in groups for t in toks]


#: Stage subprocesses running now (any thread), so a launcher stopped by Ctrl-C / SIGTERM in
#: its main thread can stop those its worker threads wait on (`stop_children`).
_LIVE: set[subprocess.Popen] = set()
_LIVE_GUARD = threading.Lock()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM (train.py saves last.ckpt and exits 143), SIGKILL after 30 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_children() -> int:
    """Stop every stage subprocess started by `_run_logged` that still runs; return how many."""
    with _LIVE_GUARD:
        procs = [p for p in _LIVE if p.poll() is None]
    for p in procs:
        p.terminate()
    for p in procs:
        _stop(p)
    return len(procs)


def _run_logged(cmd: list[str], log: Path, title: str, env: dict[str, str] | None = None) -> int:
    """Run ``cmd`` with stdout+stderr appended to ``log`` (``env``: variables set on top of
    ours, named in the log); stop the child if we are stopped."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        shown = "".join(f"{k}={shlex.quote(v)} " for k, v in sorted((env or {}).items()))
        f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {title}\n$ {shown}{shlex.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env={**os.environ, **env} if env else None)
        with _LIVE_GUARD:
            _LIVE.add(proc)
        try:
            return proc.wait()
        except BaseException:  # Ctrl-C / SIGTERM of the ablation: leave no orphan training
            _stop(proc)
            raise
        finally:
            with _LIVE_GUARD:
                _LIVE.discard(proc)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def exit_reason(rc: int) -> str:
    """``"code 143 (stopped by SIGTERM)"``: shells report a signal as 128+N, Popen as -N."""
    signum = -rc if rc < 0 else rc - 128 if 128 < rc < 160 else None
    try:
        return f"code {rc} (stopped by {signal.Signals(signum).name})" if signum else f"code {rc}"
    except ValueError:
        return f"code {rc}"


def _run_failed(run: RunDir, stage: str, rc: int, log: Path, hint: str = "") -> RunFailed:
    return RunFailed(f"run {run.spec.name}: {stage} exited with {exit_reason(rc)}{hint}; see {log}\n"
                     f"--- last lines of {log.name} ---\n{_tail(log)}")


def train(run: RunDir, config_args: list[str], overrides: list[str], commands: Commands, echo=print) -> dict:
    """Train (or resume) until the schedule is done; return train.json's content.

    train.json is trusted only with a final checkpoint that passes `training_progress`: a
    train.json whose checkpoint stopped early (written by an older ablation after a SIGTERM
    that train.py reported as success) is discarded and the training resumed.
    """
    done = run.training_done()
    if done:
        progress = training_progress(done["checkpoint"], run.train_dir)
        if progress.complete:
            return {**done, "verified": progress.stamp()}
        warn_file(run.train_marker, f"its checkpoint is at {progress.describe()}", "resuming the training")
        run.train_marker.unlink(missing_ok=True)
    spec = run.spec
    resume = run.latest_checkpoint()
    cmd = [*commands.train, "fit", *train_recipe(spec, config_args, overrides),
           ROOT_FLAG, str(run.train_dir)]
    if resume is not None:
        cmd += ["--ckpt_path", str(resume)]
    echo(f"[{spec.name}] {'resuming from ' + str(resume) if resume else 'training'} (log: {run.train_log})")
    run.log_attempt("start", resumed_from=str(resume) if resume else None, command=cmd)
    rc = _run_logged(cmd, run.train_log, "train", commands.env)
    run.log_attempt("end", returncode=rc)
    if rc != 0:
        raise _run_failed(run, "training", rc, run.train_log, "; rerun the same command to resume it")
    final = run.latest_checkpoint()
    if final is None:
        raise RunFailed(f"run {spec.name}: training exited 0 but wrote no checkpoint under {run.train_dir}; "
                        "the base config must keep checkpointing enabled (ModelCheckpoint, save_last: true)")
    progress = training_progress(final, run.train_dir)
    if not progress.complete:
        raise RunFailed(f"run {spec.name}: training exited 0 but its final checkpoint {final} is at "
                        f"{progress.describe()}: not counted; rerun the same command to resume it "
                        f"(log: {run.train_log})")
    attempts = run.attempts()
    rec = {"returncode": 0, "checkpoint": str(final), "train_time_s": run.train_seconds(),
           "attempts": len(attempts), "resumed": sum(a["resumed_from"] is not None for a in attempts),
           "command": cmd, "verified": progress.stamp()}
    write_json(run.train_marker, rec)
    return rec


def _metrics_of(run: RunDir, global_step: int) -> dict | None:
    """eval/metrics.json if it holds bbox metrics of the checkpoint at ``global_step``."""
    metrics = read_json(run.metrics_file)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("bbox"), dict):
        return None
    return metrics if metrics.get("global_step") in (global_step, None) else None


def evaluate(run: RunDir, checkpoint: str, eval_flags: list[str], commands: Commands, global_step: int,
             echo=print) -> tuple[dict, float | None]:
    """Evaluate ``checkpoint`` (at ``global_step``) into ``eval/`` unless its metrics exist;
    return (metrics, seconds)."""
    metrics = _metrics_of(run, global_step)
    stamp = read_checked(run.path / "eval.json", EVAL_STAMP_FIELDS, "evaluating again")
    if metrics is not None and stamp is not None and stamp["checkpoint"] == checkpoint \
            and stamp.get("global_step") == global_step:
        return metrics, stamp["eval_time_s"]
    # eval/ belongs to this run: stale results there (an interrupted run's) are replaced
    cmd = [*commands.evaluate, checkpoint, "--output", str(run.eval_dir), "--overwrite", "true", *eval_flags]
    echo(f"[{run.spec.name}] evaluating {checkpoint}")
    t0 = time.time()
    rc = _run_logged(cmd, run.eval_log, "evaluate", commands.env)
    seconds = time.time() - t0
    if rc != 0:
        raise _run_failed(run, "evaluation", rc, run.eval_log)
    metrics = _metrics_of(run, global_step)
    if metrics is None:
        raise RunFailed(f"run {run.spec.name}: evaluate.py wrote no bbox metrics of step {global_step} to "
                        f"{run.metrics_file}")
    write_json(run.path / "eval.json", {"checkpoint": checkpoint, "global_step": global_step,
                                               "eval_time_s": seconds})
    return metrics, seconds


def time_inference(run: RunDir, checkpoint: str, images: int, eval_flags: list[str], commands: Commands,
                   global_step: int, echo=print) -> dict:
    """Inference timing into ``timing.json`` unless present for this checkpoint at ``global_step``
    (0 images: skip)."""
    if images <= 0:
        return {}
    timing = read_checked(run.timing_file, TIMING_FIELDS, "timing again")
    if timing is not None and timing["checkpoint"] == checkpoint and timing["global_step"] == global_step:
        return timing
    device = flag_value(eval_flags, "--device")
    cmd = [*commands.timing, checkpoint, "--out", str(run.timing_file), "--images", str(images)]
    if device not in (None, "auto", "cpu"):
        cmd += ["--device", device]
    echo(f"[{run.spec.name}] timing inference on {images} images")
    rc = _run_logged(cmd, run.path / "timing.log", "timing", commands.env)
    if rc != 0:
        raise _run_failed(run, "timing", rc, run.path / "timing.log")
    timing = read_json(run.timing_file)
    if not isinstance(timing, dict):
        raise RunFailed(f"run {run.spec.name}: the timing wrote no result to {run.timing_file}")
    timing = {**timing, "checkpoint": checkpoint, "global_step": global_step}  # which weights were timed
    write_json(run.timing_file, timing)
    return timing


def execute(run: RunDir, config_args: list[str], overrides: list[str], commands: Commands,
            timing_images: int = 20, echo=print) -> tuple[dict, bool]:
    """Bring one run to completion; return ``(run.json content, skipped)``.

    Raises RunFailed, touching nothing, when the run folder holds a run of another command
    (:mod:`.recipe`): skipping it would report its numbers under this command, resuming it
    would mix two recipes in one model.
    """
    problem = recipe_problem(run.path, train_recipe(run.spec, config_args, overrides))
    if problem:
        raise RunFailed(f"run {run.spec.name} in {run.path} {problem}. Its files are kept: give this command "
                        f"another --out, or delete {run.path} to train this run again with it")
    rec = run.record()
    if rec is not None:
        if "verified" not in read_json(run.marker):  # an older run.json, verified just now: keep the proof
            write_json(run.marker, rec)
        echo(f"[{run.spec.name}] complete, skipped")
        return rec, True
    flags = eval_flags([*overrides, *run.spec.axis_flags()])  # a data.* / precision axis is evaluated alike
    trained = train(run, config_args, overrides, commands, echo)
    step = trained["verified"]["global_step"]
    metrics, eval_seconds = evaluate(run, trained["checkpoint"], flags, commands, step, echo)
    timing = time_inference(run, trained["checkpoint"], timing_images, flags, commands, step, echo)
    spec = run.spec
    rec = {
        "complete": True, "name": spec.name, "variant": spec.variant.name, "op": spec.variant.op,
        "mode": spec.variant.mode, "stride": spec.stride, "seed": spec.seed, "axes": dict(spec.axes),
        "bbox": metrics.get("bbox"), "segm": metrics.get("segm"),
        "num_images": metrics.get("num_images"), "global_step": step,
        "checkpoint": trained["checkpoint"], "train_time_s": trained["train_time_s"],
        "train_attempts": trained["attempts"], "eval_time_s": eval_seconds,
        "infer_ms_per_image": timing.get("ms_per_image"), "roi_ms_per_image": timing.get("roi_ms_per_image"),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "train_command": trained["command"],
        "verified": trained["verified"],
    }
    write_json(run.marker, rec)
    echo(f"[{spec.name}] done: bbox AP {_fmt(rec['bbox'], 'AP')}, train {rec['train_time_s']:.0f} s")
    return rec, False


def _fmt(metrics, key) -> str:
    v = (metrics or {}).get(key)
    return "n/a" if v is None else f"{100 * v:.1f}"
