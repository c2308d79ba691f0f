"""Efficient Channel Attention (ECA) layer.

Paper: `ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks`
    - https://arxiv.org/abs/1910.03151 (Wang et al., CVPR 2020)

The layer pools each channel to one value, runs a 1D convolution of size ``k`` across the
channel axis (no bias, zero padding), and scales the input by the sigmoid of the result.
Unlike timm's ``EcaModule`` the kernel size is taken as given (``k = 1`` is legal, and the
released MobileNetV2 uses it) and the adaptive rule is only clamped when asked.
"""

import math
from typing import Optional

import torch
from torch import nn

from ..errors import UsageError

__all__ = ["EcaLayer", "adaptive_kernel_size"]


def adaptive_kernel_size(channels: int, gamma: float = 2.0, beta: float = 1.0, min_size: int = 1) -> int:
    """Kernel size from the channel count, paper eq. 12: ``k = |log2(C) / gamma + beta / gamma|_odd``.

    Args:
        channels: Number of channels ``C`` the layer attends over.
        gamma: The paper's ``gamma`` (2 in every released model).
        beta: The paper's ``b`` (1 in every released model).
        min_size: Lower clamp on the result; 1 means no clamp (timm's EcaModule uses 3).

    Returns:
        The odd kernel size.
    """
    if channels < 1:
        raise UsageError(f"channels={channels!r}: expected a whole number of at least 1")
    t = int(abs((math.log2(channels) + beta) / gamma))
    k = t if t % 2 else t + 1
    return max(k, min_size)


class EcaLayer(nn.Module):
    """Efficient Channel Attention: global average pool, 1D conv across channels, sigmoid gate.

    The gate is computed by `gate`, so a block can fold the multiply into its residual add
    (``shortcut + x * gate``) and read the block output only once.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: Optional[int] = None,
        gamma: float = 2.0,
        beta: float = 1.0,
        min_kernel_size: int = 1,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        """
        Args:
            channels: Number of input channels.
            kernel_size: Odd size >= 1 of the cross-channel convolution; None picks it from
                ``channels`` with `adaptive_kernel_size`.
            gamma: ``gamma`` of the adaptive rule (unused when ``kernel_size`` is given).
            beta: ``b`` of the adaptive rule (unused when ``kernel_size`` is given).
            min_kernel_size: Lower clamp of the adaptive rule (unused when ``kernel_size`` is given).
            device: Device of the parameters.
            dtype: Data type of the parameters.
        """
        super().__init__()
        if kernel_size is None:
            kernel_size = adaptive_kernel_size(channels, gamma, beta, min_kernel_size)
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise UsageError(f"kernel_size={kernel_size!r}: an ECA kernel size is odd and at least 1")
        self.channels = channels
        self.kernel_size = kernel_size
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Channel weights in (0, 1) for ``x`` of shape (N, C, H, W), shaped (N, C, 1, 1)."""
        return self.gate_from_pooled(x.mean(dim=(2, 3)))

    def gate_from_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """Channel weights from the per-channel means ``pooled`` (N, C), shaped (N, C, 1, 1)."""
        return self.conv(pooled.unsqueeze(1)).sigmoid()[:, 0, :, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
