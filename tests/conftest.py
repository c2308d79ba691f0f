import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eca_models  # noqa: F401  (registers the models)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


@pytest.fixture
def x64() -> torch.Tensor:
    """Two fixed 64x64 images: small enough for ResNet-152 on two CPU cores."""
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def run_python(code: str, env: dict = None, cwd: Path = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run Python code in a fresh interpreter (env vars that libraries read at import time apply)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def run_cli(*args: str, env: dict = None, cwd: Path = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the installed ``eca-models`` command."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "eca_models.cli", *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
