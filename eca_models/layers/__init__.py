"""Layers: the ECA layer and the kernel-code convention."""

from .eca import EcaLayer, adaptive_kernel_size
from .kernel_codes import ADAPTIVE, KernelSizes, format_kernel_code, parse_kernel_code

__all__ = ["ADAPTIVE", "KernelSizes", "EcaLayer", "adaptive_kernel_size", "format_kernel_code", "parse_kernel_code"]
