"""The ``eca-models`` command: one sub-command per module of this package."""

import argparse
import sys
from typing import List, Optional

from ..weights import WeightsError
from . import attention, benchmark, convert, export, finetune, list_models, predict, publish, validate
from .common import UsageError

COMMANDS = {
    "list": list_models,
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
        description="ECA-Net models as timm models: list, convert, publish, validate, finetune, predict, benchmark, attention, export.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        module.add_parser(sub.add_parser(name, help=module.HELP, description=module.__doc__))
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-models``; errors are one line on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command].run(args) or 0
    except (UsageError, FileNotFoundError, KeyError) as e:
        print(f"eca-models {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (WeightsError, ValueError, OSError) as e:
        print(f"eca-models {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"eca-models {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    text = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return str(text).strip().splitlines()[0] if str(text).strip() else type(e).__name__
