"""What the commands share: the usage error and the run-time flags every timm script has."""

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from ..factory import load
from ..weights import WeightsError, WeightsNotPublished

__all__ = ["UsageError", "add_runtime_args", "load_detector_model", "load_model", "non_negative_int", "positive_int"]


class UsageError(Exception):
    """Bad usage the parser can't see (a missing folder, an unknown model): exit status 2."""


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (argparse turns the error into one usage line)."""
    return _whole_number(text, 1)


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0 (argparse turns the error into one usage line)."""
    return _whole_number(text, 0)


def _whole_number(text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least {minimum}, got {text!r}")
    return value


@contextlib.contextmanager
def weights_usage_errors(name: str) -> Iterator[None]:
    """An unknown model or unusable weights, raised inside, as a one-line usage error naming ``name``."""
    try:
        yield
    except WeightsNotPublished as e:  # the command's own flag, not the Python pretrained_cfg_overlay
        ckpt = e.checkpoint
        raise UsageError(
            f"{name}: {ckpt.name} is not published on the Hub yet; convert the authors' file with "
            f"`eca-models convert {ckpt.source_file} --model {ckpt.model_name} --out DIR` and pass --checkpoint DIR"
        ) from None
    except (KeyError, WeightsError) as e:
        raise UsageError(f"{name}: {e.args[0] if isinstance(e, KeyError) else e}") from None


def load_model(
    name: str, checkpoint: Optional[Union[str, Path]] = None, pretrained: bool = True, **kwargs: Any
) -> torch.nn.Module:
    """:func:`eca_models.load`, an unknown model or unusable weights turned into a one-line usage error."""
    with weights_usage_errors(name):
        return load(name, pretrained=pretrained, checkpoint=checkpoint, **kwargs)


def load_detector_model(
    name: str, checkpoint: Optional[Union[str, Path]] = None, pretrained: bool = True, **kwargs: Any
) -> torch.nn.Module:
    """A detector from a registered name (its release weights, or ``checkpoint``) or a detector folder, its errors
    turned into one-line usage errors."""
    from ..detection import create_detector, load_detector

    with weights_usage_errors(name):
        if checkpoint is not None:
            return create_detector(name, checkpoint=checkpoint, **kwargs)
        return load_detector(name, pretrained=pretrained, **kwargs)


def default_workers() -> int:
    """Data loading processes by default: the cores this process may use (DataLoader warns above that), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return min(8, cores)


def add_runtime_args(parser: argparse.ArgumentParser, batch_size: Optional[int]) -> None:
    """--batch-size, --workers, --device, --amp and --channels-last, as timm's scripts spell them (a ``batch_size``
    of None leaves the default to the command, which may depend on the model)."""
    parser.add_argument("--batch-size", "-b", type=positive_int, default=batch_size)
    parser.add_argument(
        "--workers",
        "-j",
        type=non_negative_int,
        default=default_workers(),
        help="data loading processes (default: the CPU cores this process may use, at most 8)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
