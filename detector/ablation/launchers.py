"""Where the ablation's runs execute: here, N at once (``--launcher local --jobs N``), or as a
SLURM array job through submitit (``--launcher slurm``).

Every run is the same `detector.ablation.runner.execute` (train.py, evaluate.py, timing as
subprocesses), held under its per-run OS lock (`detector.ablation.lock.RunLock`): a run that
another launcher holds is skipped here and counted as *running elsewhere*, so any number of
launchers can share one folder and no run executes twice at once.

Local (`launch_local`):

- ``--jobs 1`` (default): the runs one after another in this process's thread, exactly as
  before launchers existed; the stages see our environment unchanged (all GPUs visible).
- ``--jobs N``: N worker threads, each owning one *slot* for its whole life and taking the
  next run from a shared queue, so two runs never share a slot. A slot is one GPU
  (``CUDA_VISIBLE_DEVICES`` set to one of the devices this process sees, honouring a
  ``CUDA_VISIBLE_DEVICES`` already set) when ``torch.cuda.device_count() > 0`` and the
  overrides do not say ``--trainer.accelerator cpu``; otherwise a share of the CPU cores
  (``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` = max(1, cores // N)). ``--jobs`` above the GPUs
  is refused (`UsageError`), never queued onto a busy GPU.
- A failed run is reported (its message names the log) and, with ``--keep-going``, the others
  go on; without it no new run starts, the runs under way finish, then the first failure is
  raised. Ctrl-C / SIGTERM stops every stage subprocess (train.py saves ``last.ckpt``).

SLURM (`launch_slurm`): one array task per run that is not complete, each a `RunJob` (a
``submitit.helpers.Checkpointable``): on preemption or timeout submitit calls its
``checkpoint`` and requeues the task with the same arguments, and the requeued task resumes
the training from the run's newest checkpoint (``last.ckpt``), as every rerun does. The
launcher waits for the array and tabulates; if it is stopped, the tasks go on, and
``--report-only`` tabulates later. ``--slurm-cluster local`` runs the same submitit code path
with submitit's local executor (no SLURM): that is what the tests exercise.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .lock import RunBusy, RunLock
from .runner import Commands, RunFailed, execute, flag_value, stop_children
from .runs import RunDir, RunSpec

CLUSTER_EXTRA = "pip install -e '.[cluster]'"


class UsageError(ValueError):
    """A launcher option that cannot work here (command-line input: exit code 2)."""


@dataclass
class Outcome:
    """What became of one run in this launcher: ``state`` is "done" (executed here), "skipped"
    (complete before), "elsewhere" (another launcher holds it) or "failed" (``error`` says why,
    naming the log)."""

    name: str
    state: str
    error: str | None = None
    log: str | None = None


def summary_line(outcomes: list[Outcome]) -> str:
    """``"4 runs: 2 done here, 1 skipped (complete), 1 running elsewhere, 0 failed"``."""
    count = {s: sum(o.state == s for o in outcomes) for s in ("done", "skipped", "elsewhere", "failed")}
    line = (f"{len(outcomes)} runs: {count['done']} done here, {count['skipped']} skipped (complete), "
            f"{count['elsewhere']} running elsewhere, {count['failed']} failed")
    return line + "".join(f"\n  FAILED {o.name}: see {o.log}" for o in outcomes if o.state == "failed")


def run_locked(run: RunDir, config_args: list[str], overrides: list[str], commands: Commands,
               timing_images: int, echo: Callable[[str], None] = print) -> Outcome:
    """`execute` one run under its `RunLock`; never raises `RunFailed` (it is the outcome)."""
    lock = RunLock(run.path)
    try:
        lock.acquire()
    except RunBusy as busy:
        if run.record(warn=False) is not None:  # finished by its holder, which is checking it now
            echo(f"[{run.spec.name}] complete, skipped")
            return Outcome(run.spec.name, "skipped")
        echo(f"[{run.spec.name}] running elsewhere, skipped here ({lock.holder()})")
        return Outcome(run.spec.name, "elsewhere", str(busy))
    try:
        _, skipped = execute(run, config_args, overrides, commands, timing_images, echo)
        return Outcome(run.spec.name, "skipped" if skipped else "done")
    except RunFailed as e:
        return Outcome(run.spec.name, "failed", str(e), _log_of(str(e), run))
    finally:
        lock.release()


def _log_of(message: str, run: RunDir) -> str:
    """The log a RunFailed message names (``...; see PATH``), else the run's train.log."""
    first = message.splitlines()[0] if message else ""
    return first.rsplit("; see ", 1)[1] if "; see " in first else str(run.train_log)


