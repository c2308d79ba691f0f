"""What the commands share: the usage error and the run-time flags every timm script has."""

import argparse

import torch

__all__ = ["UsageError", "add_runtime_args"]


class UsageError(Exception):
    """Bad usage the parser can't see (a missing folder, an unknown model): exit status 2."""


def add_runtime_args(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """--batch-size, --workers, --device, --amp and --channels-last, as timm's scripts spell them."""
    parser.add_argument("--batch-size", "-b", type=int, default=batch_size)
    parser.add_argument("--workers", "-j", type=int, default=4, help="data loading processes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
