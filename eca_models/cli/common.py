"""What the commands share: the usage error and the run-time flags every timm script has."""

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch

from ..errors import EcaModelsError
from ..factory import load
from ..weights import WeightsError

__all__ = [
    "ModelUnavailable",
    "UsageError",
    "add_num_classes_arg",
    "add_runtime_args",
    "check_device",
    "load_detector_model",
    "load_model",
    "non_negative_int",
    "positive_int",
    "probability",
]


class UsageError(EcaModelsError):
    """Bad usage the parser can't see (a missing folder, an unknown model): exit status 2."""


class ModelUnavailable(UsageError):
    """A model that cannot be loaded (unknown, or its weights missing or unusable): a run over several models skips
    it with one line."""


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


def probability(text: str) -> float:
    """An argparse type: a number from 0 to 1 (a score threshold)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def check_device(name: str) -> torch.device:
    """The device ``--device`` names, checked before any work: a one-line :class:`UsageError` for a name torch does
    not know or a device this machine lacks (``cuda`` without a GPU, ``cuda:3`` on a machine with two)."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UsageError(f"--device {name!r} is not a device name (cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}, but torch sees no CUDA device here: pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}, but torch sees {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}, but torch sees no MPS device here: pass --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name}: eca-models runs on cpu, cuda or mps")
    return device


def add_num_classes_arg(parser: argparse.ArgumentParser) -> None:
    """--num-classes, as timm's scripts spell it: the classifier size of a weights file that is not ImageNet's."""
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help="classes of the --checkpoint's classifier, when not 1000 (a folder's config.json says it itself)",
    )


@contextlib.contextmanager
def weights_usage_errors(name: str) -> Iterator[None]:
    """An unknown model or unusable weights, raised inside, as a one-line usage error naming ``name``."""
    try:
        yield
    except (KeyError, WeightsError) as e:
        raise ModelUnavailable(f"{name}: {e.args[0] if isinstance(e, KeyError) else e}") from None


def load_model(
    name: str, checkpoint: Optional[Union[str, Path]] = None, pretrained: bool = True, **kwargs: Any
) -> torch.nn.Module:
    """:func:`eca_models.load`, an unknown model or unusable weights turned into a one-line usage error
    (``num_classes=None`` is left out: the model's or the folder's own)."""
    if kwargs.get("num_classes", 0) is None:
        kwargs.pop("num_classes")
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
