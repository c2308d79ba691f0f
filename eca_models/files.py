"""Small file helpers: atomic writes, checksums, and output paths checked before the work.

Temporary files and folders are made beside their target under a name that says whose they are
(``.NAME.eca-tmp.HOST.PID.XXXX``); a write killed outright (``kill -9``, a power cut) leaves one behind, and the
next atomic write into the same folder removes those whose process on this host is gone.

The same code runs on Windows, where three things differ from POSIX and are handled here, once: a process is
probed through the Win32 API (``os.kill(pid, 0)`` there sends Ctrl-C, or terminates the process); a rename onto an
existing folder fails, so the old folder is moved aside first; and a file that is open (a virus scanner, an
indexer, a model memory-mapped from it) cannot be renamed or removed for a moment, so those are retried, and what
stays held is left as a stale temporary for the next run to remove.
"""

import errno
import hashlib
import os
import re
import shutil
import socket
import stat
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Union

from .errors import EcaModelsError

__all__ = [
    "OutputPathError",
    "atomic_folder",
    "atomic_path",
    "check_output_file",
    "check_new_folder",
    "check_output_folder",
    "default_mode",
    "remove_file",
    "remove_stale_temporaries",
    "remove_tree",
    "replace_folder",
    "scratch_folder",
    "sha256_file",
    "write_bytes_atomic",
    "write_text_atomic",
]

PathLike = Union[str, "os.PathLike[str]"]
TMP_MARK = ".eca-tmp."
_TMP_NAME = re.compile(r"^\..*\.eca-tmp\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[^/]*$")
WINDOWS = os.name == "nt"  # the one platform check: tests patch it to run the Windows branches here
_HELD_RETRIES = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # seconds to wait for a file held open on Windows


class OutputPathError(EcaModelsError, OSError):
    """An output path that cannot be written (its folder is a file, not writable, or the name is a folder)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()  # the message, without OSError's "[Errno N]"


class FolderNotEmpty(OutputPathError, FileExistsError):
    """An output folder that holds files and may not be replaced (no ``overwrite``)."""


def sha256_file(path: PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_mode(executable: bool = False) -> int:
    """The permissions a plain ``open()`` (or ``mkdir``) would give under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if executable else 0o666) & ~umask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs."""
    if WINDOWS:
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return False
    return True


def _alive_windows(pid: int) -> bool:
    """OpenProcess and GetExitCodeProcess: a process that cannot be opened is gone, unless access is denied (another
    user's); one whose exit code is STILL_ACTIVE (259) runs."""
    import ctypes  # the Win32 API: Windows only

    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.get_last_error() == 5  # ERROR_ACCESS_DENIED: it exists
    try:
        code = ctypes.c_ulong()
        return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259
    finally:
        kernel32.CloseHandle(handle)


def _retry_held(operation: Callable[..., Any], *args: Any) -> Any:
    """``operation(*args)``; on Windows, a ``PermissionError`` (the file or folder held open by another process, or
    memory-mapped by this one) is retried for a few seconds before it is raised."""
    for delay in _HELD_RETRIES if WINDOWS else ():
        try:
            return operation(*args)
        except PermissionError:
            time.sleep(delay)
    return operation(*args)


def remove_file(path: PathLike) -> bool:
    """Remove a file if it exists; False if it is held open (Windows) and stays, for a later run to remove."""
    try:
        _retry_held(Path(path).unlink, True)
    except PermissionError:
        return False
    return True


def _writable_then_again(function: Callable[[str], Any], path: str, _error: Any) -> None:
    os.chmod(path, stat.S_IWRITE)  # Windows refuses to remove a read-only file
    function(path)


def remove_tree(path: PathLike) -> bool:
    """Remove a folder and everything in it (read-only files too); False if something stays, held open."""
    handler = {"onexc" if sys.version_info >= (3, 12) else "onerror": _writable_then_again}
    try:
        _retry_held(lambda: shutil.rmtree(path, **handler))
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def replace_folder(src: PathLike, dst: PathLike) -> None:
    """Rename folder ``src`` to ``dst``, replacing ``dst`` if it exists. The old ``dst`` is renamed aside first
    (a folder cannot be renamed onto another), then removed; if it is held open it stays as a stale temporary."""
    src, dst = Path(src), Path(dst)
    if not dst.exists():
        _retry_held(os.replace, src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dst), dir=dst.parent))
    old.rmdir()
    _retry_held(os.replace, dst, old)
    try:
        _retry_held(os.replace, src, dst)
    except OSError:
        os.replace(old, dst)  # put the old one back: nothing lost
        raise
    remove_tree(old)


_LAST_CLEANED: Dict[str, float] = {}  # folder -> when this process last looked through it
_CLEAN_EVERY = 2.0  # seconds: a command writing thousands of files into one folder does not list it each time


