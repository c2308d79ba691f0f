"""The one path every detector builder takes: its weights, kernel code and classes decided, the ECA-ResNet FPN
backbone built, torchvision's class made by the builder's ``make``, the weights loaded and what predictions and
exports need attached (``label_map``, ``detector_cfg``, mmdetection v1's box conventions where trained with them)."""

import inspect
import math
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from torch import nn
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from ..errors import UsageError
from .architectures import DetectorArchitecture, get_architecture
from .backbone import FPN_CHANNELS, LastLevelP6P7FromC5, eca_resnet_fpn_backbone, trunk_kernel_code
from .labels import LabelMap
from .legacy import use_legacy_coordinates
from .weights import DetectorWeights, load_detector_weights

__all__ = [
    "assemble_detector",
    "finish_detector",
    "label_maps",
    "rebuild_heads",
    "refuse_unknown",
    "resolve_label_map",
]

# the builder's part: torchvision's class on the backbone, with the head for ``label_map`` and its own arguments
MakeModel = Callable[..., nn.Module]
_TORCHVISION = {"fasterrcnn": FasterRCNN, "maskrcnn": MaskRCNN, "retinanet": RetinaNet}


def refuse_unknown(arch: DetectorArchitecture, kwargs: Dict[str, Any]) -> None:
    """torchvision's detectors hand keywords they do not know to their transform, which ignores them: a misspelt
    argument would change nothing, silently. Refused here, as a function refuses an unexpected keyword."""
    accepted = set()
    for fn in (_TORCHVISION[arch.kind], GeneralizedRCNNTransform):
        accepted |= {n for n, p in inspect.signature(fn).parameters.items() if p.kind != p.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(f"{arch.name}() got unexpected keyword arguments: {', '.join(unknown)}")


def assemble_detector(
    *,
    architecture: str,
    make: MakeModel,
    pretrained: bool = False,
    kernel_sizes: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    categories: Optional[Sequence[Dict[str, Any]]] = None,
    weights_backbone: Optional[str] = None,
    trainable_backbone_layers: int = 3,
    legacy_coordinates: Optional[bool] = None,
    trunk: Optional[str] = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the detector ``architecture`` and load its weights.

    Args:
        architecture: A registered detector, e.g. ``maskrcnn_eca_resnet50_fpn`` (its facts: `architectures`).
        make: ``(backbone, label_map, **kwargs) -> model``: torchvision's class with the builder's settings.
        pretrained: Load the release's COCO weights (from the Hub, pinned and checked, or the authors' file).
        kernel_sizes: ECA kernel sizes per stage, a kernel code (``'k3377'``, ``'k5'``) as for the classifiers;
            None: the weights' own, else the release's.
        checkpoint: A folder written by ``eca-models convert`` or ``finetune`` to load instead.
        num_classes: torchvision's ``num_classes`` (background included for the two-stage detectors); None: the
            weights' classes, else COCO's 80. With weights of other classes, the weights load and the classification
            layers are new (`rebuild_heads`), as timm resets a classifier.
        categories: The dataset's ``[{"id", "name"}]``; sets the classes and their label map (as ``num_classes``).
        weights_backbone: An ImageNet ECA-ResNet checkpoint for the trunk (when not loading a detector).
        trainable_backbone_layers: Trunk stages trained, from ``layer4`` (3: stem and ``layer1`` frozen, as
            released).
        legacy_coordinates: mmdetection v1's box conventions (`legacy`); None: where the weights were
            trained with them (the release's, converted files).
        trunk: Another timm ResNet as the trunk instead of the ECA-ResNet (the benchmark's plain twin,
            ``resnet50``); kernel codes then do not apply.
        **kwargs: More arguments of torchvision's class (``min_size``, ``box_score_thresh``, ...); a folder's recorded
            ``min_size`` / ``max_size`` (the sizes it was fine-tuned at) apply unless given here.
    """
    arch = get_architecture(architecture)
    refuse_unknown(arch, kwargs)
    weights = load_detector_weights(arch.name, pretrained, checkpoint)
    if trunk is None:
        code = kernel_sizes or (weights.kernel_code if weights is not None else None)
        if code is None and weights_backbone is not None:
            code = trunk_kernel_code(weights_backbone)
        code = code or arch.release_code
    else:
        code = None  # a plain ResNet has no kernel sizes
    own = weights.label_map if weights is not None else None  # the weights' classes
    label_map, head = label_maps(num_classes, categories, arch.background, own)
    backbone = _backbone(arch, trunk or arch.trunk, code, trainable_backbone_layers, weights_backbone)
    model = make(backbone, label_map, **{**(weights.sizes if weights is not None else {}), **kwargs})
    return finish_detector(
        model, arch, trunk or arch.trunk, backbone.body.kernel_code, label_map, weights, legacy_coordinates, head
    )


def _backbone(
    arch: DetectorArchitecture, trunk: str, code: Optional[str], trainable: int, weights_backbone: Optional[str]
) -> BackboneWithFPN:
    """The trunk and its FPN: C2-C5 with P6 by max-pooling (two-stage), or C3-C5 with P6 and P7 from C5
    (RetinaNet)."""
    extra = LastLevelP6P7FromC5(2048, FPN_CHANNELS) if arch.kind == "retinanet" else None
    return eca_resnet_fpn_backbone(
        trunk,
        code,
        arch.returned_layers,
        extra_blocks=extra,
        trainable_backbone_layers=trainable,
        weights_backbone=weights_backbone,
    )


def label_maps(
    num_classes: Optional[int],
    categories: Optional[Sequence[Dict[str, Any]]],
    background: bool,
    own: Optional[LabelMap] = None,
) -> Tuple[LabelMap, Optional[LabelMap]]:
    """The classes a builder builds and loads the weights with (``own``, the weights' classes, else those
    ``num_classes`` / ``categories`` ask for, else COCO's), and the head to put on after loading: None to keep it
    (neither is given, or ``num_classes`` alone is ``own``'s count, as torchvision keeps its weights' head)."""
    keep = num_classes is None and categories is None
    if keep or (categories is None and own and num_classes == own.num_classes):
        head = None
    else:
        head = resolve_label_map(num_classes, categories, background)
    return own or head or LabelMap.coco(background), head


def resolve_label_map(
    num_classes: Optional[int], categories: Optional[Sequence[Dict[str, Any]]], background: bool
) -> LabelMap:
    """The label map a builder's ``num_classes`` / ``categories`` ask for (neither: COCO's 80, as released).

    ``num_classes`` is torchvision's (background included for the two-stage detectors); without ``categories`` the
    classes are called ``class_1`` ... with ids 1 ... .
    """
    if categories is not None:
        label_map = LabelMap.from_categories(categories, background)
        if num_classes is not None and num_classes != label_map.num_classes:
            raise UsageError(
                f"num_classes={num_classes} but {len(label_map.names)} categories make a {label_map.num_classes}-way head"
            )
        return label_map
    if num_classes is None:
        return LabelMap.coco(background)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise UsageError(f"num_classes={num_classes!r}: expected a whole number")
    foreground = num_classes - int(background)
    if foreground < 1:
        raise UsageError(f"num_classes={num_classes} leaves no class" + (" besides background" if background else ""))
    return LabelMap(tuple(range(1, foreground + 1)), tuple(f"class_{i}" for i in range(1, foreground + 1)), background)


def finish_detector(
    model: nn.Module,
    arch: DetectorArchitecture,
    trunk: str,
    kernel_code: str,
    label_map: LabelMap,
    weights: Optional[DetectorWeights],
    legacy_coordinates: Optional[bool],
    head: Optional[LabelMap] = None,
) -> nn.Module:
    """Load ``weights`` (if any); attach ``label_map`` and ``detector_cfg``; mmdetection v1's box conventions where
    the weights were trained with them (or ``legacy_coordinates`` says so); then new classification layers for
    ``head`` where its classes are not ``label_map``'s (`rebuild_heads`)."""
    if weights is not None:
        weights.load_into(model)
    model.label_map = label_map
    model.detector_cfg = {
        "architecture": arch.name,
        "kernel_code": kernel_code,
        "trunk": trunk,
        "min_size": model.transform.min_size[0],
        "max_size": model.transform.max_size,
        "mean": tuple(model.transform.image_mean),
        "std": tuple(model.transform.image_std),
    }
    if legacy_coordinates is None:
        legacy_coordinates = weights is not None and weights.legacy_coordinates
    if legacy_coordinates:
        use_legacy_coordinates(model)
    if head is not None:
        rebuild_heads(model, head)
    return model.eval()


def rebuild_heads(model: nn.Module, label_map: LabelMap) -> nn.Module:
    """Give ``model`` classification layers for ``label_map``'s classes (kept as they are when it already has
    them): torchvision's box and mask predictors for Faster / Mask R-CNN, RetinaNet's last classification conv
    (its tower kept), each initialised as torchvision initialises it."""
    if (
        tuple(model.label_map.category_ids) == tuple(label_map.category_ids)
        and model.label_map.names == label_map.names
    ):
        return model
    if hasattr(model, "roi_heads"):
        box = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features, label_map.num_classes)
        if model.roi_heads.has_mask():
            mask = model.roi_heads.mask_predictor
            model.roi_heads.mask_predictor = MaskRCNNPredictor(
                mask.conv5_mask.in_channels, mask.conv5_mask.out_channels, label_map.num_classes
            )
    else:
        head = model.head.classification_head
        old = head.cls_logits
        head.cls_logits = nn.Conv2d(old.in_channels, head.num_anchors * label_map.num_classes, 3, padding=1)
        nn.init.normal_(head.cls_logits.weight, std=0.01)
        nn.init.constant_(head.cls_logits.bias, -math.log((1 - 0.01) / 0.01))  # torchvision's prior probability
        head.num_classes = label_map.num_classes
    model.label_map = label_map
    return model
