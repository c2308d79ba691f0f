"""ECA in your own network: `add_eca` puts the paper's layer where the paper puts it, in a built timm or
torchvision CNN, and `state_dict_in_order` carries a released checkpoint over where the parameter names differ.

Where the layer goes (Wang et al., CVPR 2020, Fig. 2 and Sec. 4.1): at the end of every residual branch, after its
last normalisation and before the addition, in ResNet-style blocks (ResNet, ResNeXt, Wide ResNet), RegNet's and
timm's ByobNet blocks, and in MobileNetV2's inverted residuals. In blocks that already hold a squeeze-and-excitation layer (SE-ResNet, RegNetY,
MobileNetV3, EfficientNet), ``where="replace-se"`` puts ECA in its place, over the same channels.
"""

from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import timm
import torch
from timm.layers import CecaModule, EcaModule
from timm.models import register_model
from timm.models.regnet import Bottleneck as TimmRegNetBottleneck
from torch import nn
from torchvision.models.mobilenetv2 import InvertedResidual as TorchvisionInvertedResidual
from torchvision.models.regnet import ResBottleneckBlock as TorchvisionResBottleneck

from .errors import UsageError
from .layers import ADAPTIVE, EcaLayer, KernelSizes, format_kernel_code, parse_kernel_code
from .models.eca_mobilenetv2 import WIDE_CHANNELS
from .models.eca_resnet import ECA_BLOCKS
from .weights import load_pretrained_weights

__all__ = ["SUPPORTED", "WHERE", "add_eca", "state_dict_in_order", "with_eca"]

WHERE = ("paper", "replace-se")
SUPPORTED = (
    "residual blocks of ResNet, ResNeXt, Wide ResNet and RegNet and MobileNetV2's inverted residuals (timm and "
    "torchvision), timm's ByobNet blocks; with where='replace-se', blocks holding a squeeze-and-excitation layer "
    "(SE-ResNet, RegNetY, MobileNetV3, EfficientNet, ...)"
)
# timm's inverted residuals (its efficientnet builder's blocks, found by name: timm does not export the classes)
# and the norm each ends in
_TIMM_INVERTED = {"InvertedResidual": "bn3", "DepthwiseSeparableConv": "bn2"}
_SE_NAMES = ("SqueezeExcitation", "SqueezeExcite", "SEModule", "EffectiveSEModule")  # torchvision's and timm's
_ECA_LAYERS = (EcaLayer, EcaModule, CecaModule)  # the package's and timm's (its ecaresnet*, eca_* ByobNets)


def add_eca(model: nn.Module, kernel_sizes: KernelSizes = ADAPTIVE, *, where: str = "paper") -> nn.Module:
    """Put ECA layers into ``model`` (in place) where the paper puts them, and return it.

    Example:
        ```python
        model = eca_models.add_eca(timm.create_model("resnet50", pretrained=True), "k3557")
        model.eca_insertion  # {'where': 'paper', 'kernel_code': 'k3557', 'layers': 16}
        ```

    Args:
        model: A built CNN; its plain residual blocks become ECA blocks (the package's own, with their fast
            path, for ResNet blocks; the plain layer at the end of the branch in RegNet and ByobNet blocks), its
            other parameters stay as they were.
        kernel_sizes: ``'adaptive'`` (every layer's size from its channels, paper eq. 12, unclamped), a kernel code
            (``'k3557'``: one size per ResNet stage; ``'k13'``: MobileNetV2 blocks below 96 channels, then from 96 on;
            RegNet, ByobNet: one size per stage, the stages told apart by width) or one size per stage as a tuple.
            With ``replace-se``: ``'adaptive'`` or a single size.
        where: ``'paper'``, or ``'replace-se'`` to swap every squeeze-and-excitation layer for ECA.

    Returns:
        ``model``, with ``model.eca_insertion`` saying what was done (``where``, ``kernel_code``, ``layers``: how
        many ECA layers went in, ``base``: the timm architecture it was, if any) and ``model.kernel_code``.

    Raises:
        UsageError: An unknown ``where`` or kernel code; a model that holds ECA already; blocks that already hold
            SE or another attention layer (with ``'paper'``); a model with no block it knows (the line names the
            classes it found and the families it supports).
    """
    if where not in WHERE:
        raise UsageError(f"where={where!r}: choose one of {', '.join(WHERE)}")
    _refuse_eca(model)
    if where == "replace-se":
        sizes = ADAPTIVE if kernel_sizes == ADAPTIVE else parse_kernel_code(kernel_sizes, num_stages=1)
        layers = _replace_se(model, None if sizes == ADAPTIVE else sizes[0])
    else:
        residual = [(n, m) for n, m in model.named_modules() if type(m) in ECA_BLOCKS]
        inverted = [(n, m) for n, m in model.named_modules() if _is_inverted(m)]
        _refuse_se(model)
        _refuse_attention(model, residual)
        ends = [(m, *end) for m in model.modules() if (end := _branch_end(m)) is not None]
        if ends and not residual:
            return _finish(model, where, _branch_ends(ends, kernel_sizes), len(ends))
        layers = len(residual) + len(inverted)  # the kernel code is read against the blocks found, if any
        sizes = parse_kernel_code(kernel_sizes, num_stages=4 if residual else 2) if layers else None
        kernels = [None if sizes == ADAPTIVE else sizes[_stage(name)] for name, _ in residual]  # all checked first
        for (_, block), kernel in zip(residual, kernels):
            block.__class__ = ECA_BLOCKS[type(block)]
            block.add_eca(kernel)
        for _, block in inverted:
            _inverted(block, sizes)
    if not layers:
        found = sorted({type(m).__name__ for m in model.modules() if list(m.children())})
        raise UsageError(
            f"add_eca found no block it knows in {type(model).__name__} (its modules: {', '.join(found[:12])}); it "
            f"supports {SUPPORTED}; elsewhere place eca_models.layers.EcaLayer by hand (docs: ECA in your network)"
        )
    return _finish(model, where, sizes, layers)


