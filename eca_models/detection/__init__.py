"""COCO detection and instance segmentation with ECA-ResNet trunks: the ECA-Net release's six detectors
(Wang et al., CVPR 2020, Tables 5-6) as torchvision's ``FasterRCNN``, ``MaskRCNN`` and ``RetinaNet``."""

from functools import partial
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn

from ..errors import UnknownModel, UsageError, require_whole_number
from ..weights.folders import read_model_config
from ._registry import get_builder, is_detector, list_detectors
from .architectures import (
    ARCHITECTURES,
    DetectorArchitecture,
    get_architecture,
    is_torchvision_detector,
    torchvision_detectors,
)
from .assembly import assemble_detector
from .backbone import LastLevelP6P7FromC5, eca_resnet_fpn_backbone, release_param_count
from .faster_rcnn import fasterrcnn_eca_resnet50_fpn, fasterrcnn_eca_resnet101_fpn
from .labels import LabelMap, coco_categories
from .mask_rcnn import maskrcnn_eca_resnet50_fpn, maskrcnn_eca_resnet101_fpn
from .retinanet import retinanet_eca_resnet50_fpn, retinanet_eca_resnet101_fpn
from .torchvision_builders import build_torchvision_detector

__all__ = [
    "ARCHITECTURES",
    "DetectorArchitecture",
    "LabelMap",
    "LastLevelP6P7FromC5",
    "assemble_detector",
    "build_torchvision_detector",
    "coco_categories",
    "create_detector",
    "eca_resnet_fpn_backbone",
    "fasterrcnn_eca_resnet50_fpn",
    "fasterrcnn_eca_resnet101_fpn",
    "get_architecture",
    "get_builder",
    "is_torchvision_detector",
    "is_detector",
    "list_detectors",
    "load_detector",
    "maskrcnn_eca_resnet50_fpn",
    "maskrcnn_eca_resnet101_fpn",
    "release_param_count",
    "retinanet_eca_resnet50_fpn",
    "retinanet_eca_resnet101_fpn",
    "torchvision_detectors",
]


def create_detector(
    name: str,
    *,
    kernel_sizes: Optional[str] = None,
    checkpoint: Optional[Union[str, Path]] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    categories: Optional[Sequence[Dict[str, Any]]] = None,
    add_eca: Optional[str] = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered detector (see `list_detectors`), or torchvision's with ECA added to its trunk, in eval mode.

    Example:
        ```python
        model = create_detector("fasterrcnn_resnet50_fpn_v2", add_eca="k3557", weights_backbone="DEFAULT")
        ```

    Args:
        name: ``fasterrcnn_eca_resnet50_fpn``, ``maskrcnn_eca_resnet101_fpn``, ...; or a torchvision builder
            (``fasterrcnn_resnet50_fpn``, ``retinanet_resnet50_fpn_v2``, ...: `build_torchvision_detector`).
        kernel_sizes: ECA kernel sizes per stage (a kernel code, as for the classifiers); None: the release's (or
            the checkpoint's).
        checkpoint: A detector folder written by ``eca-models convert`` or ``finetune``.
        pretrained: The release's COCO weights from the Hub.
        num_classes: torchvision's ``num_classes`` (background included for Faster / Mask R-CNN).
        categories: The dataset's ``[{"id", "name"}]``, for a head of those classes.
        add_eca: torchvision's detectors: `eca_models.add_eca` on the trunk at these kernel sizes (``'k3557'``,
            ``'adaptive'``); the registered ones have ECA already.
        **kwargs: More builder and torchvision arguments (``weights_backbone``, ``trainable_backbone_layers``, ...).

    Raises:
        KeyError: Unknown name.
        UsageError: ``add_eca`` for a registered detector, ``kernel_sizes`` for torchvision's; sizes, classes or
            categories that make no detector.
        WeightsError: Unusable weights.
    """
    torchvision = is_torchvision_detector(name)
    builder = partial(build_torchvision_detector, name) if torchvision else get_builder(name)
    if (add_eca if not torchvision else kernel_sizes) is not None:
        raise UsageError(
            f"{name} has ECA already, with kernel_sizes=; add_eca= is for torchvision's detectors"
            if not torchvision
            else f"{name} is torchvision's: give its ECA kernel sizes as add_eca="
        )
    for key in ("min_size", "max_size"):  # torchvision takes a size or, for multi-scale training, several
        sizes = kwargs.get(key)
        for size in sizes if isinstance(sizes, (tuple, list)) else [sizes]:
            require_whole_number(key, size, 1)
    if kernel_sizes is not None:
        kwargs["kernel_sizes"] = kernel_sizes
    if add_eca is not None:
        kwargs["add_eca"] = add_eca
    return builder(
        checkpoint=None if checkpoint is None else str(checkpoint),
        pretrained=pretrained,
        num_classes=num_classes,
        categories=categories,
        **kwargs,
    )


def load_detector(
    source: Union[str, Path], pretrained: bool = True, checkpoint: Optional[Union[str, Path]] = None, **kwargs: Any
) -> nn.Module:
    """A detector from a registered name (the release's weights when ``pretrained``, or ``checkpoint``) or a
    detector folder, as `load` is for classifiers; ``min_size=None`` / ``max_size=None`` are left out (the
    weights' own sizes)."""
    kwargs = {k: v for k, v in kwargs.items() if not (k in ("min_size", "max_size") and v is None)}
    path = Path(source)
    if checkpoint is not None:
        return create_detector(str(source), checkpoint=checkpoint, **kwargs)
    if str(source).strip() and path.is_dir():  # Path("") is the working folder
        config = read_model_config(path, detector=True)
        return create_detector(config["architecture"], checkpoint=path, **kwargs)
    if not (is_detector(str(source)) or is_torchvision_detector(str(source))):
        raise UnknownModel(
            f"unknown detector {str(source)!r}: not a registered detector nor a folder (see `eca-models list`)"
        )
    return create_detector(str(source), pretrained=pretrained, **kwargs)
