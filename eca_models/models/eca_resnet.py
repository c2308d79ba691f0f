"""ECA-ResNet-18/34/50/101/152.

Paper: `ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks`
    - https://arxiv.org/abs/1910.03151 (Wang et al., CVPR 2020)

torchvision's ResNet ("v1.5": stride on the 3x3 conv, 7x7 stem, max pool) with an ECA layer after
the last BN of every block, before the residual add. One kernel size per stage, given by the
kernel code (``k3557``: layer1=3, layer2=5, layer3=5, layer4=7). Built on timm's ``ResNet``, so
the whole timm model API comes with it; parameter names are the authors' (``layer1.0.eca.conv``).
"""

import functools
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import torch
from timm.layers import is_exportable, is_scriptable
from timm.models import register_model, register_notrace_function
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn
from torchvision.models import resnet as torchvision_resnet

from ..layers import (
    EcaLayer,
    KernelSizes,
    bn_state,
    eca_block_end,
    format_kernel_code,
    parse_kernel_code,
    writing_blocked_onnx,
)
from ..layers.eca_residual import has_hooks, pooled_before_conv3
from ._builder import build_eca_model, checkpoint_filter, make_default_cfgs

__all__ = [
    "ECA_BLOCKS",
    "EcaBasicBlock",
    "EcaBottleneck",
    "EcaResNet",
    "EcaTorchvisionBasicBlock",
    "EcaTorchvisionBottleneck",
]

# a leaf of every torch.fx trace: plain symbolic_trace (torch.fx.wrap patches this module's global while
# tracing) and timm's and torchvision's feature extractors alike
torch.fx.wrap("eca_block_end")
register_notrace_function(eca_block_end)


class _EcaResidual:
    """The end of an ECA block, ``act(shortcut + eca(bn(z)))``: by `eca_block_end`
    (the cheapest exact path, chosen when it runs) where the block is ``fused``, else in plain operations."""

    def _init_eca(self, last_conv: nn.Conv2d, kernel_size: Optional[int], eca_args: Optional[Dict[str, Any]]) -> None:
        """The ECA layer over ``last_conv``'s outputs (any norm layer may follow it, FrozenBatchNorm2d too)."""
        dd = {"device": last_conv.weight.device, "dtype": last_conv.weight.dtype}
        self.eca = EcaLayer(last_conv.out_channels, kernel_size, **(eca_args or {}), **dd)
        # the fused autograd functions cannot be exported or scripted: timm's exportable and scriptable flags turn them off
        self.fused = not (is_exportable() or is_scriptable())
        c3, bn3 = getattr(self, "conv3", None), getattr(self, "bn3", None)
        # In inference, mean(bn3(conv3(h))) = bn3(W3 @ mean(h)) exactly: conv3 is a 1x1 linear map and an eval-mode
        # BatchNorm is affine. Pooling h (a quarter of the channels) instead of the block output makes ECA's pool cheap.
        self.pool_before_conv3 = (
            c3 is not None and c3.kernel_size == (1, 1) and c3.stride == (1, 1) and c3.groups == 1
            and c3.bias is None and type(bn3) is nn.BatchNorm2d and bn3.track_running_stats and bn3.affine
        )  # fmt: skip

    def add_eca(self, kernel_size: Optional[int], eca_args: Optional[Dict[str, Any]] = None) -> None:
        """Make this block, built as its plain parent class, the ECA block (what `eca_models.add_eca` does)."""
        self.drop_path = getattr(self, "drop_path", None)
        if hasattr(self, "se"):
            del self.se
        self._init_eca(getattr(self, "conv3", None) or self.conv2, kernel_size, eca_args)

    def _end(self, z: torch.Tensor, shortcut: torch.Tensor, bn: nn.Module, h: Optional[torch.Tensor] = None):
        """``shortcut + eca(bn(z))``; ``h`` is conv3's input, for the bottleneck's cheaper pooling in inference.

        What is decided here depends on the modules alone (fixed in a torch.fx trace); what depends on the
        tensors is decided inside ``eca_block_end``, a leaf of the trace.
        """
        eca = self.eca
        if writing_blocked_onnx() and type(eca) is EcaLayer and self.drop_path is None and not has_hooks(eca):
            return self._blocked_onnx_end(z, shortcut, bn, h)
        plain = not self.fused or self.drop_path is not None or type(eca) is not EcaLayer
        if plain or has_hooks(eca) or has_hooks(eca.conv):  # hooks (e.g. capture_attention) need the calls
            x = eca(bn(z))
            return (x if self.drop_path is None else self.drop_path(x)) + shortcut
        state = bn_state(bn)
        if state is None:
            return eca_block_end(bn(z), shortcut, eca.conv.weight)
        conv3 = (h, self.conv3.weight) if h is not None and self.pool_before_conv3 else None
        return eca_block_end(z, shortcut, eca.conv.weight, state, conv3)

    def _blocked_onnx_end(self, z: torch.Tensor, shortcut: torch.Tensor, bn: nn.Module, h: Optional[torch.Tensor]):
        """The block end as ONNX Runtime runs it fastest: the gate at full size (`EcaLayer.full_gate`), pooled from
        conv3's input where the bottleneck allows it (a quarter of the channels, read in the blocked layout)."""
        x, state = bn(z), bn_state(bn)
        pooled = None
        if h is not None and self.pool_before_conv3 and state is not None and not state.training:
            pooled = pooled_before_conv3(h, self.conv3.weight, state)
        return x * self.eca.full_gate(x.mean(dim=(2, 3)) if pooled is None else pooled, x.shape) + shortcut


