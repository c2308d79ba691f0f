"""The order of training images: shuffled per epoch from a seed, sharded over processes, resumable."""

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "epoch_loader"]


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
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin_memory,
        collate_fn=collate_fn,
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch * 1_009 + step),
    )
