"""Where and how a job runs, the same for every job: the default device and data loading processes, and mixed
precision for a device."""

import os
import sys
from contextlib import nullcontext
from typing import Union

import torch

from .errors import UsageError

__all__ = ["autocast_for", "check_device", "default_device", "default_workers", "loader_workers"]

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


def check_device(name: Union[str, torch.device]) -> torch.device:
    """The device ``name`` names, checked before any work: a one-line `UsageError` for a name torch does not know or
    a device this machine lacks (``cuda`` without a GPU, ``cuda:3`` on a machine with two)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"device={name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device={str(name)!r}, but torch sees no CUDA device here: pass device='cpu'")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device={str(name)!r}, but torch sees {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"device={str(name)!r}, but torch sees no MPS device here: pass device='cpu'")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"device={str(name)!r}: eca-models runs on cpu, cuda or mps")
    return device


def autocast_for(device: torch.device, enabled: bool):
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; a no-op when disabled."""
    if not enabled:
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16)
