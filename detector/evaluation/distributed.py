"""Detections from every rank, each image once: what makes DDP AP equal one process's AP.

Under DDP each rank sees a shard of the validation set. `DistributedSampler` pads the
shards to equal length by repeating images from the start of the dataset, so a plain
concatenation would count those images twice (their detections as duplicates, i.e. extra
false positives, and their ground truth once: AP would drop). `gather_per_image`
collects ``{image_id: results}`` from all ranks and keeps each image id once. For a
detector in eval mode an image's detections do not depend on which rank computed them,
so keeping the first copy is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.distributed as dist

PerImage = dict[int, list[dict[str, Any]]]


def merge_per_image(shards: list[Mapping[int, list[dict[str, Any]]]]) -> PerImage:
    """Union of per-rank ``{image_id: results}`` maps; an image id seen again is dropped.

    Order: images sorted by id, so the merged list (and ``detections.json``) does not
    depend on the number of ranks.
    """
    merged: PerImage = {}
    for shard in shards:
        for image_id, results in shard.items():
            merged.setdefault(int(image_id), list(results))
    return dict(sorted(merged.items()))


def gather_per_image(local: Mapping[int, list[dict[str, Any]]]) -> PerImage:
    """All ranks' ``{image_id: results}`` merged (see `merge_per_image`), on every rank.

    Without an initialized process group (one process) it is `merge_per_image([local])`.
    Uses `torch.distributed.all_gather_object`: the results are small Python objects
    (a few hundred bytes per detection), and gloo and NCCL both support it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return merge_per_image([local])
    shards: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shards, dict(local))
    return merge_per_image(shards)


def flatten(per_image: Mapping[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """``{image_id: results}`` -> one results list (the COCO results file's content)."""
    return [r for results in per_image.values() for r in results]