class EcaBasicBlock(_EcaResidual, BasicBlock):
    """timm's BasicBlock with ECA after ``bn2``; the gate's multiply rides on the residual add."""

    def __init__(
        self, *args: Any, eca_kernel_size: int | None = None, eca_args: Dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """
        Args:
            *args: Positional arguments of timm's ``BasicBlock``.
            eca_kernel_size: The ECA kernel size; None picks it from the channel count.
            eca_args: Extra arguments of `EcaLayer` (the adaptive rule's gamma, beta, clamp).
            **kwargs: Keyword arguments of timm's ``BasicBlock`` (no ``attn_layer``).
        """
        super().__init__(*args, **kwargs)
        del self.se
        self._init_eca(self.conv2, eca_kernel_size, eca_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.drop_block(x)
        x = self.act1(x)
        x = self.aa(x)
        x = self.conv2(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if torch.jit.is_scripting():
            x = self.eca(self.bn2(x))
            return self.act2((x if self.drop_path is None else self.drop_path(x)) + shortcut)
        else:
            return self.act2(self._end(x, shortcut, self.bn2))


class EcaBottleneck(_EcaResidual, Bottleneck):
    """timm's Bottleneck with ECA after ``bn3``; the gate's multiply rides on the residual add."""

    def __init__(
        self, *args: Any, eca_kernel_size: int | None = None, eca_args: Dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """
        Args:
            *args: Positional arguments of timm's ``Bottleneck``.
            eca_kernel_size: The ECA kernel size; None picks it from the channel count.
            eca_args: Extra arguments of `EcaLayer` (the adaptive rule's gamma, beta, clamp).
            **kwargs: Keyword arguments of timm's ``Bottleneck`` (no ``attn_layer``).
        """
        super().__init__(*args, **kwargs)
        del self.se
        self._init_eca(self.conv3, eca_kernel_size, eca_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        x = self.drop_block(x)
        x = self.act2(x)
        h = self.aa(x)
        x = self.conv3(h)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        if torch.jit.is_scripting():
            x = self.eca(self.bn3(x))
            return self.act3((x if self.drop_path is None else self.drop_path(x)) + shortcut)
        else:
            return self.act3(self._end(x, shortcut, self.bn3, h))


class EcaTorchvisionBasicBlock(_EcaResidual, torchvision_resnet.BasicBlock):
    """torchvision's BasicBlock with ECA after ``bn2`` (`eca_models.add_eca` turns its blocks into these)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.relu(self.bn1(self.conv1(x))))
        if torch.jit.is_scripting():
            return self.relu(self.eca(self.bn2(out)) + identity)
        else:
            return self.relu(self._end(out, identity, self.bn2))


class EcaTorchvisionBottleneck(_EcaResidual, torchvision_resnet.Bottleneck):
    """torchvision's Bottleneck with ECA after ``bn3`` (`eca_models.add_eca` turns its blocks into these)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))
        out = self.conv3(h)
        if torch.jit.is_scripting():
            return self.relu(self.eca(self.bn3(out)) + identity)
        else:
            return self.relu(self._end(out, identity, self.bn3, h))


# the ECA block of each plain residual block, timm's and torchvision's
ECA_BLOCKS: Dict[type, type] = {
    BasicBlock: EcaBasicBlock,
    Bottleneck: EcaBottleneck,
    torchvision_resnet.BasicBlock: EcaTorchvisionBasicBlock,
    torchvision_resnet.Bottleneck: EcaTorchvisionBottleneck,
}


def _stage_block(
    block: Type[BasicBlock], kernel_size: int | None, eca_args: Dict[str, Any]
) -> Callable[..., BasicBlock]:
    """A block constructor bound to one stage's ECA kernel size, shaped as timm's make_blocks expects."""
    fn = functools.partial(block, eca_kernel_size=kernel_size, eca_args=eca_args)
    fn.expansion = block.expansion  # make_blocks reads the channel expansion off the constructor
    return fn


class EcaResNet(ResNet):
    """ECA-ResNet: timm's ResNet built from ECA blocks, one ECA kernel size per stage."""

    def __init__(
        self,
        block: Type[BasicBlock],
        layers: Tuple[int, ...],
        kernel_sizes: KernelSizes = "k3557",
        adaptive_gamma: float = 2.0,
        adaptive_beta: float = 1.0,
        adaptive_min_size: int = 1,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            block: ``EcaBasicBlock`` (ResNet-18/34) or ``EcaBottleneck`` (ResNet-50/101/152).
            layers: Number of blocks in each of the four stages.
            kernel_sizes: Kernel code: ``'k3557'``, ``'3557'``, ``(3, 5, 5, 7)`` or ``'adaptive'``.
            adaptive_gamma: ``gamma`` of the adaptive rule, used with ``'adaptive'``.
            adaptive_beta: ``b`` of the adaptive rule, used with ``'adaptive'``.
            adaptive_min_size: Lower clamp of the adaptive rule (1: none; timm's EcaModule uses 3).
            **kwargs: Arguments of timm's ``ResNet`` (num_classes, in_chans, drop_rate,
                drop_path_rate, output_stride, global_pool, ...).
        """
        sizes = parse_kernel_code(kernel_sizes, num_stages=len(layers))
        per_stage = [None] * len(layers) if sizes == "adaptive" else list(sizes)
        eca_args = dict(gamma=adaptive_gamma, beta=adaptive_beta, min_kernel_size=adaptive_min_size)
        blocks = tuple(_stage_block(block, k, eca_args) for k in per_stage)
        super().__init__(block=blocks, layers=layers, **kwargs)
        self.kernel_sizes = tuple(getattr(self, f"layer{i + 1}")[0].eca.kernel_size for i in range(len(layers)))
        self.kernel_code = format_kernel_code(sizes)

    @torch.jit.ignore
    def eca_kernel_groups(self) -> Dict[str, List[str]]:
        """The ECA weight names of each stage (``layer1`` ...): the layers one kernel-code digit sets."""
        groups: Dict[str, List[str]] = {}
        for name, module in self.named_modules():
            if isinstance(module, EcaLayer):
                groups.setdefault(name.split(".", 1)[0], []).append(f"{name}.conv.weight")
        return groups


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: EcaResNet) -> Dict[str, torch.Tensor]:
    """Accept the authors' ``.pth.tar`` dict (``state_dict`` key, ``module.`` prefix) or a plain state dict."""
    return checkpoint_filter(state_dict, model)


def _create_eca_resnet(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    return build_eca_model(EcaResNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "conv1",
        "classifier": "fc",
        **kwargs,
    }


default_cfgs = make_default_cfgs(_cfg, family="eca_resnet")


@register_model
def eca_resnet18(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-18, released kernel code k3577."""
    model_args = dict(block=EcaBasicBlock, layers=(2, 2, 2, 2), kernel_sizes="k3577")
    return _create_eca_resnet("eca_resnet18", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet34(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-34, released kernel code k3357."""
    model_args = dict(block=EcaBasicBlock, layers=(3, 4, 6, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet34", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet50(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-50, released kernel code k3557."""
    model_args = dict(block=EcaBottleneck, layers=(3, 4, 6, 3), kernel_sizes="k3557")
    return _create_eca_resnet("eca_resnet50", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet101(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-101, released kernel code k3357."""
    model_args = dict(block=EcaBottleneck, layers=(3, 4, 23, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet101", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet152(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-152, released kernel code k3357."""
    model_args = dict(block=EcaBottleneck, layers=(3, 8, 36, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet152", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet18_k3577(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-18 k3577: the authors' released ImageNet checkpoint."""
    model_args = dict(block=EcaBasicBlock, layers=(2, 2, 2, 2), kernel_sizes="k3577")
    return _create_eca_resnet("eca_resnet18_k3577", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet34_k3357(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-34 k3357: the authors' released ImageNet checkpoint."""
    model_args = dict(block=EcaBasicBlock, layers=(3, 4, 6, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet34_k3357", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet50_k3557(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-50 k3557: the authors' released ImageNet checkpoint."""
    model_args = dict(block=EcaBottleneck, layers=(3, 4, 6, 3), kernel_sizes="k3557")
    return _create_eca_resnet("eca_resnet50_k3557", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet101_k3357(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-101 k3357: the authors' released ImageNet checkpoint."""
    model_args = dict(block=EcaBottleneck, layers=(3, 4, 23, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet101_k3357", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_resnet152_k3357(pretrained: bool = False, **kwargs: Any) -> EcaResNet:
    """ECA-ResNet-152 k3357: the authors' released ImageNet checkpoint."""
    model_args = dict(block=EcaBottleneck, layers=(3, 8, 36, 3), kernel_sizes="k3357")
    return _create_eca_resnet("eca_resnet152_k3357", pretrained, **dict(model_args, **kwargs))
