"""gather_per_image across 2 real processes (gloo): every rank gets every image once."""

from __future__ import annotations

import json

import torch.distributed as dist
import torch.multiprocessing as mp

from detector.evaluation.distributed import flatten, gather_per_image


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        def det(i):
            return [{"image_id": i, "category_id": 1, "bbox": [i, 0, 1, 1], "score": 0.5}]

        # 5 images over 2 ranks as DistributedSampler deals them: rank 1 gets image 0 again as padding.
        shard = {0: det(0), 2: det(2), 4: det(4)} if rank == 0 else {1: det(1), 3: det(3), 0: det(0)}
        merged = gather_per_image(shard)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump({"ids": list(merged), "n": len(flatten(merged))}, f)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_merge_to_each_image_once(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "pg"), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == {"ids": [0, 1, 2, 3, 4], "n": 5}
