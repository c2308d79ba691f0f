"""ECA-MobileNetV2.

Paper: `ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks`
    - https://arxiv.org/abs/1910.03151 (Wang et al., CVPR 2020)
Backbone: `MobileNetV2: Inverted Residuals and Linear Bottlenecks`
    - https://arxiv.org/abs/1801.04381

torchvision's MobileNetV2 layout (width 1.0, last channel 1280) with an ECA layer appended to
every inverted residual's ``conv`` sequence, after the projection BN and before the residual
add. The two-digit kernel code gives the size for blocks with fewer than 96 output channels,
then for the rest: the released ``k13`` uses k=1 for features.1-10 and k=3 for features.11-17.
"""

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from timm.layers import DropPath, SelectAdaptivePool2d
from timm.models import checkpoint_seq, register_model
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..errors import UsageError
from ..layers import EcaLayer, KernelSizes, format_kernel_code, parse_kernel_code
from ._builder import build_eca_model, checkpoint_filter, make_default_cfgs

__all__ = ["EcaInvertedResidual", "EcaMobileNetV2"]

# t (expansion), c (output channels), n (repeats), s (first stride): torchvision's table
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
WIDE_CHANNELS = 96  # blocks with at least this many output channels take the code's second kernel size


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _take_indices(num_taps: int, indices: Optional[Union[int, List[int]]]) -> Tuple[List[int], int]:
    """Which feature taps ``indices`` asks for, as timm's ``forward_intermediates`` reads it (None: all; an int
    ``n``: the last ``n``; a list: those, negative ones from the end), and the last of them."""
    if indices is None or isinstance(indices, int):
        n = num_taps if indices is None else indices
        if not 0 < n <= num_taps:
            raise ValueError(f"indices={indices}: this model has {num_taps} feature taps, ask for 1 to {num_taps}")
        take = list(range(num_taps - n, num_taps))
    else:
        take = [i + num_taps if i < 0 else i for i in indices]
        if not take or not all(0 <= i < num_taps for i in take):
            raise ValueError(f"indices={list(indices)}: this model's feature taps are 0 to {num_taps - 1}")
    return take, max(take)


