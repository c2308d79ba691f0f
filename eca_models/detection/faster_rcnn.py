"""Faster R-CNN with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Table 5).

torchvision's ``FasterRCNN`` with mmdetection v1's settings: 81-way box head (background first) with class-specific
box deltas, 3 anchors per level (32-512), 1000 proposals at test, score 0.05 / NMS 0.5 / 100 per image, images
resized to 800 (at most 1333) and padded to a multiple of 32.
"""

from typing import Any, Dict

from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from ._registry import register_detector
from .assembly import assemble_detector
from .labels import LabelMap

__all__ = ["fasterrcnn_eca_resnet50_fpn", "fasterrcnn_eca_resnet101_fpn", "make_faster_rcnn", "two_stage_kwargs"]

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


def make_faster_rcnn(backbone: BackboneWithFPN, label_map: LabelMap, **kwargs: Any) -> FasterRCNN:
    """torchvision's ``FasterRCNN`` on ``backbone`` with a box head for ``label_map``, the release's settings and
    ``kwargs`` on top."""
    return FasterRCNN(backbone, num_classes=label_map.num_classes, **two_stage_kwargs(**kwargs))


@register_detector
def fasterrcnn_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN on ECA-ResNet-50; the release's kernel code ``k5`` (5 in every stage).

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: `assemble_detector`'s (``kernel_sizes``, ``checkpoint``, ``num_classes``, ``categories``,
            ``weights_backbone``, ``trainable_backbone_layers``) and torchvision's ``FasterRCNN``'s.
    """
    return assemble_detector(
        architecture="fasterrcnn_eca_resnet50_fpn", make=make_faster_rcnn, pretrained=pretrained, **kwargs
    )


@register_detector
def fasterrcnn_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> FasterRCNN:
    """Faster R-CNN + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as `fasterrcnn_eca_resnet50_fpn`.
    """
    return assemble_detector(
        architecture="fasterrcnn_eca_resnet101_fpn", make=make_faster_rcnn, pretrained=pretrained, **kwargs
    )