def remove_stale_temporaries(folder: PathLike, again: bool = False) -> int:
    """Remove what atomic writes killed outright left in ``folder``: temporaries of this host whose process is gone.

    A folder is looked through at most every two seconds by one process, unless ``again``. Returns how many were
    removed. Another host's (a shared file system) and live processes' are left alone.
    """
    folder, removed = Path(folder), 0
    key, now = str(folder.absolute()), time.monotonic()
    if not again and now - _LAST_CLEANED.get(key, -_CLEAN_EVERY) < _CLEAN_EVERY:
        return 0
    _LAST_CLEANED[key] = now
    try:
        entries = [p for p in folder.iterdir() if TMP_MARK in p.name]
    except OSError:
        return 0
    host = _host()
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if not match or match["host"] != host or int(match["pid"]) == os.getpid() or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            removed += remove_tree(entry)
        else:
            removed += remove_file(entry)
    return removed


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{TMP_MARK}{_host()}.{os.getpid()}."


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_file(path: PathLike, what: str = "") -> Path:
    """Check, before any work, that a file can be written at ``path``: the name is not a folder, and its folder
    exists (or can be made) and is writable. Makes nothing.

    Args:
        path: The file to be written.
        what: The option that named it (``out``), for the message.

    Raises:
        OutputPathError: One line naming ``path`` and what is wrong with it.
    """
    path = Path(path)
    label = f"{what}={path}" if what else str(path)
    if path.is_dir():
        raise OutputPathError(f"{label} is a folder; name the file to write")
    _check_writable_folder(path.parent, label)
    return path


def check_output_folder(path: PathLike, what: str = "") -> Path:
    """Check, before any work, that a folder can be made (or written) at ``path``. Makes nothing.

    Raises:
        OutputPathError: One line naming ``path`` and what is wrong with it.
    """
    path = Path(path)
    label = f"{what}={path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{label} is a file, not a folder")
    _check_writable_folder(path if path.is_dir() else path.parent, label)
    return path


def check_new_folder(path: PathLike, overwrite: bool = False, what: str = "") -> Path:
    """Check, before any work, that `atomic_folder` may write ``path``: `check_output_folder`, not the working
    folder or one holding it (a folder written whole replaces its target), and an existing, non-empty ``path``
    only with ``overwrite``. Makes nothing.

    Raises:
        OutputPathError: The folder cannot be written there.
        FolderNotEmpty: ``path`` exists, is not empty, and ``overwrite`` is False.
    """
    path = check_output_folder(path, what)
    here = Path.cwd().resolve()
    if path.resolve() in (here, *here.parents):
        label = f"{what}={str(path)!r}" if what else repr(str(path))
        raise OutputPathError(
            f"{label} is the working folder or holds it, which a new folder cannot replace: name a new one"
        )
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FolderNotEmpty(f"{path} exists and is not empty; pass overwrite=True to replace it")
    return path


def _check_writable_folder(folder: Path, label: str) -> None:
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise OutputPathError(f"{label} cannot be written: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputPathError(f"{label} cannot be written: no permission to write in {existing}")


def _write_error(path: Path, e: OSError) -> OutputPathError:
    reason = e.strerror or os.strerror(e.errno or errno.EIO)
    return OutputPathError(e.errno or errno.EIO, f"cannot write {path}: {reason}")


@contextmanager
def atomic_path(path: PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` (its folder made if missing) for a writer that takes a file name (an
    exporter, safetensors).

    When the block ends, the file is renamed onto ``path`` with the permissions a plain ``open()`` would give
    (or ``path``'s own, if it exists); a block that raises, or that deletes the file, writes nothing. A reader
    sees the old file or the new one, never half of one, even if the writer is killed. An error of the file
    system names ``path``, never the temporary file.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a folder `check_output_file` found could be made
        remove_stale_temporaries(path.parent)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=_tmp_prefix(path), suffix=suffix)
    except OSError as e:
        raise _write_error(path, e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else default_mode())  # mkstemp's is 0600
            try:
                _retry_held(os.replace, tmp, path)
            except OSError as e:
                raise _write_error(path, e) from None
    except OSError as e:
        if isinstance(e, OutputPathError) or e.filename is None or TMP_MARK not in str(e.filename):
            raise
        raise _write_error(path, e) from None  # e.g. a full disk while writing the temporary file
    finally:
        remove_file(tmp)


@contextmanager
def scratch_folder(parent: PathLike, name: str) -> Iterator[Path]:
    """A private folder in ``parent`` for work in progress (a download, a conversion), removed when the block ends,
    however it ends; one a killed process left is removed by the next atomic write or scratch folder there."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(parent)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(parent / name), dir=parent))
    except OSError as e:
        raise _write_error(parent / name, e) from None
    try:
        yield tmp
    finally:
        remove_tree(tmp)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through `atomic_path`, flushed to disk before the rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_text_atomic(path: PathLike, text: str) -> None:
    """`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))


@contextmanager
def atomic_folder(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; when the block ends it is renamed onto ``path``.

    The folder and its files get the permissions a plain ``mkdir`` / ``open()`` would. A block that raises leaves
    nothing behind and ``path`` as it was; an existing ``path`` is replaced only with ``overwrite`` (an empty one
    always). What an earlier run killed outright left beside it is removed first.

    Raises:
        FolderNotEmpty: ``path`` exists, is not empty, and ``overwrite`` is False.
    """
    path = check_new_folder(path, overwrite)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(path.parent)
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        yield tmp
        tmp.chmod(default_mode(executable=True))  # mkdtemp's is 0700
        for item in tmp.iterdir():
            item.chmod(default_mode())
        replace_folder(tmp, path)
    finally:
        remove_tree(tmp)
