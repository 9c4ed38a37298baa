"""``python -m detector.ablation``: every ROI variant x stride x seed, trained and scored alike.

    python -m detector.ablation --config configs/ablation.yaml --out runs/ablation
    python -m detector.ablation --config BASE --out DIR --variants roi_pool roi_align_avg \\
        --seeds 1 --strides 32 --trainer.max_epochs 1 --data.synthetic_train 32

Each run is ``python train.py fit --config BASE [overrides] --model.detector.roi_op ...
--model.detector.roi_options {...} --model.detector.stride S --seed_everything K --data.seed K`` into ``DIR/runs/<variant>_s<S>_seed<K>/``,
then ``python evaluate.py`` on its final checkpoint and an inference timing. Rerunning the same
command skips finished runs and resumes interrupted ones. ``--trainer.* --model.* --data.*``
flags go to every run unchanged (so every variant sees identical data and schedule).
Results: ``DIR/results.{csv,json,md}``, ``DIR/runs.csv`` and ``DIR/ablation.png``
(see :mod:`detector.ablation.results` for the table's columns and the spread rule); the
results name the command and the machine. ``--dry-run`` shows what a rerun would do.

Where the runs execute (:mod:`detector.ablation.launchers`): ``--launcher local --jobs N`` runs
N at once here (one GPU each, or a share of the CPU threads; ``--jobs 1``, the default, is the
sequential ablation), ``--launcher slurm`` submits a SLURM array through submitit (``--slurm-*``
flags; ``pip install -e '.[cluster]'``). Each run holds its own OS lock
(``DIR/runs/<run>/.run.lock``, :mod:`detector.ablation.lock`), so several launchers can share a
folder: a run another launcher holds is skipped here and counted as running elsewhere; the
tables are written under ``DIR/.results.lock``.
``--records DIR`` keeps each finished run's small record files in ``DIR/runs/<run>/`` and restores
them into an empty ``--out`` (:mod:`detector.ablation.archive`), so finished runs outlive the run folder.
A run counts only once its final checkpoint has reached the whole schedule (see
:mod:`detector.ablation.progress`): an interrupted training is resumed, never tabulated.
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .archive import archive_records, restore_records
from .grid import Axis, combinations, for_variant, parse_grid
from .launchers import (
    SlurmOptions,
    UsageError,
    launch_local,
    local_slots,
    submit_slurm,
    summary_line,
    wait_slurm,
)
from .lock import RunLock, results_lock
from .recipe import recipe_problem
from .results import write_results
from .runner import Commands, RunFailed, base_roi_options, split_overrides, train_recipe
from .runs import RunDir, RunSpec
from .stakes import quantization_at_stake
from .variants import default_variants, parse_variants


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m detector.ablation", allow_abbrev=False,
        description="Train and evaluate each ROI-layer variant x stride x seed with the real train/evaluate CLI; "
                    "write results.csv/json/md and ablation.png. Unrecognized --trainer.*, --model.* and "
                    "--data.* flags are passed to every training run.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", action="append", required=True, type=Path,
                   help="base train.py config (YAML); repeat to layer several")
    p.add_argument("--out", type=Path, required=True, help="ablation folder (runs/ and the results)")
    defaults = [v.name for v in default_variants()]
    p.add_argument("--variants", nargs="+", default=defaults,
                   help=f"ROI variants, from the ROI variant table (detector.ops.ROI_OPS; plugins add more): "
                        f"default {' '.join(defaults)}")
    p.add_argument("--seeds", type=int, default=3, help="seeds per variant: 0 .. N-1 (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="start the seeds here (default 0)")
    p.add_argument("--strides", type=int, nargs="+", default=[32], choices=[16, 32],
                   help="backbone strides (default 32)")
    p.add_argument("--grid", nargs="+", action="extend", default=[], metavar="KEY=V1,V2",
                   help="extra axes: train.py keys and their values, e.g. model.aligned=false,true "
                        "model.sampling_ratio=1,2,-1 trainer.max_epochs=3,6; one run per combination, a column "
                        "per axis, differences to RoIPool within each combination (detector/ablation/grid.py)")
    p.add_argument("--timing-images", type=int, default=20,
                   help="validation images for the inference timing per run (0: skip timing)")
    p.add_argument("--analysis", action=argparse.BooleanOptionalAction, default=True,
                   help="also run the quantization analysis (no training) on the same validation data, "
                        "into DIR/quantization/ and the results' header (default: on)")
    p.add_argument("--keep-going", action="store_true",
                   help="after a failed run, go on with the others (the table marks it missing)")
    p.add_argument("--report-only", action="store_true", help="only rebuild the tables from finished runs")
    p.add_argument("--records", type=Path, metavar="DIR",
                   help="keep finished runs' records (run.json, commands, metrics, analysis; no checkpoints, about "
                        "190 kB a run) in DIR/runs/<run>/: restored into --out before anything runs where a run's "
                        "folder is absent or empty, archived there each time the tables are written; a published "
                        "table's folder (docs/ablation/...) is such a DIR (detector/ablation/archive.py)")
    g = p.add_argument_group("launchers (see detector/ablation/launchers.py and docs/cluster.md)")
    g.add_argument("--launcher", choices=["local", "slurm"], default="local",
                   help="local: runs on this machine (default); slurm: one SLURM array task per run, via submitit "
                        "(pip install -e '.[cluster]')")
    g.add_argument("--jobs", type=int, default=None,
                   help="local: runs at once (default 1: one after another), one GPU each when GPUs exist "
                        "(at most one per GPU), else CPU threads split between them; slurm: array tasks "
                        "running at once (default: no limit)")
    g.add_argument("--slurm-partition", help="SLURM partition of the array's tasks")
    g.add_argument("--slurm-time", type=int, default=24 * 60, metavar="MINUTES",
                   help="time limit per task in minutes (default 1440); a task that reaches it is requeued "
                        "and resumes from last.ckpt")
    g.add_argument("--slurm-gpus-per-run", type=int, default=1, help="GPUs per task (default 1)")
    g.add_argument("--slurm-mem", type=float, metavar="GB", help="memory per task in GB (default: the partition's)")
    g.add_argument("--slurm-cpus-per-run", type=int, help="CPU cores per task (default: the partition's)")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. account=myproject or qos=high (repeatable)")
    g.add_argument("--slurm-cluster", choices=["slurm", "local"], default="slurm",
                   help="local: submitit's local executor instead of SLURM (the same code path, for testing)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and each run's state, run nothing")
    return p


def plan(args, axes: Sequence[Axis] = ()) -> list[RunSpec]:
    """Runs in execution order: seed outermost, so an interrupted ablation has every variant
    at the first seeds before any variant has all of them. With grid axes, one run per
    combination, except that a variant the axis does not change (RoIPool for ``aligned``) is
    run once and shared (:mod:`.grid`)."""
    variants = parse_variants(args.variants)
    if args.seeds < 1:
        raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    specs = [RunSpec(v, s, k, for_variant(combo, axes, v))
             for k in seeds for s in args.strides for combo in combinations(axes) for v in variants]
    return list(dict.fromkeys(specs))  # shared runs once, first place kept


def machine() -> str:
    """One line naming the hardware and software the times were measured on."""
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch
        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        sw = f"torch {torch.__version__}"
    except ImportError:  # pragma: no cover - torch is a dependency
        gpu, sw = "?", "torch ?"
    return f"{cpu}, {cores} usable cores, {gpu}; {platform.system()} {platform.release()}, Python {platform.python_version()}, {sw}"


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (``kill``, a job scheduler's stop) unwinds like Ctrl-C, so the runner stops its
    training subprocess (which then saves ``last.ckpt``) instead of orphaning it."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None, commands: Commands | None = None, echo=print) -> dict:
    """Run the ablation; return the results document (see :func:`write_results`)."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    args.out = args.out.resolve()  # run records hold paths; keep them valid from any working directory
    split_overrides(rest)  # validate before anything runs
    for c in args.config:
        if not c.is_file():
            raise ValueError(f"--config {str(c)!r} does not exist")
    variants = parse_variants(args.variants)
    # absolute: runs start in parallel threads and SLURM tasks, which must not depend on the working directory
    config_args = [t for c in args.config for t in ("--config", str(c.resolve()))]
    axes = parse_grid(args.grid, variants, config_args, rest)
    specs = plan(args, axes)
    command = shlex.join(["python", "-m", "detector.ablation", *(argv if argv is not None else sys.argv[1:])])
    settings = {"command": command, "machine": machine(), "config": [str(c) for c in args.config], "overrides": rest,
                "variants": [v.name for v in variants], "strides": args.strides,
                "seeds": list(range(args.first_seed, args.first_seed + args.seeds)),
                "grid": {a.key: list(a.values) for a in axes}}
    def recipe_for(spec: RunSpec) -> list[str]:
        return train_recipe(spec, config_args, rest)

    if args.records is not None:
        restored = restore_records(args.records, args.out, specs, recipe_for, echo, dry_run=args.dry_run)
    if args.dry_run:
        for spec in specs:
            if args.records is not None and spec.name in restored:
                echo(f"{spec.name}: complete (restored from --records {args.records} on a real run)")
                continue
            run = RunDir(args.out, spec)
            rec, problem = run.check_record()
            other = recipe_problem(run.path, recipe_for(spec))
            state = (f"not this command's run: it {other}" if other
                     else "complete" if rec else "running elsewhere" if RunLock(run.path).is_held_elsewhere()
                     else "trained" if run.training_done()
                     else f"resume from {run.latest_checkpoint()}" if run.latest_checkpoint() else "new")
            echo(f"{spec.name}: {state}" + (f" (run.json not counted: {problem})" if problem else ""))
        return {"plan": [s.name for s in specs]}
    commands = commands or Commands()
    launch = _check_launcher(args, rest)
    base_roi_options(config_args, rest)  # parse the config here, once, before any launcher thread exists
    t0 = time.time()
    if args.analysis:
        with results_lock(args.out):
            settings["at_stake"] = quantization_at_stake(args.config, rest, args.strides,
                                                         args.out / "quantization")["line"]
        echo(settings["at_stake"])

    def tables(plot: bool = True) -> dict:
        with results_lock(args.out):  # another launcher on this folder may be writing them now
            doc = write_results(args.out, specs, variants, args.strides, settings, plot=plot, axes=axes,
                                recipe_for=recipe_for)
            if args.records is not None:
                archive_records(args.records, args.out, specs, recipe_for, echo)
            return doc

    outcomes = []
    if not args.report_only:
        with _sigterm_as_interrupt():
            try:
                outcomes = _launch(args, launch, specs, config_args, rest, commands, tables, echo)
            except RunFailed:
                tables()
                raise
    doc = tables()
    echo((args.out / "results.md").read_text())
    failures = [o.name for o in outcomes if o.state == "failed"]
    if args.launcher != "local" or len(launch) > 1 or any(o.state == "elsewhere" for o in outcomes):
        echo(summary_line(outcomes))
    echo(f"ablation wall time {(time.time() - t0) / 60:.1f} min; wrote {args.out}/results.{{csv,json,md}}, "
         f"runs.csv, ablation.png" + (f"; failed: {failures}" if failures else ""))
    return {**doc, "launch": [vars(o) for o in outcomes]}


