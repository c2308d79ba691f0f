"""ECA-ResNet trunks with a feature pyramid, as mmdetection v1 built them for the release's detectors.

The trunk is our ECA-ResNet with torchvision's ``FrozenBatchNorm2d`` and the stem and ``layer1`` frozen
(mmdetection's ``norm_eval=True``, ``frozen_stages=1``); torchvision's ``BackboneWithFPN`` wraps it, so
``backbone.body`` has the ``IntermediateLayerGetter`` layout (``conv1``, ``bn1``, ``layer1`` ...) and
``backbone.fpn`` is torchvision's ``FeaturePyramidNetwork``.
"""

from typing import Any, List, Optional, Sequence, Tuple

import timm
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from ..errors import require_whole_number
from ..factory import load
from ..layers.kernel_codes import format_kernel_code, parse_kernel_code, stage_kernel_sizes
from ..weights import WeightsError
from ..weights.loading import read_weights_file, unwrap_checkpoint

__all__ = [
    "FrozenBatchNorm",
    "LastLevelP6P7FromC5",
    "eca_resnet_fpn_backbone",
    "FPN_CHANNELS",
    "check_trainable_layers",
    "freeze_stages",
    "release_param_count",
]

FPN_CHANNELS = 256
_STAGES = ("layer1", "layer2", "layer3", "layer4")
_TRAINABLE = ("layer4", "layer3", "layer2", "layer1", "conv1")  # trainable_backbone_layers counts from the last


class FrozenBatchNorm(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` taking (and dropping) the ``device`` / ``dtype`` that timm passes."""

    def __init__(self, num_features: int, eps: float = 1e-5, device=None, dtype=None) -> None:
        super().__init__(num_features, eps=eps)
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)


class LastLevelP6P7FromC5(LastLevelP6P7):
    """RetinaNet's P6 and P7 as mmdetection v1 made them: P6 a 3x3 stride-2 conv on C5, P7 one on P6, no ReLU
    between them (torchvision's ``LastLevelP6P7`` applies one)."""

    def forward(self, p: List[Tensor], c: List[Tensor], names: List[str]) -> Tuple[List[Tensor], List[str]]:
        p6 = self.p6(c[-1])
        p7 = self.p7(p6)
        return p + [p6, p7], names + ["p6", "p7"]


def eca_resnet_fpn_backbone(
    trunk: str,
    kernel_sizes: Optional[str] = None,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    extra_blocks: Optional[ExtraFPNBlock] = None,
    trainable_backbone_layers: int = 3,
    weights_backbone: Optional[str] = None,
) -> BackboneWithFPN:
    """An ECA-ResNet trunk and a 256-channel FPN over the stages in ``returned_layers``.

    Args:
        trunk: The classification architecture, ``eca_resnet50`` or ``eca_resnet101`` (timm's ``resnet50`` for the
            plain baseline).
        kernel_sizes: ECA kernel sizes per stage, a kernel code (``'k3377'``, ``'k5'``); None: the trunk's default.
        returned_layers: Stages (1-4) fed to the FPN: 1-4 for the two-stage detectors, 2-4 for RetinaNet.
        extra_blocks: The FPN's extra levels; default P6 by max-pooling P5.
        trainable_backbone_layers: Stages trained, counted from ``layer4`` (3: the stem and ``layer1`` frozen).
        weights_backbone: An ImageNet classification checkpoint for the trunk (the authors' ``.pth.tar``, a
            ``model.safetensors`` or a converted folder); None leaves it randomly initialised.
    """
    check_trainable_layers(trainable_backbone_layers)
    kwargs = dict(num_classes=0, global_pool="", norm_layer=FrozenBatchNorm)
    if kernel_sizes is not None:
        kwargs["kernel_sizes"] = kernel_sizes
    if weights_backbone is not None:
        file_code = trunk_kernel_code(weights_backbone)
        if file_code and kernel_sizes and parse_kernel_code(file_code, 4) != parse_kernel_code(kernel_sizes, 4):
            asked = format_kernel_code(parse_kernel_code(kernel_sizes, 4))
            raise WeightsError(
                f"{weights_backbone} is an ECA-ResNet of kernel code {file_code}, not {asked}: leave the kernel code "
                f"out (the file's own is taken) or ask for {file_code}"
            )

        body = load(trunk, checkpoint=weights_backbone, **kwargs)
    else:
        body = timm.create_model(trunk, pretrained=False, **kwargs)
    freeze_stages(body, trainable_backbone_layers)
    stage_channels = [body.feature_info[i + 1]["num_chs"] for i in range(4)]  # feature_info[0] is the stem
    return_layers = {f"layer{k}": str(i) for i, k in enumerate(returned_layers)}
    backbone = BackboneWithFPN(
        body,
        return_layers,
        [stage_channels[k - 1] for k in returned_layers],
        FPN_CHANNELS,
        extra_blocks=extra_blocks if extra_blocks is not None else LastLevelMaxPool(),
    )
    backbone.body.kernel_code = getattr(body, "kernel_code", "none")  # "none": a plain ResNet trunk
    backbone.body.kernel_sizes = getattr(body, "kernel_sizes", ())
    return backbone


def check_trainable_layers(trainable_backbone_layers: Any) -> None:
    """A one-line `UsageError` unless ``trainable_backbone_layers`` is a whole number from 0 to 5."""
    require_whole_number("trainable_backbone_layers", trainable_backbone_layers, 0, len(_TRAINABLE))


def freeze_stages(body: nn.Module, trainable_backbone_layers: int) -> None:
    """Freeze the trunk but its last ``trainable_backbone_layers`` stages, counted from ``layer4`` (5: the stem too)."""
    trainable = _TRAINABLE[:trainable_backbone_layers]
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in trainable):
            parameter.requires_grad_(False)


def trunk_kernel_code(path: str) -> Optional[str]:
    """The kernel code of an ImageNet ECA-ResNet checkpoint, read from its ECA tensors (None where they follow no
    per-stage code, or the file has none: the trunk's loading then says what is wrong)."""
    sizes = stage_kernel_sizes(unwrap_checkpoint(read_weights_file(path)))
    if sorted(sizes) != list(_STAGES) or any(len(v) != 1 for v in sizes.values()):
        return None
    return format_kernel_code([sizes[stage].pop() for stage in _STAGES])


def release_param_count(model: nn.Module) -> int:
    """Parameters as the release counted them: every parameter and frozen BatchNorm affine, less the stem and
    ``layer1`` (mmdetection counted what its ``frozen_stages=1`` left trainable)."""
    skipped = ("backbone.body.conv1.", "backbone.body.bn1.", "backbone.body.layer1.")
    total = 0
    for name, tensor in list(model.named_parameters()) + _frozen_affines(model):
        if not name.startswith(skipped):
            total += tensor.numel()
    return total


def _frozen_affines(model: nn.Module):
    out = []
    for prefix, module in model.named_modules():
        if isinstance(module, FrozenBatchNorm2d):
            out += [(f"{prefix}.weight", module.weight), (f"{prefix}.bias", module.bias)]
    return out
