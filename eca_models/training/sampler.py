"""The order of training images: shuffled per epoch from a seed, sharded over processes, resumable."""

from typing import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSampler"]


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
