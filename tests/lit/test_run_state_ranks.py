"""The DDP parts of `detector.lit.run_state`, fast (tests/lit/test_ddp.py runs them through train.py):
every rank's RNG states gathered into the checkpoint and each rank's own put back, a seed per rank,
and a SIGTERM under DDP that only raises Lightning's flag."""

from __future__ import annotations

import json
import os
import signal
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detector.lit.run_state import (
    PER_RANK,
    RunStateCallback,
    gather_rng_states,
    rng_states,
    seed_rank,
    states_for_rank,
)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        seed_rank(rank, 0)
        states = gather_rng_states(SimpleNamespace(world_size=2, global_rank=rank))
        mine = states_for_rank(states, rank, 2)
        torch.set_rng_state(mine["torch"])
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"n": len(states[PER_RANK]), "draw": torch.rand(3).tolist(),
                       "top_is_rank0": torch.equal(states["torch"], states[PER_RANK][0]["torch"])}, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_gather_their_rng_states_and_each_gets_its_own_back(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(g["n"] == 2 and g["top_is_rank0"] for g in got)
    for rank in (0, 1):  # the draw after restoring = the draw of a fresh seed `rank` (its own state)
        torch.manual_seed(rank)
        assert got[rank]["draw"] == torch.rand(3).tolist()
    assert got[0]["draw"] != got[1]["draw"]


def test_one_process_keeps_the_plain_format_and_another_world_size_falls_back_to_rank_zero():
    alone = gather_rng_states(SimpleNamespace(world_size=1, global_rank=0))
    assert set(alone) == {"torch", "torch.cuda", "numpy", "python"}
    assert states_for_rank(alone, 0, 1) == alone
    two = {**rng_states(), PER_RANK: ["r0", "r1"]}
    assert states_for_rank(two, 1, 2) == "r1"
    assert set(states_for_rank(two, 2, 4)) == {"torch", "torch.cuda", "numpy", "python"}  # 4 ranks now: rank 0's


def test_seed_rank_gives_each_rank_its_own_stream():
    seed_rank(1, 5)
    a = torch.rand(2)
    torch.manual_seed(6)
    assert torch.equal(a, torch.rand(2))


def test_sigterm_under_ddp_only_raises_lightnings_flag_and_the_handler_is_put_back():
    connector = SimpleNamespace(received_sigterm=False)
    trainer = SimpleNamespace(world_size=2, global_rank=0, _signal_connector=connector)
    before = signal.getsignal(signal.SIGTERM)
    callback = RunStateCallback()
    sigint_before = signal.getsignal(signal.SIGINT)
    callback._install_sigint(trainer)
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert connector.received_sigterm and callback.stop_signal == signal.SIGTERM
    finally:
        callback._uninstall_sigint()
    assert signal.getsignal(signal.SIGTERM) == before and signal.getsignal(signal.SIGINT) == sigint_before
