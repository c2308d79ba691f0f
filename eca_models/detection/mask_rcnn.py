"""Mask R-CNN with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Tables 5-6).

torchvision's ``MaskRCNN`` with the Faster R-CNN settings of `faster_rcnn` and mmdetection v1's mask head:
RoIAlign 14x14, four 3x3 convs of 256, a 2x2 stride-2 deconv and 81 class-specific 28x28 masks.
"""

from typing import Any

from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.backbone_utils import BackboneWithFPN

from ._registry import register_detector
from .assembly import assemble_detector
from .faster_rcnn import two_stage_kwargs
from .labels import LabelMap

__all__ = ["make_mask_rcnn", "maskrcnn_eca_resnet50_fpn", "maskrcnn_eca_resnet101_fpn"]


def make_mask_rcnn(backbone: BackboneWithFPN, label_map: LabelMap, **kwargs: Any) -> MaskRCNN:
    """torchvision's ``MaskRCNN`` on ``backbone`` with heads for ``label_map``, the release's settings and
    ``kwargs`` on top."""
    return MaskRCNN(backbone, num_classes=label_map.num_classes, **two_stage_kwargs(**kwargs))


@register_detector
def maskrcnn_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN on ECA-ResNet-50; the release's kernel code ``k3377``.

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: `assemble_detector`'s and torchvision's ``MaskRCNN``'s.
    """
    return assemble_detector(
        architecture="maskrcnn_eca_resnet50_fpn", make=make_mask_rcnn, pretrained=pretrained, **kwargs
    )


@register_detector
def maskrcnn_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> MaskRCNN:
    """Mask R-CNN + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as `maskrcnn_eca_resnet50_fpn`.
    """
    return assemble_detector(
        architecture="maskrcnn_eca_resnet101_fpn", make=make_mask_rcnn, pretrained=pretrained, **kwargs
    )
