"""The detector registry: builder functions by name, and what every builder does last."""

from typing import Callable, Dict, List

from torch import nn

from .architectures import get_architecture

__all__ = ["get_builder", "is_detector", "list_detectors", "register_detector"]

_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def register_detector(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Add a builder to the registry under its function name (a row of `architectures`: its facts)."""
    get_architecture(fn.__name__)
    _BUILDERS[fn.__name__] = fn
    return fn


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
