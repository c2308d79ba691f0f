"""Detector weights: a converted or fine-tuned folder (``config.json`` + ``model.safetensors``) or the release's
COCO weights from the Hub (pinned revision and sha256 from the manifest, as for the classifiers)."""

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..weights import WeightsError, find_checkpoint
from ..weights.fetch import fetch_weights
from ..weights.folders import CONFIG_FILE, read_model_config, write_model_files
from ..weights.loading import WEIGHTS_FILE, read_safetensors
from ._registry import is_detector
from .architectures import get_architecture, is_torchvision_detector
from .labels import LabelMap

__all__ = [
    "is_detector_source",
    "released_checkpoint",
    "DetectorWeights",
    "load_detector_weights",
    "detector_config",
    "write_detector_files",
]


def state_dict_mismatch(
    own: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor]
) -> Tuple[List[str], List[str], List[str]]:
    """What keeps ``given`` from loading strictly into a model whose state dict is ``own``: its keys the model lacks
    (missing), the keys it has that the model does not (unexpected), and tensors of another shape (described)."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    shapes = [
        f"{k} {tuple(v.shape)}, the model's {tuple(own[k].shape)}"
        for k, v in given.items()
        if k in own and v.shape != own[k].shape
    ]
    return missing, unexpected, shapes


@dataclasses.dataclass
class DetectorWeights:
    """A detector's state dict and what it was trained with (``legacy_coordinates``: mmdetection v1's box
    conventions, see `legacy`; ``sizes``: the ``min_size`` / ``max_size`` its folder records, which a model
    built from it uses unless told otherwise; ``norm_eps``: the frozen trunk norms' epsilon, for torchvision's
    detectors)."""

    architecture: str
    kernel_code: str
    label_map: LabelMap
    state_dict: Dict[str, torch.Tensor]
    source: str
    legacy_coordinates: bool = False
    sizes: Dict[str, int] = dataclasses.field(default_factory=dict)
    norm_eps: Optional[float] = None

    def load_into(self, model: nn.Module) -> None:
        """Load strictly; a missing, unexpected or mis-shaped tensor is a one-line `WeightsError`."""
        missing, unexpected, shapes = state_dict_mismatch(model.state_dict(), self.state_dict)
        if missing or unexpected or shapes:
            parts = []
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", shapes)):
                if keys:
                    parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
            raise WeightsError(f"{self.source} does not fit {self.architecture}: tensors " + "; ".join(parts))
        model.load_state_dict(self.state_dict)


def detector_config(model: nn.Module, **extra: Any) -> Dict[str, Any]:
    """The ``config.json`` of a detector folder: architecture, task, kernel code and sizes, classes, preprocessing."""
    cfg = model.detector_cfg
    return {
        "task": get_architecture(cfg["architecture"]).task,
        "architecture": cfg["architecture"],
        "kernel_code": cfg["kernel_code"],
        "kernel_sizes": list(model.backbone.body.kernel_sizes),
        "label_map": model.label_map.to_json(),
        "min_size": cfg["min_size"],
        "max_size": cfg["max_size"],
        "mean": list(cfg["mean"]),
        "std": list(cfg["std"]),
        "legacy_coordinates": bool(cfg.get("legacy_coordinates", False)),
        **({"norm_eps": cfg["norm_eps"]} if "norm_eps" in cfg else {}),
        **extra,
    }


def write_detector_files(
    model: nn.Module, folder: Union[str, Path], card: str, metadata: Dict[str, str], **config: Any
) -> None:
    """A detector's folder: `write_model_files` with its ``config.json``
    (`detector_config` and ``config``'s entries: source file, its sha256, what it was fine-tuned on, ...)."""

    def write_config(path: Path) -> None:
        path.write_text(json.dumps(detector_config(model, **config), indent=2) + "\n", encoding="utf-8")

    write_model_files(model, folder, card, metadata, write_config)


def released_checkpoint(architecture: str, kernel_code: str, label_map: LabelMap):
    """The manifest entry of the release's checkpoint a model of ``architecture``, ``kernel_code`` and ``label_map``
    corresponds to (its reported figures apply), or None: another kernel code, or other classes than COCO's 80."""
    ckpt = find_checkpoint(architecture)
    if ckpt is None or ckpt.is_classifier or ckpt.kernel_code != kernel_code:
        return None
    return ckpt if label_map == LabelMap.coco(label_map.background) else None


def is_detector_source(source: Union[str, Path]) -> bool:
    """True for a registered detector name or a folder whose ``config.json`` is a detector's."""
    if is_detector(str(source)) or is_torchvision_detector(str(source)):
        return True
    if not (Path(source) / CONFIG_FILE).is_file():
        return False
    try:
        read_model_config(source, detector=True)
    except WeightsError:  # unreadable, or a classifier's
        return False
    return True


def load_detector_weights(
    architecture: str, pretrained: bool = False, checkpoint: Optional[Union[str, Path]] = None
) -> Optional[DetectorWeights]:
    """The weights a builder was asked for: ``checkpoint`` (a detector folder), the release's (``pretrained``), or
    None (random initialisation)."""
    if checkpoint is not None:
        folder = Path(checkpoint)
        if not folder.exists():
            raise WeightsError(f"checkpoint {folder} does not exist: give a detector folder (a run's, or converted)")
        if not folder.is_dir():
            hint = "" if is_torchvision_detector(architecture) else " (an mmdetection file: `eca-models convert` it)"
            raise WeightsError(f"checkpoint {folder} is a file, not a detector folder{hint}")
        config = read_model_config(folder, detector=True)
        if config["architecture"] != architecture:
            raise WeightsError(f"{folder} holds {config['architecture']}, not {architecture}")
        if not (folder / WEIGHTS_FILE).is_file():
            raise WeightsError(f"{folder} has no {WEIGHTS_FILE}")
        return DetectorWeights(
            architecture,
            config["kernel_code"],
            LabelMap.from_json(config["label_map"]),
            read_safetensors(folder / WEIGHTS_FILE),
            str(folder),
            bool(config.get("legacy_coordinates", False)),
            {k: int(config[k]) for k in ("min_size", "max_size") if isinstance(config.get(k), int)},
            config.get("norm_eps"),
        )
    if not pretrained:
        return None
    ckpt = find_checkpoint(architecture)
    if ckpt is None:
        raise WeightsError(f"{architecture} has no released weights; pass checkpoint=DIR")
    path = fetch_weights(ckpt).weights
    background = get_architecture(architecture).background
    return DetectorWeights(
        architecture, ckpt.kernel_code, LabelMap.coco(background), read_safetensors(path), ckpt.name, True
    )  # the release's weights: trained by mmdetection v1
