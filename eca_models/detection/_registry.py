"""The detector registry: builder functions by name, and what every builder does last."""

import functools
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence

from torch import nn

from .labels import LabelMap

__all__ = [
    "finish_detector",
    "get_builder",
    "is_detector",
    "list_detectors",
    "register_detector",
    "resolve_label_map",
    "start_detector_weights",
]

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
    """Add a builder to the registry under its function name; it takes the deprecated argument names too."""

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
    try:
        return _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown detector {name!r}; choose one of: {', '.join(list_detectors())}") from None


def resolve_label_map(
    num_classes: Optional[int], categories: Optional[Sequence[Dict[str, Any]]], background: bool
) -> LabelMap:
    """The label map a builder's ``num_classes`` / ``categories`` ask for (neither: COCO's 80, as released).

    ``num_classes`` is torchvision's (background included for the two-stage detectors); without ``categories`` the
    classes are called ``class_1`` ... with ids 1 ... .
    """
    if categories is not None:
        label_map = LabelMap.from_categories(categories, background)
        if num_classes is not None and num_classes != label_map.num_classes:
            raise ValueError(
                f"num_classes={num_classes} but {len(label_map.names)} categories make a {label_map.num_classes}-way head"
            )
        return label_map
    if num_classes is None:
        return LabelMap.coco(background)
    foreground = num_classes - int(background)
    if foreground < 1:
        raise ValueError(f"num_classes={num_classes} leaves no class" + (" besides background" if background else ""))
    return LabelMap(tuple(range(1, foreground + 1)), tuple(f"class_{i}" for i in range(1, foreground + 1)), background)


def start_detector_weights(
    architecture: str,
    pretrained: bool,
    checkpoint: Optional[str],
    kernel_code: Optional[str],
    release_code: Optional[str],
    num_classes: Optional[int],
    categories: Optional[Sequence[Dict[str, Any]]],
    background: bool,
    trunk_weights: Optional[str] = None,
):
    """What every builder does first: ``(weights or None, kernel code to build with, label map)``.

    The kernel code is the one asked for, else the weights' own (a detector's, or the ImageNet trunk's in
    ``trunk_weights``), else the release's; the classes are the ones asked for (``num_classes`` / ``categories``),
    else the weights' own, else COCO's 80.
    """
    from .weights import load_detector_weights

    weights = load_detector_weights(architecture, pretrained, checkpoint)
    if weights is not None:
        kernel_code = kernel_code or weights.kernel_code
        if categories is None and num_classes is None:
            categories = weights.label_map.to_json()["categories"]
    if kernel_code is None and trunk_weights is not None and weights is None:
        from .backbone import trunk_kernel_code

        kernel_code = trunk_kernel_code(trunk_weights)
    return weights, kernel_code or release_code, resolve_label_map(num_classes, categories, background)


def finish_detector(
    model: nn.Module,
    architecture: str,
    kernel_code: str,
    label_map: LabelMap,
    weights=None,
    legacy_coordinates: Optional[bool] = None,
) -> nn.Module:
    """Load ``weights`` (if any) and attach what predictions and exports need: ``model.label_map`` and
    ``model.detector_cfg``; mmdetection v1's box conventions where the weights were trained with them (or
    ``legacy_coordinates`` says so)."""
    if weights is not None:
        weights.load_into(model)
    model.label_map = label_map
    model.detector_cfg = {
        "architecture": architecture,
        "kernel_code": kernel_code,
        "trunk": architecture.split("_", 1)[1].rsplit("_fpn", 1)[0],
        "min_size": model.transform.min_size[0],
        "max_size": model.transform.max_size,
        "mean": tuple(model.transform.image_mean),
        "std": tuple(model.transform.image_std),
    }
    if legacy_coordinates is None:
        legacy_coordinates = weights is not None and weights.legacy_coordinates
    if legacy_coordinates:
        from .legacy import use_legacy_coordinates

        use_legacy_coordinates(model)
    return model.eval()
