"""The detector registry: builder functions by name, and what every builder does last."""

import functools
import warnings
from typing import Any, Callable, Dict, List

from torch import nn

from .architectures import get_architecture

__all__ = ["current_names", "get_builder", "is_detector", "list_detectors", "register_detector"]

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


# timm's name for kernel codes and torchvision's for a detector's trunk weights and trained stages; the names the
# builders had first still work, with a DeprecationWarning
RENAMED = {
    "kernel_code": "kernel_sizes",
    "trunk_weights": "weights_backbone",
    "trainable_layers": "trainable_backbone_layers",
}


def current_names(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``kwargs`` with the deprecated builder argument names replaced by the current ones (warned once each).

    Raises:
        TypeError: An argument given under both names.
    """
    kwargs = dict(kwargs)
    for old, new in RENAMED.items():
        if old in kwargs:
            if new in kwargs:
                raise TypeError(f"pass {new}= only ({old}= is its deprecated name)")
            warnings.warn(f"{old}= is deprecated; pass {new}=", DeprecationWarning, stacklevel=3)
            kwargs[new] = kwargs.pop(old)
    return kwargs


def register_detector(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a builder to the registry under its function name (a row of :mod:`.architectures`: its facts); it takes
    the deprecated argument names too."""
    get_architecture(fn.__name__)

    @functools.wraps(fn)
    def builder(*args: Any, **kwargs: Any) -> nn.Module:
        return fn(*args, **current_names(kwargs))

    _BUILDERS[fn.__name__] = builder
    return builder


def list_detectors() -> List[str]:
    """The registered detector names, e.g. ``maskrcnn_eca_resnet50_fpn``."""
    return sorted(_BUILDERS)


def is_detector(name: str) -> bool:
    """True for a registered detector name."""
    return name in _BUILDERS


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder called ``name``.

    Raises:
        KeyError: Unknown name; the message lists the known ones.
    """
    get_architecture(name)  # an unknown name: the KeyError listing the known ones
    return _BUILDERS[name]
