"""One call to get a model from wherever it is: a registered name, a converted or fine-tuned folder, the Hub."""

from pathlib import Path
from typing import Any, List, Optional, Union

import timm
import torch
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.utils import HFValidationError, validate_repo_id

from .data.imagenet import imagenet_wnids
from .errors import UnknownModel, first_line, local_path, require_whole_number
from .weights import WeightsError
from .weights.folders import read_model_config
from .weights.loading import hub_errors
from .weights.release import hub_unreachable
from .zoo import list_models

__all__ = [
    "class_labels",
    "load",
    "require_model",
    "timm_weights_file",
]


def load(
    source: Union[str, Path], pretrained: bool = True, checkpoint: Optional[Union[str, Path]] = None, **kwargs: Any
) -> torch.nn.Module:
    """Create a model with its weights, in eval mode.

    Args:
        source: A registered name (``'eca_resnet50'``), a folder written by ``eca-models convert``
            or ``eca-models finetune`` (its ``config.json`` says the architecture, kernel code and
            classes), or ``'hf-hub:ORG/REPO'``.
        pretrained: Load weights (for a registered name: from the Hub, or ``checkpoint``).
        checkpoint: A weights file or folder for a registered name (the authors' ``.pth.tar``,
            a ``model.safetensors``, or a converted folder).
        **kwargs: More ``timm.create_model`` arguments (``num_classes=None``: the model's or the folder's own).

    Raises:
        UnknownModel: ``source`` is neither a folder nor a known model (a ``KeyError``).
        WeightsError: The weights are missing, unreadable or for another model.
    """
    if kwargs.get("num_classes", 0) is None:
        kwargs.pop("num_classes")
    require_whole_number("num_classes", kwargs.get("num_classes"), 0)  # 0: no classifier, as timm takes it
    require_model(source)
    path = Path(source)
    if path.is_dir():
        read_model_config(path)
        return timm.create_model(f"local-dir:{path}", pretrained=pretrained, **kwargs).eval()
    name = str(source)
    if checkpoint is not None:
        ckpt = local_path(checkpoint, "weights file")
        if ckpt.is_dir() and (ckpt / "config.json").is_file():
            read_model_config(ckpt)
            model = timm.create_model(f"local-dir:{ckpt}", pretrained=True, **kwargs)
            if model.pretrained_cfg["architecture"].split("_k")[0] != name.split("_k")[0]:
                raise WeightsError(f"{ckpt} holds {model.pretrained_cfg['architecture']}, not {name}")
            return model.eval()
        kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(ckpt))
        pretrained = True
    elif pretrained and not name.startswith("hf-hub:") and name.split(".")[0] not in _our_models():
        cached = timm_weights_file(name)  # another timm model (seresnet50, for a comparison): its own Hub weights
        if cached is not None:
            kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(cached))
    if name.startswith("hf-hub:"):
        return _from_hub(name, pretrained, **kwargs)
    return timm.create_model(name, pretrained=pretrained, **kwargs).eval()


def _from_hub(name: str, pretrained: bool, **kwargs: Any) -> torch.nn.Module:
    """timm's ``hf-hub:ORG/REPO[@REVISION]`` (whose config.json timm reads from the Hub, with or without
    ``pretrained``) with the Hub's failures in one line, and at once where nothing is cached and the Hub cannot be
    reached."""
    repo, _, revision = name[len("hf-hub:") :].partition("@")
    hint = "pass a folder holding its config.json and model.safetensors"
    if not isinstance(try_to_load_from_cache(repo, "config.json", revision=revision or None), str):
        why = hub_unreachable()
        if why:
            raise WeightsError(
                f"{repo} is not cached here and the Hub cannot be reached ({why}): download it once with a "
                f"connection, or {hint}"
            )
    with hub_errors(f"{repo}@{revision or 'main'}", hint):
        return timm.create_model(name, pretrained=pretrained, **kwargs).eval()


def require_model(source: Union[str, Path]) -> None:
    """Raise `UnknownModel` unless ``source`` is a folder, a registered timm name (with a pretrained tag timm knows,
    if tagged) or a well-formed ``hf-hub:ORG/REPO[@REVISION]`` id: the one message for a name that is nothing."""
    name = str(source)
    if not name.strip():  # Path("") is the working folder
        raise UnknownModel("the model name is empty: give a registered name or a model folder (see `eca-models list`)")
    if Path(name).is_dir():
        return
    if name.startswith("hf-hub:"):
        try:
            validate_repo_id(name[len("hf-hub:") :].partition("@")[0])
        except HFValidationError as e:
            raise UnknownModel(f"{name!r} is not an hf-hub:ORG/REPO[@REVISION] id: {first_line(e)}") from None
        return
    if name.startswith("local-dir:"):
        raise UnknownModel(
            f"{name!r}: pass the folder itself, {name[len('local-dir:') :]} (local-dir: is timm's prefix)"
        )
    if not timm.is_model(name):
        raise UnknownModel(f"unknown model {name!r}: not a registered model nor a folder (see `eca-models list`)")
    arch, _, tag = name.partition(".")
    if tag and not timm.list_pretrained(name):
        tags = [n.partition(".")[2] for n in timm.list_pretrained(f"{arch}.*")]
        raise UnknownModel(f"{arch} has no weights tagged {tag!r}; its tags: {', '.join(tags) or 'none'}")


def _our_models() -> List[str]:
    return list_models()


def timm_weights_file(name: str, connect_timeout: float = 5.0) -> Optional[Path]:
    """Where timm's pretrained weights for ``name`` (a timm model, not one of ours) will come from, checked at once.

    Returns the cached file where huggingface_hub's cache holds it (loaded from there with no request), else None
    where the Hub answers (timm downloads it as usual).

    Raises:
        WeightsError: One line, without retries, where timm has no weights for ``name``, or they are neither cached
            nor reachable (``HF_HUB_OFFLINE``, or no connection to the Hub within ``connect_timeout`` seconds).
    """
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        raise WeightsError(
            f"timm has no pretrained weights for {name}: pass a weights file for it (checkpoint=; attention: compare_checkpoint=)"
        )
    if not cfg.hf_hub_id:
        return None  # a plain URL: timm's own download, with its own cache
    repo = cfg.hf_hub_id.split("@")[0]
    for filename in filter(None, (cfg.hf_hub_filename, "model.safetensors", "pytorch_model.bin")):
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    why = hub_unreachable(connect_timeout)
    if why:
        raise WeightsError(
            f"{name}'s weights ({repo} on the Hugging Face Hub) are not cached here and the Hub cannot be reached "
            f"({why}): pass a weights file for it (checkpoint=; attention: compare_checkpoint=), or download them "
            "once with a connection"
        )
    return None


def class_labels(model: torch.nn.Module) -> Optional[List[str]]:
    """The model's class labels in index order: its ``label_names``, or None for an ImageNet-1k model."""
    names = model.pretrained_cfg.get("label_names")
    if names:
        return list(names)
    if model.num_classes == len(imagenet_wnids()):
        return None
    raise WeightsError(
        f"the model has {model.num_classes} classes and no class names; it needs a config.json with label_names"
    )
