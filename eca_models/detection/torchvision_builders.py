"""torchvision's own detectors with ECA in their trunk: a Faster R-CNN, Mask R-CNN or RetinaNet builder of
torchvision (``fasterrcnn_resnet50_fpn``, ``maskrcnn_resnet50_fpn_v2``, ...), `eca_models.add_eca` on its backbone's
trunk, built, loaded, fine-tuned and exported as the release's six detectors are.

The trunk's BatchNorms are frozen (torchvision's ``FrozenBatchNorm2d``), as torchvision builds them when it starts
from weights and as the release trained (mmdetection's ``norm_eval``), so that a folder reloads into the same modules
however its run started; ``trainable_backbone_layers`` freezes stages as for the release's detectors, all but the
ECA layers put into them (new layers, trained in every stage).
"""

import contextlib
import inspect
import os
import pickle
import typing
from typing import Any, Dict, Iterator, Optional, Sequence
from urllib.error import URLError

import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_builder, get_model_weights
from torchvision.ops import FrozenBatchNorm2d

from ..errors import UsageError, first_line
from ..insertion import add_eca as insert_eca
from ..layers.kernel_codes import parse_kernel_code, stage_kernel_sizes
from ..weights import WeightsError
from .architectures import get_architecture
from .assembly import finish_detector, label_maps, refuse_unknown
from .backbone import check_trainable_layers, freeze_stages
from .labels import LabelMap
from .weights import DetectorWeights, load_detector_weights

__all__ = ["build_torchvision_detector"]


def build_torchvision_detector(
    name: str,
    *,
    add_eca: Optional[str] = None,
    pretrained: bool = False,
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    categories: Optional[Sequence[Dict[str, Any]]] = None,
    weights_backbone: Optional[str] = None,
    trainable_backbone_layers: int = 3,
    **kwargs: Any,
) -> nn.Module:
    """torchvision's detector ``name`` with `eca_models.add_eca` on its trunk, in eval mode.

    Args:
        name: A torchvision builder, e.g. ``fasterrcnn_resnet50_fpn`` (see `torchvision_detectors`).
        add_eca: The ECA layers' kernel sizes, as `eca_models.add_eca` takes them (``'k3557'``, ``'adaptive'``);
            None: a folder's own, else none (torchvision's plain detector).
        pretrained: torchvision's COCO weights (its ``weights="DEFAULT"``, downloaded and checked by torchvision,
            read as tensors only); the ECA layers are new.
        checkpoint: A detector folder written by ``eca-models finetune`` from this builder.
        num_classes: torchvision's ``num_classes`` (background included for Faster / Mask R-CNN); with weights of
            other classes (COCO's, a folder's), the weights load and the classification layers are new.
        categories: The dataset's ``[{"id", "name"}]``, for a head of those classes (as ``num_classes``).
        weights_backbone: torchvision's ImageNet weights for the trunk (``'DEFAULT'``, ``'IMAGENET1K_V1'``).
        trainable_backbone_layers: Trunk stages trained, from ``layer4``.
        **kwargs: More arguments of torchvision's class (``min_size``, ``box_score_thresh``, ...).
    """
    arch = get_architecture(name)
    refuse_unknown(arch, kwargs)
    check_trainable_layers(trainable_backbone_layers)
    _check_weights_backbone(name, weights_backbone)
    weights = load_detector_weights(name, checkpoint=checkpoint)
    if weights is not None:
        if pretrained or weights_backbone is not None:
            raise UsageError(f"{checkpoint} holds the weights already: drop pretrained= and weights_backbone=")
        add_eca = _folder_insertion(weights.kernel_code, add_eca, checkpoint)
    own = weights.label_map if weights is not None else _coco_labels(name) if pretrained else None  # the weights' head
    label_map, head = label_maps(num_classes, categories, arch.background, own)
    trained = pretrained or weights_backbone is not None
    asked = "pretrained=False" if pretrained else "leave weights_backbone= out"  # what a failed download needs
    with _weights_only(name, asked):  # torchvision's download: read with torch.load(weights_only=True), not unpickled
        model = get_model(
            name,
            weights="DEFAULT" if pretrained else None,
            weights_backbone=weights_backbone,
            trainable_backbone_layers=5 if trained else None,  # the stages are frozen below, as for every detector
            **({} if pretrained else {"num_classes": label_map.num_classes}),
            **{**(weights.sizes if weights is not None else {}), **kwargs},
        )
    norm_eps = _prepare_trunk(model.backbone.body, add_eca, trainable_backbone_layers, weights)
    code = model.backbone.body.kernel_code
    model = finish_detector(model, arch, "torchvision", code, label_map, weights, False, head)
    model.detector_cfg["norm_eps"] = norm_eps
    return model