def _finish(model: nn.Module, where: str, sizes: Any, layers: int) -> nn.Module:
    model.kernel_code = format_kernel_code(sizes)
    base = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    model.eca_insertion = {"where": where, "kernel_code": model.kernel_code, "layers": layers, "base": base}
    return model


@register_model
def with_eca(
    pretrained: bool = False,
    base: str = "resnet50",
    kernel_sizes: KernelSizes = ADAPTIVE,
    where: str = "paper",
    **kwargs,
) -> nn.Module:
    """timm's ``base`` model with `add_eca`: the architecture a folder fine-tuned with ``add_eca`` names in its
    ``config.json``, so that ``timm.create_model('local-dir:RUN')`` and `eca_models.load` rebuild it.

    Args:
        pretrained: From a model folder (``local-dir:``): its weights; else ``base``'s pretrained weights, the ECA
            layers new.
        base: A timm model name.
        kernel_sizes: As `add_eca` takes them.
        where: As `add_eca` takes it.
        **kwargs: ``timm.create_model`` arguments for ``base``.
    """
    cfg = kwargs.pop("pretrained_cfg", None)
    cfg = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg or {})
    for key in ("pretrained_cfg_overlay", "pretrained_model_args", "cache_dir"):
        kwargs.pop(key, None)
    from_folder = pretrained and bool(cfg.get("file"))
    model = add_eca(
        timm.create_model(base, pretrained=pretrained and not from_folder, **kwargs), kernel_sizes, where=where
    )
    model.pretrained_cfg = model.default_cfg = {**model.pretrained_cfg, **cfg, "architecture": "with_eca"}
    if from_folder:  # the package's reader: model.safetensors only (timm's may pick another file of the folder)
        model.load_state_dict(load_pretrained_weights(cfg))
    return model


def _stage(name: str) -> int:
    """The ResNet stage (0-3) of a block named ``layer2.0`` (timm's and torchvision's names)."""
    first = name.split(".")[0]
    if not (first.startswith("layer") and first[5:].isdigit() and 1 <= int(first[5:]) <= 4):
        raise UsageError(f"add_eca: block {name} is not in a stage layer1 ... layer4; pass kernel_sizes='adaptive'")
    return int(first[5:]) - 1


def _is_inverted(module: nn.Module) -> bool:
    kind = type(module)
    return kind is TorchvisionInvertedResidual or (
        kind.__name__ in _TIMM_INVERTED and kind.__module__.startswith("timm.")
    )


def _inverted(block: nn.Module, sizes: Any) -> None:
    """ECA after the block's last normalisation, where the released ECA-MobileNetV2 has it."""
    if isinstance(block, TorchvisionInvertedResidual):
        norm, channels = None, block.out_channels
    else:
        norm = _TIMM_INVERTED[type(block).__name__]
        channels = getattr(block, norm).num_features
    kernel = None if sizes == ADAPTIVE else sizes[int(channels >= WIDE_CHANNELS)]
    eca = EcaLayer(channels, kernel, device=_device(block), dtype=_dtype(block))
    if norm is None:
        block.conv.append(eca)
    else:
        setattr(block, norm, nn.Sequential(getattr(block, norm), eca))


def _branch_end(block: nn.Module) -> Optional[Tuple[int, Callable[[nn.Module], None]]]:
    """For a residual block whose branch ends in a slot the layer can take, after its last normalisation and before
    the addition: the channels there and how to put the layer in. timm's RegNet blocks: the last norm's activation
    (an identity there); timm's ByobNet blocks: their ``attn_last``; torchvision's RegNet blocks: the end of their
    branch ``f``. None for any other module."""
    kind = type(block)
    if kind is TimmRegNetBottleneck and isinstance(getattr(block.conv3.bn, "act", None), nn.Identity):
        return block.conv3.bn.num_features, lambda eca: setattr(block.conv3.bn, "act", eca)
    if kind.__module__ == "timm.models.byobnet" and isinstance(getattr(block, "attn_last", None), nn.Identity):
        convs = [m for name, child in block.named_children() if name != "shortcut" for m in child.modules()]
        return [m for m in convs if isinstance(m, nn.Conv2d)][-1].out_channels, partial(setattr, block, "attn_last")
    if kind is TorchvisionResBottleneck:
        return block.f.c[0].out_channels, partial(block.f.add_module, "eca")
    return None


