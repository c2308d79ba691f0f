"""Efficient Channel Attention (ECA) layer.

Paper: `ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks`
    - https://arxiv.org/abs/1910.03151 (Wang et al., CVPR 2020)

The layer pools each channel to one value, runs a 1D convolution of size ``k`` across the
channel axis (no bias, zero padding), and scales the input by the sigmoid of the result.
Unlike timm's ``EcaModule`` the kernel size is taken as given (``k = 1`` is legal, and the
released MobileNetV2 uses it) and the adaptive rule is only clamped when asked.
"""

import math
from contextlib import contextmanager
from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError

__all__ = ["ONNX_FORMS", "EcaLayer", "adaptive_kernel_size", "check_onnx_form", "onnx_form", "writing_blocked_onnx"]

# How the ECA layers of residual blocks are written into an ONNX file: "blocked" multiplies by a gate of the block
# output's full size, so ONNX Runtime keeps the block in its blocked (NCHWc) layout; "plain" multiplies by the
# (N, C, 1, 1) gate, the graph as PyTorch runs it, which makes ONNX Runtime reorder the block output to NCHW and
# back around the multiply. Elsewhere (MobileNetV2's blocks) the layer is plain in both: there the blocked form
# measured slower, in ONNX Runtime and in OpenVINO (docs/performance.md).
ONNX_FORMS = ("blocked", "plain")
_onnx_form = ["plain"]


def check_onnx_form(form: str) -> str:
    """``form`` where it is one of `ONNX_FORMS`, else a one-line `UsageError` naming them."""
    if form not in ONNX_FORMS:
        raise UsageError(f"onnx_form={form!r}: choose one of {', '.join(ONNX_FORMS)}")
    return form


@contextmanager
def onnx_form(form: str) -> Iterator[None]:
    """Write ECA layers in ``form`` (one of `ONNX_FORMS`) while ONNX export runs inside this context; outside,
    and for any other tracer, the layer is the plain one."""
    previous, _onnx_form[0] = _onnx_form[0], check_onnx_form(form)
    try:
        yield
    finally:
        _onnx_form[0] = previous


def writing_blocked_onnx() -> bool:
    """Whether an ONNX exporter is recording the model now, asked for the blocked form."""
    return _onnx_form[0] == "blocked" and torch.onnx.is_in_onnx_export()


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

    def full_gate(self, pooled: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """The gate from the per-channel means ``pooled`` (N, C), repeated to ``size`` (N, C, H, W): the form ONNX
        Runtime multiplies without leaving its blocked layout (it takes element-wise operations in that layout only
        between tensors of one shape, and repeats a (N, C, 1, 1) tensor to full size in it by a nearest Resize with
        fixed scales). The sigmoid rides on a depthwise identity convolution, an operation that hands the gate to
        that layout. Equal to `gate` (within float rounding); the height and width are fixed in the graph."""
        logits = self.conv(pooled.unsqueeze(1))[:, 0, :, None, None]
        identity = logits.new_ones(self.channels, 1, 1, 1)
        gate = F.conv2d(logits, identity, groups=self.channels).sigmoid()
        return F.interpolate(gate, scale_factor=(int(size[2]), int(size[3])), mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}"
