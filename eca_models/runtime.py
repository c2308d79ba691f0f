"""Where and how a job runs, the same for every job: the default device and data loading processes, and mixed
precision for a device."""

import os
import sys
from contextlib import nullcontext

import torch

__all__ = ["autocast_for", "default_device", "default_workers", "loader_workers"]

_CAPPED: set = set()  # the worker counts already said to be capped, in this process


def _cores() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Data loading processes by default: the cores this process may use (DataLoader warns above that), at most 8."""
    return min(8, _cores())


def loader_workers(requested: int) -> int:
    """The data loading processes to start for ``requested`` (``--workers``): at most the cores this process may use,
    since more only compete for them; a cap is said once per process, on stderr."""
    cores = _cores()
    if requested <= cores:
        return requested
    if requested not in _CAPPED:
        _CAPPED.add(requested)
        print(
            f"eca-models: workers={requested} is more than the {cores} cores usable here: using {cores}",
            file=sys.stderr,
        )
    return cores


def default_device() -> str:
    """``cuda`` where torch sees a GPU, else ``cpu``."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def autocast_for(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