def _branch_ends(ends: List[Tuple[nn.Module, int, Callable]], kernel_sizes: KernelSizes) -> Any:
    """An ECA layer at each branch end; a kernel code has one size per stage, the stages told apart by width (these
    families widen every stage). Returns the sizes as parsed."""
    widths = sorted({channels for _, channels, _ in ends})
    sizes = parse_kernel_code(kernel_sizes, num_stages=len(widths))
    for block, channels, put in ends:
        kernel = None if sizes == ADAPTIVE else sizes[widths.index(channels)]
        put(EcaLayer(channels, kernel, device=_device(block), dtype=_dtype(block)))
    return sizes


def _refuse_se(model: nn.Module) -> None:
    """A network whose blocks hold SE takes ECA in its place (``replace-se``), not beside it."""
    found = [name for name, m in model.named_modules() if type(m).__name__ in _SE_NAMES]
    if found:
        raise UsageError(
            f"{type(model).__name__} already holds {len(found)} squeeze-and-excitation layers ({found[0]}, ...): pass "
            "where='replace-se' to put ECA in their place"
        )


def _refuse_eca(model: nn.Module) -> None:
    """A network that holds ECA already (the package's, or timm's in its ``ecaresnet*`` and ``eca_*`` models) takes
    no more: a second layer, or one in place of a trained one, is not the paper's network."""
    found = [name for name, m in model.named_modules() if isinstance(m, _ECA_LAYERS)]
    if found:
        raise UsageError(
            f"{type(model).__name__} already holds {len(found)} ECA layers ({found[0]}, ...): add_eca puts ECA into "
            "networks without it"
        )


def _refuse_attention(model: nn.Module, residual: List[Tuple[str, nn.Module]]) -> None:
    """Blocks built with another attention layer keep it (timm's ResNet blocks' ``se`` slot, its ByobNet blocks'
    ``attn``: CBAM, global context, ...): the ECA block has no slot for it, and ECA beside it is not the paper's."""
    held = [(f"{name}.se", m.se) for name, m in residual if getattr(m, "se", None) is not None]
    held += [
        (f"{name}.attn", m.attn)
        for name, m in model.named_modules()
        if type(m).__module__ == "timm.models.byobnet"
        and not isinstance(getattr(m, "attn", nn.Identity()), nn.Identity)
    ]
    if held:
        raise UsageError(
            f"{len(held)} blocks hold {type(held[0][1]).__name__} attention ({held[0][0]}, ...), which ECA would drop "
            "or sit beside: build the model without attn_layer, or place eca_models.layers.EcaLayer by hand"
        )


def _replace_se(model: nn.Module, kernel: Optional[int]) -> int:
    """Every SE layer (torchvision's and timm's) swapped for ECA over its input channels."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child).__name__ in _SE_NAMES:
                channels = next(m for m in child.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
                channels = channels.in_channels if isinstance(channels, nn.Conv2d) else channels.in_features
                setattr(parent, name, EcaLayer(channels, kernel, device=_device(child), dtype=_dtype(child)))
                swapped += 1
    return swapped


def _device(module: nn.Module) -> Optional[torch.device]:
    return next((p.device for p in module.parameters()), None)


def _dtype(module: nn.Module) -> Optional[torch.dtype]:
    return next((p.dtype for p in module.parameters()), None)


def state_dict_in_order(state_dict: Mapping[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state_dict`` under ``model``'s parameter and buffer names, matched in order: the key map between two
    builds of one architecture whose names differ (the released ECA-MobileNetV2, in torchvision's names, and timm's
    ``mobilenetv2_100`` with `add_eca`). Each pair must have the same shape. A file without BatchNorm's step counters
    (saved before PyTorch 0.4.1) is matched without them.

    Raises:
        UsageError: Another number of tensors, or a pair of other shapes (named).
    """
    counter = "num_batches_tracked"  # BatchNorm's step counter: where a file has none, BatchNorm fills it in
    counted = any(k.endswith(counter) for k in state_dict)
    target = {k: v for k, v in model.state_dict().items() if counted or not k.endswith(counter)}
    if len(target) != len(state_dict):
        raise UsageError(f"the checkpoint has {len(state_dict)} tensors, the model {len(target)}: not one architecture")
    mapped = {}
    for (name, tensor), (own, expected) in zip(state_dict.items(), target.items()):
        if tensor.shape != expected.shape:
            raise UsageError(f"{name} {tuple(tensor.shape)} does not fit {own} {tuple(expected.shape)}")
        mapped[own] = tensor
    return mapped
