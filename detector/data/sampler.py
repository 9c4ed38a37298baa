"""Training data order and augmentation that a resumed run repeats exactly.

A run stopped after step k and resumed with ``--ckpt_path last`` must see the same images,
in the same order, with the same random flips and colour jitter, as a run that never
stopped. PyTorch's defaults do not give that: ``DataLoader(shuffle=True, generator=g)``
draws each epoch's permutation from where `g` happens to be (a resumed process starts `g`
again from the seed, so epoch 3 gets epoch 0's order), and transforms draw from the
global RNG of whichever process (main or worker) loads the sample. Hence three pieces:

- `EpochSampler`: epoch e's permutation is a function of ``(seed, e)`` alone, and so is
  every sample's augmentation seed; it can start an epoch at a given position. It is a
  `DistributedSampler` (one shard per rank, reshuffled by ``set_epoch``), so Lightning's
  DDP uses it as it is instead of wrapping it.
- `SeededSamples`: wraps the dataset; loads sample ``(index, seed)`` with the global torch
  RNG seeded to ``seed`` for the duration of the call (and restored after it), so the
  augmentation of one sample depends on ``(seed, epoch, index)`` only: not on the worker,
  the number of workers, nor on what the model drew from the RNG before.
- `ResumableDataLoader`: a `DataLoader` with ``state_dict``/``load_state_dict`` (the
  protocol through which Lightning 2.x saves a train loader's position into the
  checkpoint, ``loops.fit_loop.state_dict.combined_loader``, and restores it before the
  resumed epoch's iterator is created). Its state is the epoch and the number of samples
  this rank has handed out in it, counted as batches leave the loader (the samples that
  workers prefetched but training never saw are not counted).

The model's own random draws (RPN / ROI box sampling) come from the global RNG, which
`detector.lit.run_state` saves in each checkpoint and restores on resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

SampleKey = tuple[int, int]  # (index into the dataset, augmentation seed)


class EpochSampler(DistributedSampler):
    """Shuffled ``(index, seed)`` keys: a fresh permutation per epoch, fixed by ``(seed, epoch)``.

    Like `DistributedSampler` (``drop_last=False``): the permutation is padded by repeating
    its start to a multiple of `num_replicas`, and rank r takes every `num_replicas`-th
    key from position r. ``len(sampler)`` is a full epoch's count on this rank, also while
    an epoch resumed at a later position yields fewer. A complete pass moves to the next
    epoch by itself; ``set_epoch`` (which Lightning calls before each epoch) says which.

    Args:
        size: number of samples in the dataset.
        seed: the run's data seed (``data.seed``).
        num_replicas, rank: the DDP world size and this process's rank (1 and 0 alone).

    Example:
        >>> s = EpochSampler(5, seed=0)
        >>> first = list(s)  # epoch 0
        >>> first == list(EpochSampler(5, seed=0))  # a function of (seed, epoch)
        True
        >>> s.epoch, list(s) != first  # the next pass is epoch 1, another order
        (1, True)
        >>> s.start_at(1, 3)  # resume epoch 1 after its first 3 samples
        >>> len(list(s)), len(s)
        (2, 5)
    """

    def __init__(self, size: int, seed: int = 0, num_replicas: int = 1, rank: int = 0) -> None:
        if size < 0 or num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(
                f"EpochSampler(size={size}, num_replicas={num_replicas}, rank={rank}): need size >= 0 "
                "and 0 <= rank < num_replicas"
            )
        self.size = size
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.epoch = 0
        self.num_samples = math.ceil(size / num_replicas)  # this rank's keys per epoch
        self.total_size = self.num_samples * num_replicas
        self._start = 0

    def set_epoch(self, epoch: int) -> None:
        """Shuffle for `epoch` (Lightning calls this before every epoch). A different epoch
        than the current one drops a pending `start_at` position."""
        if epoch != self.epoch:
            self.epoch, self._start = epoch, 0

    def start_at(self, epoch: int, position: int) -> None:
        """Make the next iteration yield epoch `epoch` from its `position`-th key on (this rank's count)."""
        if position >= self.num_samples > 0:  # that epoch is used up: the next one from its start
            epoch, position = epoch + 1, 0
        self.epoch, self._start = epoch, max(0, position)

    def keys(self, epoch: int) -> list[SampleKey]:
        """This rank's ``(index, seed)`` keys of `epoch`, in order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator)  # seeds[i]: sample i's augmentation
        if self.total_size > self.size:  # pad like DistributedSampler: every rank gets as many keys
            order = torch.cat(
                [order, order.repeat(math.ceil(self.total_size / max(self.size, 1)))[: self.total_size - self.size]]
            )
        order = order[self.rank : self.total_size : self.num_replicas]
        return [(int(i), int(seeds[i])) for i in order]

    def __iter__(self) -> Iterator[SampleKey]:
        start, self._start = self._start, 0  # a resume position applies to one iteration only
        epoch = self.epoch
        yield from self.keys(epoch)[start:]
        if self.epoch == epoch:  # a complete pass moves on (as a shuffling DataLoader does without set_epoch)
            self.epoch = epoch + 1

    def __len__(self) -> int:
        return self.num_samples


class SeededSamples(Dataset):
    """``dataset[index]`` with the global torch RNG seeded to the key's seed during the call.

    The caller's RNG state is restored afterwards (``torch.random.fork_rng`` on the CPU), so
    loading in the main process (``num_workers=0``) does not move the model's RNG either. A
    plain integer key (a sampler other than `EpochSampler`, e.g. Lightning's for
    ``overfit_batches``) loads the sample without seeding.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __getitem__(self, key: SampleKey | int) -> Any:
        if not isinstance(key, tuple):
            return self.dataset[key]
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]


class ResumableDataLoader(DataLoader):
    """A `DataLoader` whose ``state_dict()`` is its position in an `EpochSampler`'s epoch:
    ``{"epoch": e, "samples": n}``, and whose ``load_state_dict`` makes the next iteration
    start there.

    `n` counts the samples of the batches this loader has returned in epoch `e` (a resumed
    epoch counts from where it resumed). Lightning does not prefetch from a loader with a
    length, so at a checkpoint every returned batch has been trained on. Iteration starts
    (workers receive their first indices) when the first batch is asked for, i.e. after
    Lightning's ``set_epoch``.

    Example (the datamodule's training loader):
        >>> ds = list(range(10))
        >>> loader = ResumableDataLoader(SeededSamples(ds), sampler=EpochSampler(len(ds)), batch_size=4)
        >>> batches = iter(loader); _ = next(batches)
        >>> loader.state_dict()
        {'epoch': 0, 'samples': 4}
    """

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        sampler = self.sampler
        if not isinstance(sampler, EpochSampler):
            yield from super().__iter__()
            return
        epoch, position = sampler.epoch, sampler._start
        self._position = (epoch, position)
        for batch in super().__iter__():
            position = min(position + (self.batch_size or 1), len(sampler))  # the last batch may be short
            self._position = (epoch, position)
            yield batch

    def state_dict(self) -> dict[str, int]:
        epoch, samples = getattr(self, "_position", (getattr(self.sampler, "epoch", 0), 0))
        return {"epoch": int(epoch), "samples": int(samples)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(self.sampler, EpochSampler):
            self.sampler.start_at(int(state["epoch"]), int(state["samples"]))
