"""Mask R-CNN with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Tables 5-6).

torchvision's ``MaskRCNN`` with the Faster R-CNN settings of :mod:`.faster_rcnn` and mmdetection v1's mask head:
RoIAlign 14x14, four 3x3 convs of 256, a 2x2 stride-2 deconv and 81 class-specific 28x28 masks.
"""

from typing import Any

from torchvision.models.detection import MaskRCNN

from ._registry import register_detector
from .faster_rcnn import build_two_stage

__all__ = ["maskrcnn_eca_resnet50_fpn", "maskrcnn_eca_resnet101_fpn"]


@register_detector
def maskrcnn_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN on ECA-ResNet-50; the release's kernel code ``k3377``.

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: :func:`~eca_models.detection.faster_rcnn.build_two_stage`'s and torchvision's ``MaskRCNN``'s.
    """
    return build_two_stage(
        MaskRCNN, "maskrcnn_eca_resnet50_fpn", "eca_resnet50", "k3377", pretrained=pretrained, **kwargs
    )


@register_detector
def maskrcnn_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as :func:`maskrcnn_eca_resnet50_fpn`.
    """
    return build_two_stage(
        MaskRCNN, "maskrcnn_eca_resnet101_fpn", "eca_resnet101", "k3357", pretrained=pretrained, **kwargs
    )
