"""Where pretrained weights come from, and the checks on the way.

What timm's pretrained cfg names is read here: an in-memory state dict, or a local ``file`` (a
``model.safetensors``, a folder holding one, or the authors' ``.pth.tar``); a released checkpoint's weights are
found in `fetch`'s order. Hub downloads go through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``,
``HF_HUB_CACHE`` and ``HF_ENDPOINT`` all apply), pinned to the manifest's revision and checked against its sha256.
Nothing pickled is ever executed: PyTorch files are read with ``weights_only=True``.
"""

import argparse
import contextlib
import io
import json
import os
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, Dict, Iterator, Optional, Union

import torch
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..errors import EcaModelsError, first_line, local_path
from ..files import sha256_file
from .manifest import Checkpoint

__all__ = [
    "WEIGHTS_DIR_ENV",
    "WeightsError",
    "WeightsNotPublished",
    "download_from_hub",
    "hub_errors",
    "intact_safetensors",
    "read_safetensors",
    "read_weights_file",
    "sniff_format",
    "unwrap_checkpoint",
    "ways_to_supply",
    "weights_location",
]

WEIGHTS_DIR_ENV = "ECA_MODELS_WEIGHTS_DIR"
WEIGHTS_FILE = "model.safetensors"


class WeightsError(EcaModelsError, RuntimeError):
    """Weights could not be found, read or trusted; the message says why and what to do, in one line."""


class WeightsNotPublished(WeightsError):
    """The manifest says the checkpoint is not on the Hub yet (no pinned revision): said at once, with no request.

    Attributes:
        repo_id: The Hub repo it will be published as.
        checkpoint: Its manifest entry.
    """

    def __init__(self, repo_id: str, checkpoint: Checkpoint, ways: str) -> None:
        super().__init__(f"{repo_id} is not published on the Hub yet; {ways}")
        self.repo_id, self.checkpoint = repo_id, checkpoint


def read_weights_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a safetensors file, a converted folder, or a PyTorch file (``weights_only=True``).

    The format is told from the content, not the name. Raises `WeightsError` for a missing,
    truncated, corrupt or unsafe file, and `UsageError` for a URL.
    """
    path = local_path(path, "weights file").expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise WeightsError(
                f"{path} is a folder without {WEIGHTS_FILE}; point at a folder written by `eca-models convert`"
            )
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    kind = sniff_format(path)
    if kind == "pytorch":
        return _read_torch_file(path)
    if kind == "safetensors":
        return read_safetensors(path)
    raise WeightsError(f"{path} {kind}; {ACCEPTED}")


ACCEPTED = (
    "weights are read from a PyTorch file (torch.save's zip or legacy format, e.g. the authors' .pth.tar), a "
    ".safetensors file, or a folder written by `eca-models convert`"
)


def sniff_format(path: Union[str, Path]) -> str:
    """What a weights file's bytes are: ``'pytorch'``, ``'safetensors'``, or a phrase saying what else (``'is empty
    (0 bytes)'``, ``'is an HTML page, not a checkpoint ...'``), told from the content, never the name."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes): a download that failed or was cut short?"
    with open(path, "rb") as f:
        head = f.read(1024)
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save's zip archive, or a pickle (the legacy format)
        return "pytorch"
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:  # header length, JSON
        return "safetensors"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text[:512]:
        return (
            "is an HTML page, not a checkpoint (a web page saved in place of the file: a login, quota or error page?)"
        )
    if text.startswith((b"version https://git-lfs", b"oid sha256:")):
        return "is a Git LFS pointer, not the weights: fetch the file itself (git lfs pull)"
    return f"is neither a PyTorch nor a safetensors file ({size:,} bytes starting {head[:8].hex(' ')})"


def unwrap_checkpoint(checkpoint: Dict[str, Any]) -> Dict[str, Any]:
    """The state dict in a checkpoint: the authors' ``{'state_dict': ...}``, the ``{'model': ...}`` of torchvision's
    training references (timm reads both), or a plain one, with the prefixes of DataParallel (``module.``) and of a
    ``torch.compile``d model (``_orig_mod.``) stripped."""
    held = [
        checkpoint[k]
        for k in ("state_dict", "model")
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(k), dict)
    ]
    state_dict = held[0] if held else checkpoint
    if not isinstance(state_dict, dict):
        return {}
    return {re.sub(r"^((module|_orig_mod)\.)+", "", k) if isinstance(k, str) else k: v for k, v in state_dict.items()}


