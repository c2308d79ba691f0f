"""Where pretrained weights come from, and the checks on the way.

Sources, in order: an in-memory state dict; a local ``file`` (a ``model.safetensors``, a folder
holding one, or the authors' ``.pth.tar``); the folder named by ``ECA_MODELS_WEIGHTS_DIR``; the
Hugging Face Hub through ``huggingface_hub`` (its cache, ``HF_HUB_OFFLINE``, ``HF_HUB_CACHE``
and ``HF_ENDPOINT`` all apply), pinned to the manifest's revision and checked against its sha256.
Nothing pickled is ever executed: PyTorch files are read with ``weights_only=True``.
"""

import os
import pickle
import re
from pathlib import Path
from typing import Any, Dict, Optional, Union

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

from .._files import sha256_file
from .manifest import Checkpoint, find_checkpoint

__all__ = [
    "WEIGHTS_DIR_ENV",
    "WeightsError",
    "fetch_from_hub",
    "load_pretrained_weights",
    "read_safetensors",
    "read_weights_file",
]

WEIGHTS_DIR_ENV = "ECA_MODELS_WEIGHTS_DIR"
WEIGHTS_FILE = "model.safetensors"


class WeightsError(RuntimeError):
    """Weights could not be found, read or trusted; the message says why and what to do, in one line."""


def load_pretrained_weights(pretrained_cfg: Any) -> Dict[str, Any]:
    """The checkpoint for a timm ``PretrainedCfg`` (or dict), read from the first source it names.

    Args:
        pretrained_cfg: timm's pretrained cfg: ``state_dict``, ``file`` or ``hf_hub_id`` is used.

    Returns:
        What the file holds: a state dict, or the authors' checkpoint dict (the model's filter
        function unwraps it).
    """
    cfg = pretrained_cfg if isinstance(pretrained_cfg, dict) else vars(pretrained_cfg)  # no deep copy of a state dict
    if cfg.get("state_dict"):
        return cfg["state_dict"]
    if cfg.get("file"):
        return read_weights_file(cfg["file"])
    if cfg.get("hf_hub_id"):
        return read_safetensors(fetch_from_hub(cfg["hf_hub_id"], cfg.get("hf_hub_filename") or WEIGHTS_FILE))
    name = ".".join(filter(None, (cfg.get("architecture"), cfg.get("tag"))))
    raise WeightsError(f"{name or 'this model'} has no pretrained weights; pass pretrained_cfg_overlay=dict(file=PATH)")


def read_weights_file(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a safetensors file, a converted folder, or a PyTorch file (``weights_only=True``).

    The format is told from the content, not the name. Raises :class:`WeightsError` for a missing,
    truncated, corrupt or unsafe file.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        if not (path / WEIGHTS_FILE).is_file():
            raise WeightsError(
                f"{path} is a folder without {WEIGHTS_FILE}; point at a folder written by `eca-models convert`"
            )
        path = path / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return _read_torch_file(path)
    return read_safetensors(path)


def read_safetensors(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a safetensors file: the only format accepted for downloaded weights."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise WeightsError(f"{path} is not a valid safetensors file (truncated or corrupt?): {reason}") from None


def _read_torch_file(path: Path) -> Dict[str, Any]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if unsafe is None:
            raise WeightsError(f"{path} is not a readable PyTorch file (truncated or corrupt?)") from None
        raise WeightsError(
            f"{path} needs arbitrary pickled code to load ({unsafe.group(1)}), which eca-models never runs; "
            "re-save only its state_dict with torch.save, or load a safetensors file"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch's unpickler fails in many ways on a damaged file
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path} is not a readable PyTorch file (truncated or corrupt?): {reason}") from None
    if not isinstance(obj, dict):
        raise WeightsError(f"{path} holds a {type(obj).__name__}, not a state dict or the authors' checkpoint dict")
    return obj


def _local_repo(repo_id: str) -> Optional[Path]:
    """``$ECA_MODELS_WEIGHTS_DIR/<repo name>/model.safetensors`` (or ``<org>/<repo name>``), if set and present."""
    root = os.environ.get(WEIGHTS_DIR_ENV)
    if not root:
        return None
    for candidate in (Path(root) / repo_id.split("/")[-1], Path(root) / repo_id):
        if (candidate / WEIGHTS_FILE).is_file():
            return candidate / WEIGHTS_FILE
    return None


def _ways_to_supply(repo_id: str, ckpt: Optional[Checkpoint]) -> str:
    source = ckpt.source_file if ckpt else "the authors' .pth.tar"
    model = ckpt.model_name if ckpt else "MODEL"
    return (
        f"convert {source} with `eca-models convert {source} --model {model} --out DIR` and pass "
        f"pretrained_cfg_overlay=dict(file='DIR'), or set {WEIGHTS_DIR_ENV} to a folder holding DIR "
        f"as {repo_id.split('/')[-1]}/"
    )


def fetch_from_hub(hf_hub_id: str, filename: str = WEIGHTS_FILE) -> Path:
    """Download (or find in the cache) a weights file, pinned and verified against the manifest.

    Args:
        hf_hub_id: ``ORG/REPO`` or ``ORG/REPO@REVISION``.
        filename: The file in the repo.

    Returns:
        The local path of the verified file.
    """
    repo_id, _, revision = hf_hub_id.partition("@")
    local = _local_repo(repo_id)
    if local is not None:
        return local
    ckpt = find_checkpoint(hf_hub_id=repo_id)
    revision = revision or (ckpt.revision if ckpt else None) or None
    unpublished = ckpt is not None and not ckpt.is_published
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision))
    except LocalEntryNotFoundError:
        raise WeightsError(
            f"no cached copy of {repo_id} ({filename}) and the Hub is not reachable (HF_HUB_OFFLINE or no network); "
            + _ways_to_supply(repo_id, ckpt)
        ) from None
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as e:
        state = "is not published on the Hub yet" if unpublished else f"was not found on the Hub ({type(e).__name__})"
        raise WeightsError(f"{repo_id}@{revision or 'main'} {state}; " + _ways_to_supply(repo_id, ckpt)) from None
    except HfHubHTTPError as e:
        raise WeightsError(f"downloading {repo_id} failed: {str(e).splitlines()[0]}") from None
    if ckpt is not None and ckpt.sha256 and (not ckpt.revision or revision == ckpt.revision):
        _verify(path, ckpt)
    return path


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
