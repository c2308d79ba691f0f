"""The one base of every error eca-models explains itself.

An `EcaModelsError` says in one line what was wrong and what to do; the commands print that line and exit
with status 2 (``--debug`` shows the traceback). A message names an option as a Python caller passes it
(``batch_size='8'``, ``no_pretrained=True``); the command line prints the same message with its flags
(``--batch-size '8'``, ``--no-pretrained``). Each kind also derives from the built-in exception a caller
would expect (a weights problem is a ``RuntimeError``, bad data a ``ValueError``, an output path an ``OSError``),
so ``except EcaModelsError`` catches them all and older ``except`` clauses keep working.
"""

import math
import re
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

__all__ = [
    "DataError",
    "EcaModelsError",
    "ModelUnavailable",
    "UnknownModel",
    "UsageError",
    "first_line",
    "local_path",
    "require_folder",
    "require_number",
    "require_whole_number",
]


class EcaModelsError(Exception):
    """An error whose message says, in one line, what was wrong and what to do."""


class UsageError(EcaModelsError, ValueError):
    """Bad usage that a parser cannot see (a value out of range, an unknown model, options that exclude each other);
    a ``ValueError`` too, as Python's own checks of a value are."""


class ModelUnavailable(UsageError):
    """A model that cannot be loaded (unknown, or its weights missing or unusable): a run over several models skips
    it with one line."""


class UnknownModel(ModelUnavailable, KeyError):
    """A name that is neither a registered model nor a model folder (a ``KeyError`` too, as an unknown key is)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""  # the message, without KeyError's quotes


class DataError(EcaModelsError, ValueError):
    """A data folder, label or annotation file that can't be used; the message says why, in one line."""


def first_line(e: BaseException) -> str:
    """The first line of an error's message (a ``KeyError``'s without the quotes ``str`` adds), or its type's name:
    how a one-line report quotes an error."""
    text = str(e.args[0] if isinstance(e, KeyError) and e.args else e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def local_path(path: Union[str, Path], what: str) -> Path:
    """``path`` as a ``Path``; a `UsageError` for a URL, given as text or already folded by ``Path`` (``https:/x``),
    which would otherwise be reported as a missing file, and for an empty string, which ``Path`` reads as the working
    folder."""
    if not str(path).strip():  # Path("") is the working folder: an unset shell variable, not a choice
        raise UsageError(f"the {what} path is empty: name the file or folder (. for the working folder)")
    url = re.match(r"(https?|ftp|s3|gs):[/\\]+(.*)", str(path), re.IGNORECASE)
    if url:
        shown = f"{url[1]}://{url[2]}"
        raise UsageError(f"{what} {shown} is a URL: eca-models reads local files and folders; download it first")
    return Path(path)


def require_folder(path: Union[str, Path], what: str = "data folder") -> Path:
    """``path`` as a ``Path``; a `DataError` unless it is a folder (saying whether it is a file or missing)."""
    path = local_path(path, what)
    if not path.is_dir():
        raise DataError(f"{what} {path} {'is a file, not a folder' if path.exists() else 'does not exist'}")
    return path


def require_whole_number(name: str, value: Any, minimum: int, maximum: Optional[int] = None) -> None:
    """A `UsageError` naming the option ``name`` unless ``value`` is None or a whole number of at least
    ``minimum`` (and at most ``maximum``): the check argparse makes on the command line, for a Python caller."""
    whole = not isinstance(value, bool) and isinstance(value, int)
    if value is not None and (not whole or value < minimum or (maximum is not None and value > maximum)):
        limits = f"at least {minimum}" if maximum is None else f"{minimum} to {maximum}"
        raise UsageError(f"{name}={value!r}: expected a whole number of {limits}")


def require_number(name: str, value: Any, allowed: Callable[[float], bool], expected: str) -> None:
    """A `UsageError` naming the option ``name`` unless ``value`` is None or a finite real number (not a bool)
    that ``allowed`` accepts; ``expected`` says which numbers are, in words."""
    real = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if value is not None and not (real and allowed(value)):
        raise UsageError(f"{name}={value!r}: expected {expected}")


def require_suffix(name: str, path: Optional[Union[str, Path]], suffixes: Tuple[str, ...], written_as: str) -> None:
    """A `UsageError` naming the option ``name`` unless ``path`` is None or its name ends in one of ``suffixes``
    (the file's format, ``written_as`` in words), so that no file is written under a name that says another."""
    if path and Path(path).suffix.lower() not in suffixes:
        raise UsageError(f"{name}={path}: {written_as}; give a file name ending in {' or '.join(suffixes)}")
