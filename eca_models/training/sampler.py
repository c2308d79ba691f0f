"""The order of training images: shuffled per epoch from a seed, sharded over processes, resumable.

A resumed run must draw exactly what the uninterrupted one would have, with any number of loader workers. The
order depends only on (seed, epoch); each image's random augmentation depends only on (seed, epoch, index)
(`SeededItems`), never on which worker read it or what that worker read before, so skipping the
steps already done changes nothing that follows.
"""

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from ..runtime import loader_workers

__all__ = ["EpochSampler", "SeededItems", "epoch_loader"]


class SeededItems(Dataset):
    """``dataset`` whose item ``i`` is read with Python's, NumPy's and torch's generators seeded from (seed, epoch,
    i): its augmentation is the same whichever worker reads it, and in whatever order. In the main process
    (``workers=0``) the generators' states are put back after each item, so training draws what it would have."""

    def __init__(self, dataset: Dataset, seed: int, epoch: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, seed, epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str) -> Any:  # samples, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> Any:
        item_seed = (self.seed * 1_000_003 + self.epoch * 10_007 + int(index)) % 2**32
        main = get_worker_info() is None
        saved = (random.getstate(), np.random.get_state(), torch.random.get_rng_state()) if main else None
        random.seed(item_seed)
        np.random.seed(item_seed)
        torch.random.default_generator.manual_seed(item_seed)  # the CPU generator: augmentations run there
        try:
            return self.dataset[index]
        finally:
            if saved is not None:
                random.setstate(saved[0])
                np.random.set_state(saved[1])
                torch.random.set_rng_state(saved[2])


class EpochSampler(Sampler[int]):
    """A seeded permutation of ``range(n)`` for one epoch, this rank's share, from position ``start``.

    The permutation depends only on (seed, epoch), so a run resumed mid-epoch sees the same
    remaining images in the same order. Each of ``world_size`` ranks gets ``n // world_size``
    images (the few left over change every epoch), so all ranks take the same number of steps.
    """

    def __init__(self, n: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1, start: int = 0) -> None:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
        per_rank = n // world_size
        self.indices = order[rank * per_rank : (rank + 1) * per_rank][start:]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def epoch_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    step: int,
    rank: int,
    world_size: int,
    workers: int,
    pin_memory: bool = False,
    collate_fn=None,
) -> torch.utils.data.DataLoader:
    """One epoch's training batches from step ``step`` on: this rank's share of the epoch's seeded order, full
    batches only, and a loader generator seeded from (seed, epoch, step), so a resumed run draws what the
    uninterrupted one would have."""
    sampler = EpochSampler(len(dataset), seed, epoch, rank, world_size, step * batch_size)
    return torch.utils.data.DataLoader(
        SeededItems(dataset, seed, epoch),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=loader_workers(workers),
        drop_last=True,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch * 1_009 + step),
    )
