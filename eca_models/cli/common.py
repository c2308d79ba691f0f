"""What the commands share: argparse types, the run-time flags every timm script has, the device check, and the
options tables' defaults as the parsers' defaults."""

import argparse
import dataclasses
from typing import Any, Dict, Optional

from ..errors import ModelUnavailable, UsageError
from ..runtime import default_device, default_workers

__all__ = [
    "ModelUnavailable",
    "UsageError",
    "add_detector_size_args",
    "add_num_classes_arg",
    "add_runtime_args",
    "default_workers",
    "defaults_of",
    "non_negative_int",
    "positive_int",
    "probability",
]


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


def add_num_classes_arg(parser: argparse.ArgumentParser) -> None:
    """--num-classes, as timm's scripts spell it: the classifier size of a weights file that is not ImageNet's."""
    parser.add_argument(
        "--num-classes",
        type=positive_int,
        help="classes of the --checkpoint's classifier, when not 1000 (a folder's config.json says it itself)",
    )


def add_detector_size_args(parser: Any, prefix: str = "detectors: ") -> None:
    """--min-size / --max-size, torchvision's resize of a detector's input; by default the weights' own (a
    fine-tuned folder's, or the release's 800 and 1333). ``parser``: a parser or an argument group."""
    own = "default: the weights' own, the release's {}"
    parser.add_argument(
        "--min-size", type=positive_int, help=f"{prefix}resize the shorter side to this ({own.format(800)})"
    )
    parser.add_argument(
        "--max-size", type=positive_int, help=f"{prefix}and the longer side to at most this ({own.format(1333)})"
    )


def defaults_of(options: Any) -> Dict[str, Any]:
    """An options dataclass's defaults by field name (a factory's value made now): the parser's defaults, so the
    command line and the Python call share one table."""
    defaults = {}
    for f in dataclasses.fields(options):
        if f.default is not dataclasses.MISSING:
            defaults[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            defaults[f.name] = f.default_factory()
    return defaults


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
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last memory format")