# --------------------------------------------------------------------------- local
def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries for the children."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - a broken CUDA install is "no GPU" here; the run reports it
        count = 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return listed[:count]
    return [str(i) for i in range(count)]


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_slots(jobs: int, overrides: list[str], gpus: list[str] | None = None,
                cores: int | None = None) -> list[dict[str, str]]:
    """One environment per concurrent run (see the module doc); ``[{}]`` for ``jobs == 1``.

    >>> local_slots(2, [], gpus=["0", "1", "2"])
    [{'CUDA_VISIBLE_DEVICES': '0'}, {'CUDA_VISIBLE_DEVICES': '1'}]
    >>> local_slots(3, [], gpus=[], cores=8)[0]
    {'OMP_NUM_THREADS': '2', 'MKL_NUM_THREADS': '2'}
    """
    if jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {jobs}")
    if jobs == 1:
        return [{}]
    on_cpu = flag_value(overrides, "--trainer.accelerator") == "cpu"
    gpus = [] if on_cpu else (visible_gpus() if gpus is None else gpus)
    if gpus:
        if jobs > len(gpus):
            raise UsageError(
                f"--jobs {jobs} asks for {jobs} runs at once but this machine shows {len(gpus)} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES / torch.cuda.device_count()); one run per GPU: use --jobs {len(gpus)} "
                "or fewer, or --launcher slurm for more")
        return [{"CUDA_VISIBLE_DEVICES": g} for g in gpus[:jobs]]
    threads = str(max(1, (usable_cores() if cores is None else cores) // jobs))
    return [{"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads} for _ in range(jobs)]


def describe_slot(env: dict[str, str]) -> str:
    if "CUDA_VISIBLE_DEVICES" in env:
        return f"GPU {env['CUDA_VISIBLE_DEVICES']}"
    if "OMP_NUM_THREADS" in env:
        return f"{env['OMP_NUM_THREADS']} CPU thread(s)"
    return "this process's environment"


def launch_local(out: Path, specs: list[RunSpec], config_args: list[str], overrides: list[str],
                 commands: Commands, timing_images: int, slots: list[dict[str, str]], keep_going: bool,
                 progress: Callable[[], None], echo: Callable[[str], None] = print) -> list[Outcome]:
    """Execute ``specs`` on ``slots`` (one run per slot at a time); ``progress()`` after each
    run (writes the table so far). Returns the outcomes in plan order; raises the first
    `RunFailed` at the end unless ``keep_going``."""
    guard = threading.Lock()

    def say(line: str) -> None:
        with guard:
            echo(line)

    todo: queue.Queue = queue.Queue()
    for i, spec in enumerate(specs, 1):
        todo.put((i, spec))
    outcomes: dict[str, Outcome] = {}
    stop = threading.Event()

    def worker(slot: dict[str, str]) -> None:
        slot_commands = dataclasses.replace(commands, env={**commands.env, **slot})
        while not stop.is_set():
            try:
                i, spec = todo.get_nowait()
            except queue.Empty:
                return
            where = f" on {describe_slot(slot)}" if slot else ""
            say(f"--- run {i}/{len(specs)}: {spec.name}{where}")
            outcome = run_locked(RunDir(out, spec), config_args, overrides, slot_commands, timing_images, say)
            with guard:
                outcomes[spec.name] = outcome
            if outcome.state == "failed":
                if keep_going:
                    say(f"FAILED: {outcome.error}")
                else:  # the error itself is raised at the end
                    stop.set()
                    if len(slots) > 1:
                        say(f"FAILED: {spec.name} (see {outcome.log}); no new run starts, the runs under way finish")
            progress()

    if len(slots) == 1:
        worker(slots[0])  # --jobs 1: in this thread, as the ablation always ran
    else:
        threads = [threading.Thread(target=worker, args=(slot,), name=f"run-slot-{k}", daemon=True)
                   for k, slot in enumerate(slots)]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)  # short waits: Ctrl-C / SIGTERM reach this thread
        except BaseException:
            stop.set()
            stop_children()  # each worker's stage returns; its run fails and the worker ends
            for t in threads:
                t.join(timeout=60)
            raise
    done = [outcomes[s.name] for s in specs if s.name in outcomes]
    failed = [o for o in done if o.state == "failed"]
    if failed and not keep_going:
        raise RunFailed(failed[0].error + "".join(f"\nalso failed: {o.name} (see {o.log})" for o in failed[1:]))
    return done


# --------------------------------------------------------------------------- slurm
def import_submitit():
    """submitit, or a `UsageError` naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UsageError(f"--launcher slurm needs submitit, which is not installed: {CLUSTER_EXTRA}") from None
    return submitit


@dataclass(frozen=True)
class SlurmOptions:
    """Per-run resources of the array's tasks (``--slurm-*`` flags)."""

    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_run: int = 1
    mem_gb: float | None = None
    cpus_per_run: int | None = None
    parallel: int | None = None  # at most this many tasks at once (--jobs), None: SLURM's limit
    cluster: str = "slurm"  # "local": submitit's local executor (tests, no SLURM)
    extra: tuple[str, ...] = ()  # more sbatch options, "key=value" (e.g. account=abc)

    def check(self) -> None:
        if self.time_min < 1:
            raise UsageError(f"--slurm-time must be >= 1 minute, got {self.time_min}")
        if self.gpus_per_run < 0:
            raise UsageError(f"--slurm-gpus-per-run must be >= 0, got {self.gpus_per_run}")
        if self.mem_gb is not None and self.mem_gb <= 0:
            raise UsageError(f"--slurm-mem must be > 0 GB, got {self.mem_gb}")
        if self.cpus_per_run is not None and self.cpus_per_run < 1:
            raise UsageError(f"--slurm-cpus-per-run must be >= 1, got {self.cpus_per_run}")
        for item in self.extra:
            if "=" not in item:
                raise UsageError(f"--slurm-option {item!r}: expected key=value, e.g. account=myproject")
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise UsageError("--launcher slurm: no sbatch on PATH; run the ablation on a SLURM login node "
                             "(or --launcher local here)")


class RunJob:
    """One array task: `run_locked` on the compute node; returns the `Outcome` as a dict.

    Checkpointable the way ``submitit.helpers.Checkpointable`` is (submitit calls
    ``checkpoint`` on preemption/timeout and requeues what it returns: this callable with the
    same arguments), without subclassing it so that importing this module needs no submitit.
    Nothing to save first: the requeued task resumes from the run's newest checkpoint, and
    train.py, stopped by SIGTERM when this process exits, writes ``last.ckpt``.
    """

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __call__(self, out: str, spec: RunSpec, config_args: list[str], overrides: list[str],
                 commands: Commands, timing_images: int) -> dict:
        def echo(line: str) -> None:
            print(line, flush=True)

        run = RunDir(Path(out), spec)
        return dataclasses.asdict(run_locked(run, config_args, overrides, commands, timing_images, echo))


def make_executor(out: Path, options: SlurmOptions):
    submitit = import_submitit()
    folder = out / "slurm" / "%j"
    params: dict = {"timeout_min": options.time_min, "gpus_per_node": options.gpus_per_run, "nodes": 1,
                    "tasks_per_node": 1, "name": f"ablation-{out.name}"}
    if options.cpus_per_run is not None:
        params["cpus_per_task"] = options.cpus_per_run
    if options.mem_gb is not None:
        params["mem_gb"] = options.mem_gb
    if options.partition is not None:
        params["slurm_partition"] = options.partition
    if options.parallel is not None:
        params["slurm_array_parallelism"] = options.parallel
    if options.extra:
        params["slurm_additional_parameters"] = dict(item.split("=", 1) for item in options.extra)
    executor = submitit.AutoExecutor(folder=folder, cluster=options.cluster)
    executor.update_parameters(**params)
    return executor


def submit_slurm(out: Path, specs: list[RunSpec], config_args: list[str], overrides: list[str],
                 commands: Commands, timing_images: int, options: SlurmOptions,
                 echo: Callable[[str], None] = print) -> tuple[list, list[Outcome]]:
    """Submit one array task per run that is not complete; return (jobs, outcomes of the runs
    not submitted: complete, or held by another launcher now)."""
    import_submitit()
    options.check()
    todo, settled = [], []
    for spec in specs:
        run = RunDir(out, spec)
        if run.record(warn=False) is not None:
            echo(f"[{spec.name}] complete, skipped")
            settled.append(Outcome(spec.name, "skipped"))
        elif RunLock(run.path).is_held_elsewhere():
            echo(f"[{spec.name}] running elsewhere, not submitted ({RunLock(run.path).holder()})")
            settled.append(Outcome(spec.name, "elsewhere"))
        else:
            todo.append(spec)
    if not todo:
        return [], settled
    executor = make_executor(out, options)
    args = [(str(out), spec, config_args, overrides, commands, timing_images) for spec in todo]
    jobs = executor.map_array(RunJob(), *zip(*args))
    for spec, job in zip(todo, jobs):
        job.spec_name = spec.name
        echo(f"[{spec.name}] submitted as job {job.job_id} (log: {job.paths.stdout})")
    return jobs, settled


def wait_slurm(jobs: list, poll_s: float = 5.0, progress: Callable[[], None] | None = None,
               echo: Callable[[str], None] = print) -> list[Outcome]:
    """Wait for the array; one `Outcome` per job (a crashed task: "failed" with its log)."""
    pending = list(jobs)
    outcomes: dict[str, Outcome] = {}
    while pending:
        for job in [j for j in pending if j.done()]:
            pending.remove(job)
            outcomes[job.spec_name] = _job_outcome(job)
            o = outcomes[job.spec_name]
            echo(f"[{o.name}] job {job.job_id}: {o.state}" + (f": {o.error}" if o.error else ""))
            if progress is not None:
                progress()
        if pending:
            time.sleep(poll_s)
    return [outcomes[j.spec_name] for j in jobs]


def _job_outcome(job) -> Outcome:
    try:
        result = job.result()
    except Exception as e:  # noqa: BLE001 - the task crashed / was cancelled: report, go on
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return Outcome(job.spec_name, "failed", f"job {job.job_id} failed: {first}", str(job.paths.stderr))
    return Outcome(**result)
