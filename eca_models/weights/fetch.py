"""The one path from a checkpoint's name to its weights file, whoever asks (timm, torch.hub, the detectors, every
command, ``eca-models download``).

Order: a folder ``ECA_MODELS_WEIGHTS_DIR`` supplies; the converted cache of the authors' files; the Hub, pinned
(where the manifest records a published revision); the authors' own file (`release`). ``ECA_MODELS_SOURCES``
or ``source=`` leaves out the Hub or the release (``hub``: only pinned Hub files, and no conversion of a
pickle, cached or not).
"""

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from huggingface_hub import try_to_load_from_cache

from ..errors import UsageError
from ..files import atomic_folder, check_output_folder
from .loading import (
    WEIGHTS_FILE,
    WeightsError,
    WeightsNotPublished,
    download_from_hub,
    read_safetensors,
    read_weights_file,
    ways_to_supply,
    weights_location,
)
from .manifest import Checkpoint, find_checkpoint, get_checkpoint, list_checkpoints
from .release import allowed_sources, cached_conversion, fetch_release

__all__ = [
    "Fetched",
    "download_checkpoints",
    "fetch_from_hub",
    "fetch_weights",
    "load_pretrained_weights",
    "locate",
    "resolve",
]


POLICY = "ECA_MODELS_SOURCES / source="  # what leaves a source out


@dataclasses.dataclass(frozen=True)
class Fetched:
    """Where a checkpoint's weights were found.

    Attributes:
        checkpoint: Its manifest name.
        state: ``local`` (ECA_MODELS_WEIGHTS_DIR), ``cached`` (a converted release file), ``hub`` or ``fetched``
            (the authors' file, just downloaded and converted).
        weights: The ``model.safetensors`` file.
    """

    checkpoint: str
    state: str
    weights: Path

    @property
    def folder(self) -> Path:
        return self.weights.parent


def locate(ckpt: Checkpoint, source: Optional[str] = None) -> Tuple[str, Optional[Path]]:
    """Where ``ckpt``'s weights would come from, in the order of this module's docstring, without fetching: the rule
    that `fetch_weights`, ``eca-models list`` and fine-tuning's "are there weights" all follow.

    Returns:
        ``(where, file)``: ``("local", file)``, ``("cached", file)`` (a converted release file),
        ``("hub", file or None)`` (published; the file where huggingface_hub's cache already has it),
        ``("release", None)`` (the authors' file, fetched on first use) or ``("missing", None)``.
    """
    local = weights_location(ckpt.hf_hub_id)
    if local is not None:
        return "local", local / WEIGHTS_FILE
    sources = allowed_sources(source)
    if "release" in sources:
        cached = cached_conversion(ckpt)
        if cached is not None:
            return "cached", cached.weights
    if "hub" in sources and ckpt.is_published:
        in_cache = try_to_load_from_cache(ckpt.hf_hub_id, WEIGHTS_FILE, revision=ckpt.revision or None)
        return "hub", Path(in_cache) if isinstance(in_cache, str) else None
    if "release" in sources and (ckpt.release or {}).get("drive_id"):
        return "release", None
    return "missing", None


def fetch_weights(
    ckpt: Checkpoint,
    source: Optional[str] = None,
    keep_original: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Fetched:
    """The weights of a manifest checkpoint, from the first source that has them (see the module docstring).

    Args:
        ckpt: The manifest entry.
        source: ``hub`` or ``release`` only (default: ``ECA_MODELS_SOURCES``, else both).
        keep_original: Keep a downloaded release file beside its conversion.
        log: Where progress lines go.

    Raises:
        WeightsError: One line naming what is missing and the ways to supply it.
    """
    where, found = locate(ckpt, source)
    if where in ("local", "cached"):
        return Fetched(ckpt.name, where, found)
    if where == "hub":  # pinned and checked, from huggingface_hub's cache where it has the file
        return Fetched(ckpt.name, "hub", download_from_hub(ckpt.hf_hub_id, WEIGHTS_FILE, ckpt.revision, ckpt))
    if where == "release":
        fetched = fetch_release(ckpt, keep_original=keep_original, log=log)
        return Fetched(ckpt.name, "fetched", fetched.weights)
    sources = allowed_sources(source)
    if "hub" in sources and not ckpt.is_published:
        raise WeightsNotPublished(
            ckpt.hf_hub_id, ckpt, f"and {POLICY} leaves out the authors' file; {ways_to_supply(ckpt)}"
        )
    raise WeightsError(f"{ckpt.name}: {POLICY} leaves out the Hub, and it has no release file; {ways_to_supply(ckpt)}")


def fetch_from_hub(hf_hub_id: str, filename: str = WEIGHTS_FILE) -> Path:
    """The weights file for a Hub id (``ORG/REPO`` or ``ORG/REPO@REVISION``): a manifest checkpoint's through
    `fetch_weights`; any other repo (or an explicit revision) from the Hub, pinned to that revision."""
    repo_id, _, revision = hf_hub_id.partition("@")
    local = weights_location(repo_id)
    if local is not None:
        return local / filename
    ckpt = find_checkpoint(hf_hub_id=repo_id)
    if ckpt is not None and not revision and filename == WEIGHTS_FILE:
        return fetch_weights(ckpt).weights
    return download_from_hub(repo_id, filename, revision or None, ckpt)


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


def resolve(name: str) -> Checkpoint:
    """The manifest checkpoint a name means: ``eca_resnet50_k3557.in1k``, ``eca_resnet50_k3557`` or ``eca_resnet50``.

    Raises:
        KeyError: No checkpoint of that name; the message lists them.
    """
    ckpt = find_checkpoint(name)  # by the name before the tag
    if ckpt is None or name.partition(".")[2] not in ("", ckpt.name.partition(".")[2]):
        get_checkpoint(name)  # raises with the list
    return ckpt


def download_checkpoints(
    names: Sequence[str] = (),
    all: bool = False,  # noqa: A002 - the command's flag
    source: Optional[str] = None,
    to: Optional[Union[str, Path]] = None,
    keep_original: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> List[Fetched]:
    """Fetch checkpoints into the cache (``eca-models download``), and with ``to`` copy each converted folder to
    ``to/<checkpoint>/`` (a folder ``ECA_MODELS_WEIGHTS_DIR`` can point at).

    Args:
        names: A checkpoint or model name, or several.
        all: Every checkpoint of the manifest instead.
        source: ``hub`` or ``release`` only.
        to: Also copy the converted folders here.
        keep_original: Keep the authors' downloaded files in the cache.
        log: Where progress lines go.
    """
    names = [names] if isinstance(names, str) else list(names)  # one name, or several
    if bool(names) == bool(all):
        raise UsageError("name the checkpoints to fetch, or pass all=True")
    checkpoints = list_checkpoints() if all else [resolve(n) for n in names]
    if to is not None:
        check_output_folder(to, "to")  # before fetching anything
    results = []
    for ckpt in {c.name: c for c in checkpoints}.values():
        fetched = fetch_weights(ckpt, source, keep_original, log)
        if to is not None:
            target = Path(to) / ckpt.name
            with atomic_folder(target, overwrite=True) as tmp:
                for item in fetched.folder.iterdir():
                    if item.is_file() and not item.name.startswith("."):
                        shutil.copy2(item, tmp / item.name)
            fetched = Fetched(ckpt.name, fetched.state, target / WEIGHTS_FILE)
        results.append(fetched)
    return results
