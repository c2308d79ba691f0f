"""Faster R-CNN with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Table 5).

torchvision's ``FasterRCNN`` with mmdetection v1's settings: 81-way box head (background first) with class-specific
box deltas, 3 anchors per level (32-512), 1000 proposals at test, score 0.05 / NMS 0.5 / 100 per image, images
resized to 800 (at most 1333) and padded to a multiple of 32.
"""

from typing import Any, Dict, Optional, Sequence

from torchvision.models.detection import FasterRCNN

from ._registry import finish_detector, register_detector, start_detector_weights
from .backbone import eca_resnet_fpn_backbone

__all__ = ["fasterrcnn_eca_resnet50_fpn", "fasterrcnn_eca_resnet101_fpn", "two_stage_kwargs", "build_two_stage"]

# mmdetection v1's test settings and preprocessing (torchvision's defaults where they agree)
TWO_STAGE_DEFAULTS: Dict[str, Any] = dict(
    min_size=800,
    max_size=1333,
    image_mean=(0.485, 0.456, 0.406),
    image_std=(0.229, 0.224, 0.225),
    rpn_pre_nms_top_n_test=1000,
    rpn_post_nms_top_n_test=1000,
    rpn_nms_thresh=0.7,
    box_score_thresh=0.05,
    box_nms_thresh=0.5,
    box_detections_per_img=100,
)


def two_stage_kwargs(**overrides: Any) -> Dict[str, Any]:
    """The two-stage detectors' keyword arguments: the release's, with ``overrides`` on top."""
    return {**TWO_STAGE_DEFAULTS, **overrides}


def build_two_stage(
    cls: type,
    architecture: str,
    trunk: str,
    release_code: Optional[str],
    *,
    pretrained: bool = False,
    kernel_sizes: Optional[str] = None,
    checkpoint: Optional[str] = None,
    num_classes: Optional[int] = None,
    categories: Optional[Sequence[Dict[str, Any]]] = None,
    weights_backbone: Optional[str] = None,
    trainable_backbone_layers: int = 3,
    legacy_coordinates: Optional[bool] = None,
    **kwargs: Any,
):
    """Assemble a ``FasterRCNN`` or ``MaskRCNN`` (``cls``) on a ResNet FPN backbone and load its weights.

    Args:
        cls: torchvision's ``FasterRCNN`` or ``MaskRCNN``.
        architecture: The builder's name, e.g. ``fasterrcnn_eca_resnet50_fpn``.
        trunk: ``eca_resnet50`` / ``eca_resnet101`` (timm's ``resnet50`` for the plain baseline).
        release_code: The release's kernel code for it (None for a plain trunk).
        pretrained: Load the release's COCO weights (from the Hub, pinned and checked).
        kernel_sizes: ECA kernel sizes per stage, a kernel code (``'k3377'``, ``'k5'``) as for the classifiers; None:
            the release's (or the checkpoint's).
        checkpoint: A folder written by ``eca-models convert`` or ``finetune`` to load instead.
        num_classes: torchvision's ``num_classes`` (background included); None: COCO's 80 + 1.
        categories: The dataset's ``[{"id", "name"}]``; sets the classes and their label map.
        weights_backbone: An ImageNet ECA-ResNet checkpoint for the trunk (when not loading a detector), as
            torchvision's builders name it.
        trainable_backbone_layers: Trunk stages trained, from ``layer4`` (3: stem and ``layer1`` frozen, as
            released), as torchvision's builders name it.
        legacy_coordinates: mmdetection v1's box conventions (:mod:`~eca_models.detection.legacy`); None: where
            the weights were trained with them (the release's, converted files).
        **kwargs: More ``cls`` arguments (``min_size``, ``box_score_thresh``, ...).
    """
    weights, code, label_map = start_detector_weights(
        architecture,
        pretrained,
        checkpoint,
        kernel_sizes,
        release_code,
        num_classes,
        categories,
        True,
        weights_backbone,
    )
    backbone = eca_resnet_fpn_backbone(
        trunk, code, (1, 2, 3, 4), trainable_layers=trainable_backbone_layers, trunk_weights=weights_backbone
    )
    model = cls(backbone, num_classes=label_map.num_classes, **two_stage_kwargs(**kwargs))
    return finish_detector(model, architecture, backbone.body.kernel_code, label_map, weights, legacy_coordinates)


@register_detector
def fasterrcnn_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN on ECA-ResNet-50; the release's kernel code ``k5`` (5 in every stage).

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: :func:`build_two_stage`'s (``kernel_sizes``, ``checkpoint``, ``num_classes``, ``categories``,
            ``weights_backbone``, ``trainable_backbone_layers``; the first names ``kernel_code``, ``trunk_weights``,
            ``trainable_layers`` still work, deprecated) and torchvision's ``FasterRCNN``'s.
    """
    return build_two_stage(
        FasterRCNN, "fasterrcnn_eca_resnet50_fpn", "eca_resnet50", "k5", pretrained=pretrained, **kwargs
    )


@register_detector
def fasterrcnn_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as :func:`fasterrcnn_eca_resnet50_fpn`.
    """
    return build_two_stage(
        FasterRCNN, "fasterrcnn_eca_resnet101_fpn", "eca_resnet101", "k3357", pretrained=pretrained, **kwargs
    )
