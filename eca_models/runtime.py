"""Where and how a job runs, the same for every job: the default device and data loading processes, and mixed
precision for a device."""

import os
from contextlib import nullcontext

import torch

__all__ = ["autocast_for", "default_device", "default_workers"]


def default_workers() -> int:
    """Data loading processes by default: the cores this process may use (DataLoader warns above that), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def default_device() -> str:
    """``cuda`` where torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_for(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