def intact_safetensors(path: Path) -> bool:
    """Whether ``path`` is a whole safetensors file: its header parses and ends where its tensors' data ends (a
    truncated or overwritten file does not), read without loading the tensors."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            length = int.from_bytes(f.read(8), "little")
            if not 2 <= length <= size - 8:
                return False
            header = json.loads(f.read(length))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError):
        return False
    return 8 + length + max(ends, default=0) == size


def read_safetensors(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a safetensors file: the only format accepted for downloaded weights."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise WeightsError(f"{path} is not a valid safetensors file (truncated or corrupt?): {first_line(e)}") from None


def _read_torch_file(path: Path) -> Dict[str, Any]:
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals([argparse.Namespace]):
            warnings.simplefilter("ignore")  # e.g. "Detected pickle protocol 4": the error below says what matters
            obj = torch.load(path, map_location="cpu", weights_only=True)  # Namespace: timm train.py's args, as timm
    except Exception as e:  # noqa: BLE001 - torch's unpickler fails in many ways on a damaged or unsafe file
        code = _pickled_code(path)
        if code:
            raise WeightsError(
                f"{path} holds pickled code ({code}) and was not loaded: eca-models never runs code from a weights "
                "file; re-save only its state_dict with torch.save, or load a safetensors file"
            ) from None
        raise WeightsError(
            f"{path} is not a readable PyTorch file (truncated or corrupt?): {_torch_reason(e)}"
        ) from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict or the authors' checkpoint dict")
    return obj


def _torch_reason(e: Exception) -> str:
    """torch.load's error in one plain line: its unpickler's own reason where it gives one (not its advice to load
    the file unsafely), without terminal colour codes."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(e).splitlines()]
    lines = [line for line in lines if line]
    specific = [line for line in lines if line.startswith(("WeightsUnpickler error", "Unsupported"))]
    return (specific or lines or [type(e).__name__])[0]


# what a file of tensors and plain containers names; anything else is code that unpickling would call
_DATA_GLOBALS = re.compile(r"(torch\._utils\._rebuild_\w+|torch\.\w*Storage|torch\.(Size|device|dtype|\w+_dtype)"
                           r"|collections\.OrderedDict|(builtins|__builtin__)\.(set|frozenset|slice|complex|bytearray)"
                           r"|argparse\.Namespace"
                           r"|torch\._tensor\._rebuild_from_type_v2|torch\.nn\.parameter\.Parameter|_codecs\.encode)")  # fmt: skip


def _pickled_code(path: Path) -> Optional[str]:
    """The first callable a pickle names beyond tensors and plain containers (``posix.system``), read from its
    opcodes without running any; None where it names none or cannot be read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                data = next((archive.read(n) for n in archive.namelist() if n.endswith("data.pkl")), b"")
            pickles = 1
        else:
            data = path.read_bytes()
            pickles = 4  # the legacy format: magic number, protocol, system info, then the object; raw storages follow
        stream = io.BytesIO(data)
        for _ in range(pickles):
            name = _first_code_global(stream)
            if name:
                return name
    except Exception:  # noqa: BLE001 - a damaged file: the caller says so
        return None
    return None


def _first_code_global(stream: io.BytesIO) -> Optional[str]:
    """The first global of the pickle at ``stream``'s position that is not data, reading up to its STOP."""
    strings: list = []
    for op, arg, _ in pickletools.genops(stream):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
            strings.append(arg)
        elif op.name == "GLOBAL" or (op.name == "STACK_GLOBAL" and len(strings) >= 2):
            name = arg.replace(" ", ".") if op.name == "GLOBAL" else f"{strings[-2]}.{strings[-1]}"
            if not _DATA_GLOBALS.fullmatch(name):
                return name
    return None


def weights_location(hf_hub_id: str) -> Optional[Path]:
    """The folder ``ECA_MODELS_WEIGHTS_DIR`` supplies for a Hub repo (``ORG/NAME``, ``@REVISION`` allowed) instead of
    the Hub, or None: where ``pretrained=True`` reads that checkpoint from."""
    local = _local_repo(hf_hub_id.partition("@")[0]) if hf_hub_id else None
    return local.parent if local is not None else None


