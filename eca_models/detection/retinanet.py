"""RetinaNet with an ECA-ResNet FPN trunk, as the ECA-Net release trained it (Wang et al., CVPR 2020, Table 5).

torchvision's ``RetinaNet`` with mmdetection v1's settings: FPN on C3-C5 with P6 from C5 and no ReLU before P7,
9 anchors per location at the exact octave scales 4 x stride x 2^(0, 1/3, 2/3), a head of four 3x3 convs with no
normalization, 80-way sigmoid classification, and 1000 candidates per level / score 0.05 / NMS 0.5 / 100 per image.
"""

from typing import Any, Dict, Optional, Sequence

from torchvision.models.detection import RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNetHead

from ._registry import finish_detector, register_detector, start_detector_weights
from .backbone import FPN_CHANNELS, LastLevelP6P7FromC5, eca_resnet_fpn_backbone
from .faster_rcnn import TWO_STAGE_DEFAULTS

__all__ = ["build_retinanet", "octave_anchor_generator", "retinanet_eca_resnet50_fpn", "retinanet_eca_resnet101_fpn"]

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


def build_retinanet(
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
) -> RetinaNet:
    """Assemble a ``RetinaNet`` on a ResNet FPN backbone (``trunk``: ours, or timm's plain one) and load its weights.

    Args: as :func:`~eca_models.detection.faster_rcnn.build_two_stage`, except that ``num_classes`` has no
    background class (80 for COCO) and ``**kwargs`` go to ``RetinaNet``.
    """
    weights, code, label_map = start_detector_weights(
        architecture,
        pretrained,
        checkpoint,
        kernel_sizes,
        release_code,
        num_classes,
        categories,
        False,
        weights_backbone,
    )
    backbone = eca_resnet_fpn_backbone(
        trunk,
        code,
        (2, 3, 4),
        extra_blocks=LastLevelP6P7FromC5(2048, FPN_CHANNELS),
        trainable_layers=trainable_backbone_layers,
        trunk_weights=weights_backbone,
    )
    anchors = octave_anchor_generator()
    head = RetinaNetHead(FPN_CHANNELS, anchors.num_anchors_per_location()[0], label_map.num_classes)
    model = RetinaNet(
        backbone, label_map.num_classes, anchor_generator=anchors, head=head, **{**RETINANET_DEFAULTS, **kwargs}
    )
    return finish_detector(model, architecture, backbone.body.kernel_code, label_map, weights, legacy_coordinates)


@register_detector
def retinanet_eca_resnet50_fpn(*, pretrained: bool = False, **kwargs: Any) -> RetinaNet:
    """RetinaNet + FPN on ECA-ResNet-50; the release's kernel code ``k3377``.

    Args:
        pretrained: Load the release's COCO weights.
        **kwargs: :func:`build_retinanet`'s (``kernel_sizes``, ``checkpoint``, ``num_classes`` without background,
            ``categories``, ``weights_backbone``, ``trainable_backbone_layers``; the first names ``kernel_code``,
            ``trunk_weights``, ``trainable_layers`` still work, deprecated) and torchvision's ``RetinaNet``'s.
    """
    return build_retinanet("retinanet_eca_resnet50_fpn", "eca_resnet50", "k3377", pretrained=pretrained, **kwargs)


@register_detector
def retinanet_eca_resnet101_fpn(*, pretrained: bool = False, **kwargs: Any) -> RetinaNet:
    """RetinaNet + FPN on ECA-ResNet-101; the release's kernel code ``k3357``.

    Args: as :func:`retinanet_eca_resnet50_fpn`.
    """
    return build_retinanet("retinanet_eca_resnet101_fpn", "eca_resnet101", "k3357", pretrained=pretrained, **kwargs)
