"""Training state that survives interruption: written atomically, read back exactly.

A checkpoint holds the model, optimizer, scheduler and scaler states, the position (epoch and
step within it), every random generator the run draws from, the best metric so far and the
metrics history. It is written to a temporary file and renamed over ``last.pth``, so a process
killed at any moment leaves the previous checkpoint whole.
"""

import io
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from ..files import write_bytes_atomic

__all__ = ["capture_rng", "load_state", "restore_rng", "save_state"]

CHECKPOINT = "last.pth"


def capture_rng() -> Dict[str, Any]:
    """The states of Python's, NumPy's and torch's generators (CUDA too, where present)."""
    mt, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    """Put every generator back as `capture_rng` found it."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(run_dir: Path, state: Dict[str, Any]) -> Path:
    """Write ``state`` to ``run_dir/last.pth`` atomically."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(run_dir) / CHECKPOINT
    write_bytes_atomic(path, buffer.getvalue())
    return path


def load_state(run_dir: Path) -> Dict[str, Any]:
    """Read ``run_dir/last.pth`` (plain tensors and numbers only: ``weights_only=True``)."""
    return torch.load(Path(run_dir) / CHECKPOINT, map_location="cpu", weights_only=True)