def _check_launcher(args, rest):
    """Validate the launcher flags before anything runs: the local slots, or the SLURM options."""
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.launcher == "local":
        used = [f for f in ("partition", "mem", "cpus_per_run") if getattr(args, f"slurm_{f}") is not None]
        if used or args.slurm_option:
            flag = f"--slurm-{(used or ['option'])[0].replace('_', '-')}"
            raise UsageError(f"{flag} is for --launcher slurm; add --launcher slurm or drop it")
        return local_slots(args.jobs or 1, rest) if not args.report_only else [{}]
    options = SlurmOptions(partition=args.slurm_partition, time_min=args.slurm_time,
                           gpus_per_run=args.slurm_gpus_per_run, mem_gb=args.slurm_mem,
                           cpus_per_run=args.slurm_cpus_per_run, parallel=args.jobs,
                           cluster=args.slurm_cluster, extra=tuple(args.slurm_option))
    if not args.report_only:
        from .launchers import import_submitit

        import_submitit()
        options.check()
    return options


def _launch(args, launch, specs, config_args, rest, commands, tables, echo):
    """Execute the runs with the chosen launcher; return their outcomes (raises the first
    `RunFailed` at the end without --keep-going, after the others finished)."""
    if args.launcher == "local":
        return launch_local(args.out, specs, config_args, rest, commands, args.timing_images, launch,
                            args.keep_going, lambda: tables(plot=False), echo)
    jobs, settled = submit_slurm(args.out, specs, config_args, rest, commands, args.timing_images, launch, echo)
    try:
        outcomes = settled + wait_slurm(jobs, progress=lambda: tables(plot=False), echo=echo)
    except KeyboardInterrupt:
        echo(f"stopped waiting: the SLURM tasks go on; tabulate later with the same command and --report-only "
             f"(task logs: {args.out / 'slurm'})")
        raise
    failed = [o for o in outcomes if o.state == "failed"]
    if failed and not args.keep_going:
        raise RunFailed("\n".join(o.error if o.log in o.error else f"{o.error} (log: {o.log})" for o in failed))
    return outcomes
