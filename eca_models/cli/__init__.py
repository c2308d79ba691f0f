"""The ``eca-models`` command: one sub-command per module of this package.

Exit status, the same for every command: 0 done (validate: PASS); 1 the job ran and its verdict is negative
(validate: FAIL; export: over the tolerance), or an internal error (a bug: its traceback and a request to report
it); 2 bad usage or bad input (an unknown model, a missing or unreadable file, unusable weights, bad data), said
in one line; 130 interrupted. ``--debug`` (or ``ECA_MODELS_DEBUG=1``) shows the traceback instead of the line.
"""

import argparse
import functools
import os
import re
import sys
import traceback
from typing import Any, Dict, FrozenSet, List, Optional

import torch
from tqdm import tqdm

from ..errors import EcaModelsError, first_line
from ..version import __version__
from . import attention, benchmark, convert, download, export, finetune, list_models, predict, publish, validate

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


@functools.lru_cache(maxsize=1)
def command_flags() -> FrozenSet[str]:
    """Every flag of every command, without its dashes (``batch-size``), read from their help texts."""
    sub = argparse.ArgumentParser().add_subparsers()
    found = set()
    for name, module in COMMANDS.items():
        command = sub.add_parser(name)
        module.add_parser(command)
        found.update(re.findall(r"--([a-z][a-z0-9-]*)", command.format_help()))
    return frozenset(found)


def plain_text(doc: Optional[str]) -> Optional[str]:
    """A docstring as a help text: its code spans (single or double backquotes) as plain words."""
    return re.sub(r"``?([^`]+)``?", r"\1", doc) if doc else doc


def main(argv: Optional[List[str]] = None) -> int:
    """Run ``eca-models``: the package's errors (and those of paths the user gave) are one line on stderr, exit 2;
    anything else is a bug: its traceback and a line asking to report it, exit 1. ``--debug`` shows every
    traceback."""
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("ECA_MODELS_DEBUG", "") not in ("", "0")
    try:
        return COMMANDS[args.command].run(args) or 0
    except KeyboardInterrupt:
        tqdm.write(f"eca-models {args.command}: interrupted", file=sys.stderr)  # on a line of its own, below any bar
        return 130
    except Exception as e:
        if debug:
            raise
        if isinstance(e, (MemoryError, torch.OutOfMemoryError)):  # the machine's limit, not a bug
            e = EcaModelsError(f"out of memory ({first_line(e)}): lower batch_size= or img_size=")
        if isinstance(e, EcaModelsError) or _users_path(e, vars(args)):
            tqdm.write(f"eca-models {args.command}: error: {as_flags(first_line(e))}", file=sys.stderr)
            return 2
        traceback.print_exc()
        tqdm.write(
            f"eca-models {args.command}: internal error (a bug): please report it with the traceback above",
            file=sys.stderr,
        )
        return 1


def as_flags(message: str) -> str:
    """A package message as the command line says it: each option the message names as a keyword
    (``batch_size='8'``, ``no_pretrained=True``, ``checkpoint=``) named by its flag (``--batch-size '8'``,
    ``--no-pretrained``, ``--checkpoint``), where a command has that flag."""

    def flag(match: "re.Match[str]") -> str:
        name, value = match.group(1), match.group(2)
        if name.replace("_", "-") not in command_flags():
            return match.group(0)
        spelled = "--" + name.replace("_", "-")
        return spelled if value in ("", "True") else f"{spelled} {value}"

    return re.sub(r"(?<![\w.-])([a-z][a-z0-9_]*)=(\S*?)(?=[\s,;)]|[:.](?:\s|$)|$)", flag, message)


def _users_path(error: BaseException, options: Dict[str, Any]) -> bool:
    """Whether ``error`` is an ``OSError`` of a path the user gave (or one inside it): their input, not a bug."""
    if not isinstance(error, OSError) or not getattr(error, "filename", None):
        return False
    failed = os.path.abspath(os.fspath(error.filename))
    given = [v for value in options.values() for v in (value if isinstance(value, list) else [value])]
    paths = [os.path.abspath(os.fspath(v)) for v in given if isinstance(v, (str, os.PathLike)) and v]
    return any(failed == p or failed.startswith(p.rstrip(os.sep) + os.sep) for p in paths)
