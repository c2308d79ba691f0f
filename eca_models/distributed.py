"""torch.distributed for torchrun: set up from the environment, reduce, gather, no-ops alone."""

import os
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = ["all_gather_objects", "all_reduce_sum", "barrier", "cleanup", "is_main", "rank", "setup", "world_size"]


def setup(device: str) -> torch.device:
    """Join the torchrun process group if there is one (NCCL on CUDA, gloo on CPU); return this rank's device."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        use_cuda = device.startswith("cuda")
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
    return torch.device(device)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum a list of numbers over all processes (float64, so counts stay exact)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj: Any) -> List[Any]:
    """Every process's ``obj``, in rank order."""
    if not dist.is_initialized():
        return [obj]
    out: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def is_main_env() -> bool:
    """Rank 0 by the torchrun environment, usable before the process group exists."""
    return int(os.environ.get("RANK", "0")) == 0
