"""Layers: the ECA layer, its fused residual ends, and the kernel-code convention."""

from .eca import ONNX_FORMS, EcaLayer, adaptive_kernel_size, check_onnx_form, onnx_form, writing_blocked_onnx
from .eca_residual import BnState, bn_state, eca_block_end, gate_from_pooled
from .kernel_codes import ADAPTIVE, KernelSizes, format_kernel_code, parse_kernel_code

__all__ = [
    "ADAPTIVE",
    "KernelSizes",
    "EcaLayer",
    "ONNX_FORMS",
    "adaptive_kernel_size",
    "check_onnx_form",
    "onnx_form",
    "writing_blocked_onnx",
    "BnState",
    "bn_state",
    "eca_block_end",
    "gate_from_pooled",
    "format_kernel_code",
    "parse_kernel_code",
]
