"""eca-models: ECA-Net (Wang et al., CVPR 2020, arXiv:1910.03151) as timm models.

``import eca_models`` registers ``eca_resnet18`` ... ``eca_resnet152``, ``eca_mobilenetv2`` and the
released checkpoints' names (``eca_resnet50_k3557``, ...) with ``timm.create_model``.
"""

import importlib
from typing import Any

from . import models
from .attention import attention_figure, attention_weights, capture_attention
from .errors import EcaModelsError
from .factory import load
from .insertion import add_eca
from .layers import EcaLayer, adaptive_kernel_size, parse_kernel_code
from .models import EcaMobileNetV2, EcaResNet
from .version import __version__
from .weights import WeightsError, download_checkpoints
from .zoo import list_models

MODEL_NAMES = tuple(list_models())  # every name registered with timm by this package

# the jobs, imported on first use: they load torchvision's detection stack, which `import eca_models` does not need
_JOBS = {
    "convert": "conversion",
    "finetune": "training.finetune",
    "predict": "prediction",
    "validate": "evaluation.validate",
}
_MODULES = ("benchmark", "export")  # reached as eca_models.export.export(...), as the README writes them


def __getattr__(name: str) -> Any:
    if name in _JOBS:
        return getattr(importlib.import_module(f".{_JOBS[name]}", __name__), name)
    if name in _MODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "__version__",
    "MODEL_NAMES",
    "EcaModelsError",
    "EcaLayer",
    "EcaMobileNetV2",
    "EcaResNet",
    "WeightsError",
    "add_eca",
    "adaptive_kernel_size",
    "attention_figure",
    "attention_weights",
    "benchmark",
    "capture_attention",
    "convert",
    "download_checkpoints",
    "export",
    "finetune",
    "list_models",
    "load",
    "models",
    "parse_kernel_code",
    "predict",
    "validate",
]
