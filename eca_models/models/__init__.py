"""Model families. Importing this registers every ECA model with timm."""

from ._builder import describe_state_dict
from .eca_mobilenetv2 import EcaInvertedResidual, EcaMobileNetV2
from .eca_resnet import EcaBasicBlock, EcaBottleneck, EcaResNet

__all__ = [
    "EcaBasicBlock",
    "EcaBottleneck",
    "EcaInvertedResidual",
    "EcaMobileNetV2",
    "EcaResNet",
    "describe_state_dict",
]
