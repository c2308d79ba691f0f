"""The ``eca-models`` command: one sub-command per module of this package.

Exit status, the same for every command: 0 done (validate: PASS); 1 the job ran and its verdict is negative
(validate: FAIL; export: over the tolerance); 2 bad usage or bad input (an unknown model, a missing or
unreadable file, unusable weights, bad data), said in one line; 130 interrupted. ``--debug`` (or
``ECA_MODELS_DEBUG=1``) shows the traceback instead of the one line.
"""

import argparse
import os
import re
import sys
from typing import List, Optional

from tqdm import tqdm

from ..errors import EcaModelsError
from ..version import __version__
from . import attention, benchmark, convert, download, export, finetune, list_models, predict, publish, validate
from .common import check_device

COMMANDS = {
    "list": list_models,
    "download": download,
    "convert": convert,
    "publish": publish,
    "validate": validate,
    "finetune": finetune,
    "predict": predict,
    "benchmark": benchmark,
    "attention": attention,
    "export": export,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eca-models",
        description="ECA-Net models as timm models: list, download, convert, publish, validate, finetune, predict, benchmark, attention, export.",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or ECA_MODELS_DEBUG=1)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub.add_parser(name, help=module.HELP, description=plain_text(module.__doc__)))
    return parser


def plain_text(doc: Optional[str]) -> Optional[str]:
    """A docstring as a help text: its code spans (single or double backquotes) as plain words."""
    return re.sub(r"``?([^`]+)``?", r"\1", doc) if doc else doc


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-models``; errors are one line on stderr (exit 2), with the traceback only under ``--debug``."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ECA_MODELS_DEBUG", "") not in ("", "0")
    try:
        if getattr(args, "device", None):
            check_device(args.device)  # before any model is built
        return COMMANDS[args.command].run(args) or 0
    except (EcaModelsError, KeyError, OSError, ValueError) as e:
        if debug:
            raise
        hint = "" if isinstance(e, EcaModelsError) else " (--debug shows where)"
        tqdm.write(f"eca-models {args.command}: error: {_one_line(e)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        tqdm.write(f"eca-models {args.command}: interrupted", file=sys.stderr)  # on a line of its own, below any bar
        return 130


def _one_line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
