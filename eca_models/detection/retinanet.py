"""RetinaNet with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Table 5).

torchvision's ``RetinaNet`` with mmdetection v1's settings: FPN on C3-C5 with P6 from C5 and no ReLU before P7,
9 anchors per location at the exact octave scales 4 x stride x 2^(0, 1/3, 2/3), a head of four 3x3 convs with no
normalization, 80-way sigmoid classification, and 1000 candidates per level / score 0.05 / NMS 0.5 / 100 per image.
"""

from typing import Any, Dict, Sequence

from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.retinanet import RetinaNetHead

from ._registry import register_detector
from .assembly import assemble_detector
from .backbone import FPN_CHANNELS
from .faster_rcnn import TWO_STAGE_DEFAULTS
from .labels import LabelMap

__all__ = ["make_retinanet", "octave_anchor_generator", "retinanet_eca_resnet50_fpn", "retinanet_eca_resnet101_fpn"]

RETINANET_DEFAULTS: Dict[str, Any] = dict(
    **{k: TWO_STAGE_DEFAULTS[k] for k in ("min_size", "max_size", "image_mean", "image_std")},
    score_thresh=0.05,
    nms_thresh=0.5,
    detections_per_img=100,
    topk_candidates=1000,
)


def octave_anchor_generator(strides: Sequence[int] = (8, 16, 32, 64, 128)) -> AnchorGenerator:
    """Anchors of 4 x stride x 2^(i/3), i = 0, 1, 2, at ratios 0.5, 1, 2: not rounded to whole pixels."""
    sizes = tuple(tuple(4 * s * 2 ** (i / 3) for i in range(3)) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def make_retinanet(backbone: BackboneWithFPN, label_map: LabelMap, **kwargs: Any) -> RetinaNet:
    """torchvision's ``RetinaNet`` on ``backbone`` with the octave anchors and a head for ``label_map`` (no
    background class), the release's settings and ``kwargs`` on top."""
    anchors = octave_anchor_generator()
    head = RetinaNetHead(FPN_CHANNELS, anchors.num_anchors_per_location()[0], label_map.num_classes)
    return RetinaNet(
        backbone, label_map.num_classes, anchor_generator=anchors, head=head, **{**RETINANET_DEFAULTS, **kwargs}
    )


@register_detector
def retinanet_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> RetinaNet:
    """RetinaNet + FPN on ECA-ResNet-50; the release's kernel code ``k3377``.

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: `assemble_detector`'s (``kernel_sizes``, ``checkpoint``, ``num_classes`` without background,
            ``categories``, ``weights_backbone``, ``trainable_backbone_layers``) and torchvision's ``RetinaNet``'s.
    """
    return assemble_detector(
        architecture="retinanet_eca_resnet50_fpn", make=make_retinanet, pretrained=pretrained, **kwargs
    )


@register_detector
def retinanet_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> RetinaNet:
    """RetinaNet + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as `retinanet_eca_resnet50_fpn`.
    """
    return assemble_detector(
        architecture="retinanet_eca_resnet101_fpn", make=make_retinanet, pretrained=pretrained, **kwargs
    )
