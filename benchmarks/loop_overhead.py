"""What Lightning's training loop costs on top of a plain PyTorch loop over the same steps.

Both loops run in this process on the same in-memory batches (no data loading in either),
from the same initial weights, with the same optimizer, LR schedule and gradient clipping:

- ``plain``: ``loss = sum(model(images, targets).values()); zero_grad; backward;
  clip_grad_norm_; step; scheduler.step()``;
- ``lightning-bare``: `DetectorModule` under a `Trainer` with no logger, progress bar or
  checkpointing: the loop, hooks, `training_step` (loss logging, non-finite check);
- ``lightning-train.py``: the same with what train.py adds by default: progress bar,
  CSV + TensorBoard loggers, LR monitor, the last/best checkpoint callbacks (they save only
  at epoch end, which these steps do not reach, so the timing is the per-step overhead).

The variants alternate (plain, bare, train.py, plain, ...) so a machine whose load drifts
penalizes all alike; each is timed by wall clock and by this process's CPU time (less
sensitive to other processes on a shared machine). Reported: median seconds per step and
the overhead of each Lightning variant against plain, in percent. The target is <= 5%.

    python benchmarks/loop_overhead.py                       # quickstart-sized model, 30 steps x 3
    python benchmarks/loop_overhead.py --steps 50 --repeats 5 --threads 2 --out runs/bench/loop.json
    python benchmarks/loop_overhead.py --precision bf16-mixed     # the quickstart's bf16 + channels_last steps
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detector.cli import read_train_config, section  # noqa: E402
from detector.cli.train import default_loggers  # noqa: E402
from detector.data import DetectionDataModule  # noqa: E402
from detector.io import write_json  # noqa: E402
from detector.lit import DetectorModule  # noqa: E402
from detector.lit.checkpoints import default_checkpoint_callbacks  # noqa: E402
from detector.lit.schedule import make_lr_lambda  # noqa: E402

QUICKSTART = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "quickstart.yaml")


def quickstart_module(num_classes: int, channels_last: bool) -> tuple[DetectorModule, float]:
    """The quickstart's `DetectorModule` and gradient clip, as ``train.py fit --config
    configs/quickstart.yaml`` reads them (train.py's own parser), so the ratio is the one users see."""
    config = read_train_config(["--config", QUICKSTART])
    model = section(config, "model")
    model["detector"] = {**model["detector"], "num_classes": num_classes}
    if model.get("optimizer") != "adamw":
        raise ValueError(f"{QUICKSTART} trains with {model.get('optimizer')!r}; the plain loop here mirrors AdamW only")
    return DetectorModule(**{**model, "channels_last": channels_last}), float(config.trainer.gradient_clip_val)


class _Timer(pl.Callback):
    """Wall and CPU time from the first batch's start to the last batch's end: every step
    and everything Lightning does between steps, not its one-off setup and teardown."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.t0, self.c0 = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.t1, self.c1 = time.perf_counter(), time.process_time()


def plain_loop(module: DetectorModule, batches: list, steps: int, clip: float, bf16: bool = False) -> tuple[float, float]:
    model = module.model
    model.train()
    hp = module.hparams
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=hp.lr,
                                  weight_decay=hp.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, make_lr_lambda(steps, hp.lr_schedule, hp.warmup_steps, hp.warmup_factor))
    t, c = time.perf_counter(), time.process_time()
    for images, targets in batches[:steps]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # what Lightning's bf16-mixed does
            losses = model(images, targets)
            loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
        scheduler.step()
    return time.perf_counter() - t, time.process_time() - c


def lightning_loop(module: DetectorModule, batches: list, steps: int, clip: float, full: bool, datamodule,
                   precision: str = "32-true") -> tuple[float, float]:
    timer = _Timer()
    with tempfile.TemporaryDirectory() as root:
        extra = dict(logger=default_loggers(root), enable_progress_bar=True,
                     callbacks=[timer, *default_checkpoint_callbacks(root)]) if full else dict(
            logger=False, enable_progress_bar=False, enable_checkpointing=False, callbacks=[timer])
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, gradient_clip_val=clip, precision=precision,
                             num_sanity_val_steps=0, limit_val_batches=0, enable_model_summary=False,
                             log_every_n_steps=10, **extra)
        # the module reads its category table from a datamodule; the batches are given directly
        module.category_ids, module.category_names = list(datamodule.category_ids), list(datamodule.category_names)
        loader = DataLoader(batches[:steps], batch_size=None, shuffle=False, collate_fn=lambda b: b)
        t, c = time.perf_counter(), time.process_time()
        trainer.fit(module, train_dataloaders=loader)
        total_wall, total_cpu = time.perf_counter() - t, time.process_time() - c
    # Lightning's fixed setup (building the trainer state, first-batch hooks) is reported
    # apart from the loop: over a real run it is paid once.
    return timer.t1 - timer.t0, timer.c1 - timer.c0, total_wall, total_cpu


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    p.add_argument("--repeats", type=int, default=3, help="alternating rounds of all variants")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is steadiest on a shared machine)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--precision", choices=("32-true", "bf16-mixed"), default="32-true",
                   help="bf16-mixed = the quickstart's setting (with channels_last)")
    p.add_argument("--out", default="runs/benchmarks/loop_overhead.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    pl.seed_everything(0, verbose=False)

    dm = DetectionDataModule(batch_size=args.batch_size, num_workers=0)
    dm.prepare_data()
    dm.setup("fit")
    it = iter(dm.train_dataloader())
    batches = [next(it) for _ in range(args.steps)]
    bf16 = args.precision == "bf16-mixed"
    initial, clip = quickstart_module(dm.num_classes, channels_last=bf16)
    warm = copy.deepcopy(initial)
    plain_loop(warm, batches, 2, clip, bf16)  # first-touch allocations, kernel/JIT warm-up: paid by nobody below

    rows: dict[str, list] = {"plain": [], "lightning-bare": [], "lightning-train.py": []}
    for r in range(args.repeats):
        rows["plain"].append(plain_loop(copy.deepcopy(initial), batches, args.steps, clip, bf16))
        rows["lightning-bare"].append(lightning_loop(copy.deepcopy(initial), batches, args.steps, clip, False, dm,
                                                     args.precision))
        rows["lightning-train.py"].append(lightning_loop(copy.deepcopy(initial), batches, args.steps, clip, True, dm,
                                                         args.precision))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{k} {v[-1][0]:.1f}s" for k, v in rows.items()), flush=True)

    result = {"steps": args.steps, "repeats": args.repeats, "threads": args.threads, "batch_size": args.batch_size,
              "precision": args.precision,
              "load_average": os.getloadavg(), "variants": {}}
    base_wall = statistics.median(w for w, _ in rows["plain"]) / args.steps
    base_cpu = statistics.median(c for _, c in rows["plain"]) / args.steps
    print(f"\n{'variant':<20} {'wall s/step':>12} {'cpu s/step':>11} {'wall overhead':>14} {'cpu overhead':>13}"
          f" {'one-off setup s':>16}")
    for name, runs in rows.items():
        wall = statistics.median(r[0] for r in runs) / args.steps
        cpu = statistics.median(r[1] for r in runs) / args.steps
        setup = statistics.median(r[2] - r[0] for r in runs) if name != "plain" else 0.0
        entry = {"wall_s_per_step": wall, "cpu_s_per_step": cpu, "wall_overhead_pct": 100 * (wall / base_wall - 1),
                 "cpu_overhead_pct": 100 * (cpu / base_cpu - 1), "setup_wall_s": setup, "raw": runs}
        result["variants"][name] = entry
        print(f"{name:<20} {wall:>12.3f} {cpu:>11.3f} {entry['wall_overhead_pct']:>+13.1f}% "
              f"{entry['cpu_overhead_pct']:>+12.1f}% {setup:>16.2f}")
    print(f"(load average during the run: {', '.join(f'{x:.1f}' for x in result['load_average'])}; "
          "target: Lightning's per-step overhead <= 5%)")
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
