"""eca-models: ECA-Net (Wang et al., CVPR 2020, arXiv:1910.03151) as timm models.

``import eca_models`` registers ``eca_resnet18`` ... ``eca_resnet152``, ``eca_mobilenetv2`` and the
released checkpoints' names (``eca_resnet50_k3557``, ...) with ``timm.create_model``.
"""

from . import models
from .attention import attention_weights, capture_attention
from .errors import EcaModelsError
from .factory import load
from .layers import EcaLayer, adaptive_kernel_size, parse_kernel_code
from .models import EcaMobileNetV2, EcaResNet
from .weights import WeightsError
from .zoo import list_models

__version__ = "0.1.0"

MODEL_NAMES = tuple(list_models())  # every name registered with timm by this package

__all__ = [
    "MODEL_NAMES",
    "EcaModelsError",
    "EcaLayer",
    "EcaMobileNetV2",
    "EcaResNet",
    "WeightsError",
    "adaptive_kernel_size",
    "attention_weights",
    "capture_attention",
    "list_models",
    "load",
    "models",
    "parse_kernel_code",
]
