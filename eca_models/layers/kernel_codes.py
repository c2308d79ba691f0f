"""Kernel codes: the per-stage ECA kernel sizes the released checkpoints are named by.

``'k3557'`` gives the kernel size of each ResNet stage (layer1=3, ..., layer4=7); one digit gives every
ResNet stage the same size (the release's ``'k5'`` is ``'k5555'``). MobileNetV2 uses two digits: the size
for blocks with fewer than 96 output channels, then for the rest (``'k13'``).
``'adaptive'`` picks every layer's size from its channel count (paper eq. 12).
"""

import re
from typing import Dict, Mapping, Sequence, Set, Tuple, Union

from ..errors import UsageError

__all__ = ["ADAPTIVE", "KernelSizes", "format_kernel_code", "parse_kernel_code", "stage_kernel_sizes"]

ADAPTIVE = "adaptive"
KernelSizes = Union[str, Sequence[int]]


def parse_kernel_code(code: KernelSizes, num_stages: int) -> Union[str, Tuple[int, ...]]:
    """Turn ``'k3557'``, ``'3557'``, ``(3, 5, 5, 7)``, ``'k5'`` (ResNets: every stage) or ``'adaptive'`` into a
    tuple or ``'adaptive'``.

    Args:
        code: The kernel code in any accepted spelling.
        num_stages: How many sizes the architecture needs (4 for ResNets, 2 for MobileNetV2).

    Returns:
        A tuple of ``num_stages`` odd ints >= 1, or the string ``'adaptive'``.

    Raises:
        UsageError: One line saying what a valid code looks like (a ``ValueError``).
    """
    example = "k3557" if num_stages == 4 else "k13" if num_stages == 2 else "k" + "3" * num_stages
    one_digit = num_stages == 4  # the ResNets: the release names a code of one size for every stage ('k5')
    hint = (
        f"expected 'k' and {num_stages} odd digits, one per stage (e.g. '{example}')"
        + (", one odd digit for every stage ('k5' = 'k5555')" if one_digit else "")
        + f", a tuple of {num_stages} odd ints >= 1, or 'adaptive'"
    )
    if isinstance(code, str):
        text = code.strip().lower()
        if text == ADAPTIVE:
            return ADAPTIVE
        digits = text[1:] if text.startswith("k") else text
        parts = digits.split("-") if "-" in digits else list(digits)
        if not all(p.isascii() and p.isdigit() for p in parts):
            raise UsageError(f"invalid kernel code {code!r}: {hint}")
        sizes: Tuple[int, ...] = tuple(int(p) for p in parts)
        if one_digit and len(sizes) == 1:
            sizes = sizes * num_stages
    else:
        try:
            sizes = tuple(code)
        except TypeError:
            raise UsageError(f"invalid kernel code {code!r}: {hint}") from None
        if not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
            raise UsageError(f"invalid kernel code {code!r}: {hint}")
    if len(sizes) != num_stages or any(s < 1 or s % 2 == 0 for s in sizes):
        raise UsageError(f"invalid kernel code {code!r}: {hint}")
    return sizes


def format_kernel_code(sizes: Union[str, Sequence[int]]) -> str:
    """``(3, 5, 5, 7)`` -> ``'k3557'``; sizes above 9 are joined with dashes (``'k3-5-11-7'``)."""
    if isinstance(sizes, str):
        return sizes
    if all(s < 10 for s in sizes):
        return "k" + "".join(str(s) for s in sizes)
    return "k" + "-".join(str(s) for s in sizes)


def stage_kernel_sizes(state_dict: Mapping[str, object], prefix: str = "") -> Dict[str, Set[int]]:
    """The ECA kernel sizes each stage of a ResNet state dict holds, ``{"layer1": {3}, ...}``, found by structure
    (every (1, 1, k) tensor inside ``<prefix>layerS.B.``), whatever the layer is called."""
    sizes: Dict[str, Set[int]] = {}
    pattern = re.compile(re.escape(prefix) + r"(layer\d)\.\d+\.")
    for key, value in state_dict.items():
        m = pattern.match(key)
        shape = tuple(getattr(value, "shape", ()))
        if m and len(shape) == 3 and shape[:2] == (1, 1):
            sizes.setdefault(m.group(1), set()).add(shape[-1])
    return sizes