def _prepare_trunk(
    body: nn.Module, add_eca: Optional[str], trainable_backbone_layers: int, weights: Optional[DetectorWeights]
) -> Optional[float]:
    """The trunk's norms frozen (at the epsilon a folder's weights were trained with: 0 for torchvision's first COCO
    weights), its first stages frozen, ECA put in; returns the norms' epsilon, for the folder to record."""
    freeze_batch_norm_2d(body)
    norms = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    for norm in norms if weights is not None and weights.norm_eps is not None else ():
        norm.eps = weights.norm_eps
    freeze_stages(body, trainable_backbone_layers)
    if add_eca is not None:
        insert_eca(body, add_eca)
        body.kernel_sizes = tuple(min(sizes) for _, sizes in sorted(stage_kernel_sizes(body.state_dict()).items()))
    else:
        body.kernel_code, body.kernel_sizes = "none", ()
    return norms[0].eps if norms else None


@contextlib.contextmanager
def _weights_only(name: str, instead: str) -> Iterator[None]:
    """torch's documented switch that makes every ``torch.load`` read tensors only, for the ``with`` block; a file
    holding more, or a download that fails, is a one-line `WeightsError` (offering ``instead`` for the latter)."""
    saved = {k: os.environ.pop(k, None) for k in ("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")}
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    except pickle.UnpicklingError as e:
        raise WeightsError(
            f"torchvision's weights for {name} hold more than tensors; not loaded ({first_line(e)})"
        ) from None
    except URLError as e:
        raise WeightsError(
            f"torchvision's weights for {name} are not in torch's cache ({torch.hub.get_dir()}) and could not be "
            f"downloaded ({e.reason}): {instead}, or download them once with a connection"
        ) from None
    finally:
        os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def _check_weights_backbone(name: str, weights_backbone: Any) -> None:
    """A one-line `UsageError` unless ``weights_backbone`` names weights of the trunk of torchvision's ``name`` (as
    torchvision's ``verify`` reads a name: ``'DEFAULT'``, ``'IMAGENET1K_V1'``, ``'ResNet50_Weights.IMAGENET1K_V1'``)."""
    if not isinstance(weights_backbone, str):
        return  # None, or torchvision's enum, which torchvision checks itself
    annotation = inspect.signature(get_model_builder(name)).parameters["weights_backbone"].annotation
    enum = next(t for t in typing.get_args(annotation) if isinstance(t, type) and issubclass(t, WeightsEnum))
    if weights_backbone.removeprefix(f"{enum.__name__}.") not in enum.__members__:
        choices = ", ".join(enum.__members__)
        raise UsageError(f"weights_backbone={weights_backbone!r}: {name}'s trunk has torchvision's {choices}")


def _folder_insertion(recorded: str, asked: Optional[str], folder: Optional[str]) -> Optional[str]:
    """The ECA insertion a folder records (its kernel code; ``none``: a plain detector); ``asked`` must agree."""
    own = None if recorded == "none" else recorded
    if asked is not None and (own is None or parse_kernel_code(asked, 4) != parse_kernel_code(own, 4)):
        raise WeightsError(f"{folder} was trained with ECA kernel code {recorded}, not {asked}: leave add_eca= out")
    return own


def _coco_labels(name: str) -> LabelMap:
    """torchvision's COCO head: index ``i`` is category id ``i`` (``N/A`` at COCO's gaps), index 0 background."""
    names = get_model_weights(name).DEFAULT.meta["categories"]
    return LabelMap(tuple(range(1, len(names))), tuple(names[1:]), background=True)
