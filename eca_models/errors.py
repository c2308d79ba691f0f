"""The one base of every error eca-models explains itself.

An :class:`EcaModelsError` says in one line what was wrong and what to do; the commands print that line and exit
with status 2 (``--debug`` shows the traceback). Each kind also derives from the built-in exception a caller
would expect (a weights problem is a ``RuntimeError``, bad data a ``ValueError``, an output path an ``OSError``),
so ``except EcaModelsError`` catches them all and older ``except`` clauses keep working.
"""

__all__ = ["EcaModelsError", "ModelUnavailable", "UsageError"]


class EcaModelsError(Exception):
    """An error whose message says, in one line, what was wrong and what to do."""


class UsageError(EcaModelsError):
    """Bad usage that a parser cannot see (a missing folder, an unknown model, options that exclude each other)."""


class ModelUnavailable(UsageError):
    """A model that cannot be loaded (unknown, or its weights missing or unusable): a run over several models skips
    it with one line."""