class ConvBNReLU(nn.Sequential):
    """Conv2d, BatchNorm2d, ReLU6: keys ``0`` (conv) and ``1`` (bn), as in torchvision."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1
    ) -> None:
        padding = dilation * (kernel_size - 1) // 2
        super().__init__(
            nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, dilation, groups=groups, bias=False),
            nn.BatchNorm2d(out_chs),
            nn.ReLU6(inplace=True),
        )


class EcaInvertedResidual(nn.Module):
    """Inverted residual block whose ``conv`` sequence ends in an ECA layer."""

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int,
        expand_ratio: int,
        eca_kernel_size: Optional[int],
        eca_args: Optional[Dict[str, Any]] = None,
        drop_path_rate: float = 0.0,
        dilation: int = 1,
    ) -> None:
        """
        Args:
            in_chs: Input channels.
            out_chs: Output channels.
            stride: Stride of the depthwise conv (1 or 2).
            expand_ratio: Hidden width as a multiple of ``in_chs``.
            eca_kernel_size: ECA kernel size; None picks it from ``out_chs``.
            eca_args: Extra arguments of `EcaLayer` (the adaptive rule's gamma, beta, clamp).
            drop_path_rate: Stochastic depth on the residual branch.
            dilation: Dilation of the depthwise conv.
        """
        super().__init__()
        self.out_chs = out_chs
        hidden = int(round(in_chs * expand_ratio))
        self.use_res_connect = stride == 1 and in_chs == out_chs
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNReLU(in_chs, hidden, kernel_size=1))
        layers += [
            ConvBNReLU(hidden, hidden, stride=stride, groups=hidden, dilation=dilation),
            nn.Conv2d(hidden, out_chs, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_chs),
            EcaLayer(out_chs, eca_kernel_size, **(eca_args or {})),
        ]
        self.conv = nn.Sequential(*layers)
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_res_connect:
            return x + self.drop_path(self.conv(x))
        return self.conv(x)


def _make_blocks(
    in_chans: int, width_mult: float, sizes: Any, eca_args: Dict[str, Any], drop_path_rate: float, output_stride: int
) -> Tuple[List[nn.Module], List[Dict[str, Any]]]:
    """The stem and the inverted residual blocks of ``INVERTED_RESIDUAL_SETTING`` (ECA kernel sizes by width,
    stochastic depth rising linearly), and timm's feature taps: the last block before each downsample, and the
    last block. As in timm, a block that would take the features past ``output_stride`` keeps stride 1, and the
    depthwise convs after it dilate instead."""
    in_chs = _make_divisible(32 * width_mult)
    blocks: List[nn.Module] = [ConvBNReLU(in_chans, in_chs, stride=2)]
    feature_info = []
    reduction, dilation, num_blocks = 2, 1, sum(n for _, _, n, _ in INVERTED_RESIDUAL_SETTING)
    for t, c, n, s in INVERTED_RESIDUAL_SETTING:
        out_chs = _make_divisible(c * width_mult)
        if s > 1:  # the last block before a downsample is a feature tap
            feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.{len(blocks) - 1}"))
        for i in range(n):
            stride, block_dilation = (s if i == 0 else 1), dilation
            if reduction * stride > output_stride:
                stride, dilation = 1, dilation * stride
            reduction *= stride
            kernel = None if sizes == "adaptive" else sizes[int(out_chs >= WIDE_CHANNELS)]
            dpr = drop_path_rate * (len(blocks) - 1) / (num_blocks - 1)
            blocks.append(EcaInvertedResidual(in_chs, out_chs, stride, t, kernel, eca_args, dpr, block_dilation))
            in_chs = out_chs
    feature_info.append(dict(num_chs=in_chs, reduction=reduction, module=f"features.{len(blocks) - 1}"))
    return blocks, feature_info


class EcaMobileNetV2(nn.Module):
    """ECA-MobileNetV2 with torchvision's parameter names and timm's model API."""

    def __init__(
        self,
        kernel_sizes: KernelSizes = "k13",
        num_classes: int = 1000,
        in_chans: int = 3,
        width_mult: float = 1.0,
        last_channel: int = 1280,
        global_pool: str = "avg",
        drop_rate: float = 0.25,
        drop_path_rate: float = 0.0,
        output_stride: int = 32,
        adaptive_gamma: float = 2.0,
        adaptive_beta: float = 1.0,
        adaptive_min_size: int = 1,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            kernel_sizes: Kernel code: ``'k13'`` (below 96 channels, then from 96 on), ``'13'``,
                ``(1, 3)`` or ``'adaptive'`` (every block's size from its channel count).
            num_classes: Classifier outputs; 0 for none.
            in_chans: Input image channels.
            width_mult: Width multiplier of every layer but the last.
            last_channel: Channels of the final 1x1 conv.
            global_pool: Global pooling type (timm's SelectAdaptivePool2d), '' for none.
            drop_rate: Dropout before the classifier (the authors trained with 0.25).
            drop_path_rate: Stochastic depth, rising linearly to this rate over the residual blocks.
            output_stride: 32, or 16 or 8 for denser features (dilated depthwise convs in the last stages, as timm's
                MobileNetV2 has them).
            adaptive_gamma: ``gamma`` of the adaptive rule, used with ``'adaptive'``.
            adaptive_beta: ``b`` of the adaptive rule, used with ``'adaptive'``.
            adaptive_min_size: Lower clamp of the adaptive rule (1: none).
            device: Device of the parameters and buffers.
            dtype: Data type of the parameters and buffers.
        """
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise UsageError(f"output_stride={output_stride!r}: ECA-MobileNetV2 takes 8, 16 or 32")
        sizes = parse_kernel_code(kernel_sizes, num_stages=2)
        eca_args = dict(gamma=adaptive_gamma, beta=adaptive_beta, min_kernel_size=adaptive_min_size)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.drop_rate = drop_rate
        self.grad_checkpointing = False

        self.num_features = self.head_hidden_size = _make_divisible(last_channel * max(1.0, width_mult))
        blocks = _make_blocks(in_chans, width_mult, sizes, eca_args, drop_path_rate, output_stride)
        self.features = nn.Sequential(*blocks[0], ConvBNReLU(blocks[0][-1].out_chs, self.num_features, kernel_size=1))
        self.feature_info = blocks[1]
        self.kernel_sizes = tuple(m.kernel_size for m in self.modules() if isinstance(m, EcaLayer))
        self.kernel_code = format_kernel_code(sizes)

        self.global_pool = self._pool(global_pool)
        self.classifier = nn.Sequential(nn.Dropout(drop_rate), self._linear(num_classes))
        self.init_weights()
        if device is not None or dtype is not None:
            self.to(device=device, dtype=dtype)

    @staticmethod
    def _pool(pool_type: str) -> SelectAdaptivePool2d:
        """Global pooling, flattened to (N, C); ``''`` keeps the unpooled (N, C, H, W) features, as in timm."""
        return SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))

    def _linear(self, num_classes: int) -> nn.Module:
        in_features = self.num_features * self.global_pool.feat_mult()
        return nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.jit.ignore
    def init_weights(self) -> None:
        """torchvision's initialisation: Kaiming-normal convs, unit BN, N(0, 0.01) classifier."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.jit.ignore
    def eca_kernel_groups(self) -> Dict[str, List[str]]:
        """The ECA weight names each kernel-code digit sets: blocks below 96 channels, then from 96 on."""
        groups: Dict[str, List[str]] = {"below 96 channels": [], "96 channels and more": []}
        for name, module in self.named_modules():
            if isinstance(module, EcaLayer):
                key = "96 channels and more" if module.channels >= WIDE_CHANNELS else "below 96 channels"
                groups[key].append(f"{name}.conv.weight")
        return groups

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, Any]:
        return dict(stem=r"^features\.0\.", blocks=r"^features\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> Any:
        return "classifier.1" if name_only else self.classifier[1]

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        """Replace the classifier for ``num_classes`` outputs (0: none), optionally changing the pooling."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._pool(global_pool)
        weight = next(self.parameters())
        linear = self._linear(num_classes).to(device=weight.device, dtype=weight.dtype)
        self.classifier[1] = linear.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.features, x)
        return self.features(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """The features at the taps of ``feature_info``, as timm's models give them.

        Args:
            x: Input images.
            indices: The last ``n`` taps if an int, all if None, else the taps at these indices.
            norm: Unused (no norm layer follows the taps), as in timm's CNNs.
            stop_early: Run no block after the last tap asked for.
            output_fmt: ``'NCHW'`` only.
            intermediates_only: Return the tapped features alone.

        Returns:
            The tapped features, or ``(final features, tapped features)``.
        """
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt={output_fmt!r}: this model gives 'NCHW' features only")
        take, last = _take_indices(len(self.feature_info), indices)
        taps = [self._tap_block(i) for i in take]
        blocks = (
            self.features if torch.jit.is_scripting() or not stop_early else self.features[: self._tap_block(last) + 1]
        )
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and not torch.jit.is_scripting():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in taps:
                intermediates.append(x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(
        self, indices: Union[int, List[int]] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> List[int]:
        """Remove the blocks after the last tap of ``indices`` (as in `forward_intermediates`) and, as in timm's CNNs,
        the final 1x1 conv and the classifier with them; these stay only where the last tap is the model's last and
        neither ``prune_norm`` nor ``prune_head`` is set (the model is then unchanged). Returns the taps kept."""
        take, last = _take_indices(len(self.feature_info), indices)
        if prune_norm or prune_head or last < len(self.feature_info) - 1:
            self.features = self.features[: self._tap_block(last) + 1]
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
            self.reset_classifier(0, "")
        return take

    def _tap_block(self, index: int) -> int:
        """The position in ``features`` of the ``index``-th feature tap."""
        return int(self.feature_info[index]["module"].split(".")[1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: Dict[str, Any], model: EcaMobileNetV2) -> Dict[str, torch.Tensor]:
    """Accept the authors' ``.pth.tar`` dict (``state_dict`` key, ``module.`` prefix) or a plain state dict."""
    return checkpoint_filter(state_dict, model)


def _create_eca_mobilenetv2(variant: str, pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    feature_cfg = dict(flatten_sequential=True, out_indices=(0, 1, 2, 3, 4))
    return build_eca_model(
        EcaMobileNetV2,
        variant,
        pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=feature_cfg,
        **kwargs,
    )


def _cfg(**kwargs: Any) -> Dict[str, Any]:
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bilinear",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "features.0.0",
        "classifier": "classifier.1",
        **kwargs,
    }


default_cfgs = make_default_cfgs(_cfg, family="eca_mobilenetv2")


@register_model
def eca_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    """ECA-MobileNetV2, released kernel code k13."""
    model_args = dict(kernel_sizes="k13")
    return _create_eca_mobilenetv2("eca_mobilenetv2", pretrained, **dict(model_args, **kwargs))


@register_model
def eca_mobilenetv2_k13(pretrained: bool = False, **kwargs: Any) -> EcaMobileNetV2:
    """ECA-MobileNetV2 k13: the authors' released ImageNet checkpoint."""
    model_args = dict(kernel_sizes="k13")
    return _create_eca_mobilenetv2("eca_mobilenetv2_k13", pretrained, **dict(model_args, **kwargs))