def _local_repo(repo_id: str) -> Optional[Path]:
    """``$ECA_MODELS_WEIGHTS_DIR/<repo name>/model.safetensors`` (or ``<org>/<repo name>``), if set and present."""
    root = os.environ.get(WEIGHTS_DIR_ENV)
    if not root:
        return None
    for candidate in (Path(root) / repo_id.split("/")[-1], Path(root) / repo_id):
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate / WEIGHTS_FILE
    return None


def ways_to_supply(ckpt: Optional[Checkpoint], repo_id: str = "", drive: bool = True) -> str:
    """The ways to supply weights by hand, in one sentence: where the file is (the Hub, the authors' Drive and
    Baidu copies; ``drive=False`` leaves out a Drive link that has just failed), how to convert it and how to
    pass the result."""
    release = (ckpt.release or {}) if ckpt else {}
    parts = [f"the Hub ({ckpt.hf_hub_id}{'' if ckpt.is_published else ', not published yet'})"] if ckpt else []
    if drive and release.get("drive_id"):
        parts.append(f"the authors' Google Drive file https://drive.google.com/uc?id={release['drive_id']}")
    if release.get("baidu_url"):
        parts.append(f"Baidu {release['baidu_url']} (extract code {release.get('baidu_code', '?')})")
    source = release.get("file_name") or (ckpt.source_file if ckpt else "the authors' .pth.tar")
    command = f"`eca-models convert {source} --model {ckpt.model_name if ckpt else 'MODEL'} --out DIR`"
    repo = (repo_id or (ckpt.hf_hub_id if ckpt else "REPO")).split("/")[-1]
    root = os.environ.get(WEIGHTS_DIR_ENV)
    if root:  # set, yet it did not supply this checkpoint: say why
        found = f"has no {repo}/{WEIGHTS_FILE}" if Path(root).is_dir() else "is not a folder"
        local = f"or put DIR in {WEIGHTS_DIR_ENV} as {repo}/ (it is set to {root}, which {found})"
    else:
        local = f"or set {WEIGHTS_DIR_ENV} to a folder holding DIR as {repo}/"
    return (
        f"get it from {', or '.join(parts)}, then " if parts else ""
    ) + f"convert it with {command} and pass checkpoint=DIR (timm: pretrained_cfg_overlay=dict(file=DIR)), {local}"


def download_from_hub(
    repo_id: str, filename: str = WEIGHTS_FILE, revision: Optional[str] = None, ckpt: Optional[Checkpoint] = None
) -> Path:
    """Download (or find in huggingface_hub's cache) a file of a Hub repo, pinned and verified against the manifest.

    Args:
        repo_id: ``ORG/REPO``.
        filename: The file in the repo.
        revision: The commit to pin (default: the manifest's, else ``main``).
        ckpt: The repo's manifest entry, whose sha256 the file must have.

    Returns:
        The local path of the verified file.
    """
    revision = revision or (ckpt.revision if ckpt else None) or None
    unpublished = ckpt is not None and not ckpt.is_published
    with hub_errors(f"{repo_id}@{revision or 'main'}", ways_to_supply(ckpt, repo_id), unpublished):
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    if ckpt is not None and ckpt.sha256 and (not ckpt.revision or revision == ckpt.revision):
        _verify(path, ckpt)
    return path


@contextlib.contextmanager
def hub_errors(repo: str, hint: str, unpublished: bool = False) -> Iterator[None]:
    """huggingface_hub's errors while fetching from ``repo`` (``ORG/NAME@REVISION``) as one-line `WeightsError`s
    that end in ``hint``, what to do instead; ``unpublished``: the manifest says the repo is not on the Hub yet."""
    try:
        yield
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"no cached copy of {repo} and the Hub is not reachable (HF_HUB_OFFLINE or no network); {hint}"
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        state = "is not published on the Hub yet" if unpublished else f"was not found on the Hub ({type(e).__name__})"
        raise WeightsError(f"{repo} {state}; {hint}") from None
    except HfHubHTTPError as e:
        raise WeightsError(f"downloading {repo} failed: {first_line(e)}") from None


def _verify(path: Path, ckpt: Checkpoint) -> None:
    """Check a downloaded file against the manifest's sha256; a bad file is removed from the cache."""
    actual = sha256_file(path)
    if actual == ckpt.sha256:
        return
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)
    raise WeightsError(
        f"{ckpt.hf_hub_id} {path.name} has sha256 {actual[:12]}..., the manifest expects {ckpt.sha256[:12]}...; "
        "the file was removed from the cache and will not be used (try again, or report it if it repeats)"
    )
