"""Layers: the ECA layer, its fused residual ends, and the kernel-code convention."""

from .eca import EcaLayer, adaptive_kernel_size
from .eca_residual import BnState, bn_state, eca_block_end, gate_from_pooled
from .kernel_codes import ADAPTIVE, KernelSizes, format_kernel_code, parse_kernel_code

__all__ = [
    "ADAPTIVE",
    "KernelSizes",
    "EcaLayer",
    "adaptive_kernel_size",
    "BnState",
    "bn_state",
    "eca_block_end",
    "gate_from_pooled",
    "format_kernel_code",
    "parse_kernel_code",
]
