"""evaluate.py under DDP: each rank detects its shard of the validation loader (`shard_loader`);
together the shards cover every image (one rank padded with a repeat, dropped by the gather)."""

from __future__ import annotations

from torch.utils.data import DataLoader

from detector.evaluation.distributed import merge_per_image
from detector.evaluation.runner import shard_loader


def _collate(batch):
    return list(batch)


def test_shards_cover_every_image_and_one_process_keeps_its_loader():
    loader = DataLoader(list(range(5)), batch_size=2, collate_fn=_collate)
    assert shard_loader(loader, 0, 1) is loader
    shards = [[i for batch in shard_loader(loader, rank, 2) for i in batch] for rank in (0, 1)]
    assert shards == [[0, 2, 4], [1, 3, 0]]  # DistributedSampler in order, rank 1 padded with image 0
    merged = merge_per_image([{i: [i] for i in shard} for shard in shards])
    assert list(merged) == [0, 1, 2, 3, 4]
