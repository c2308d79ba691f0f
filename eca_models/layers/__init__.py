"""Layers: the ECA layer, its fused residual ends, and the kernel-code convention."""

from .eca import EcaLayer, adaptive_kernel_size
from .eca_residual import bn_eca_add, can_fuse_bn, eca_add
from .kernel_codes import ADAPTIVE, KernelSizes, format_kernel_code, parse_kernel_code

__all__ = [
    "ADAPTIVE",
    "KernelSizes",
    "EcaLayer",
    "adaptive_kernel_size",
    "bn_eca_add",
    "can_fuse_bn",
    "eca_add",
    "format_kernel_code",
    "parse_kernel_code",
]
