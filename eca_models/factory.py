"""One call to get a model from wherever it is: a registered name, a converted or fine-tuned folder, the Hub."""

from pathlib import Path
from typing import Any, List, Optional, Union

import timm
import torch

from .data.imagenet import imagenet_wnids
from .weights import WeightsError

__all__ = ["class_labels", "load"]


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
        **kwargs: More ``timm.create_model`` arguments.

    Raises:
        KeyError: ``source`` is neither a folder with a config.json nor a known model.
        WeightsError: The weights are missing, unreadable or for another model.
    """
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise WeightsError(
                f"{path} has no config.json; pass a folder written by `eca-models convert` or `finetune`"
            )
        return timm.create_model(f"local-dir:{path}", pretrained=pretrained, **kwargs).eval()
    name = str(source)
    if not name.startswith("hf-hub:") and not timm.is_model(name):
        raise KeyError(f"unknown model {name!r}: not a registered model nor a folder (see `eca-models list`)")
    if checkpoint is not None:
        ckpt = Path(checkpoint)
        if ckpt.is_dir() and (ckpt / "config.json").is_file():
            model = timm.create_model(f"local-dir:{ckpt}", pretrained=True, **kwargs)
            if model.pretrained_cfg["architecture"].split("_k")[0] != name.split("_k")[0]:
                raise WeightsError(f"{ckpt} holds {model.pretrained_cfg['architecture']}, not {name}")
            return model.eval()
        kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(ckpt))
        pretrained = True
    return timm.create_model(name, pretrained=pretrained, **kwargs).eval()


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
