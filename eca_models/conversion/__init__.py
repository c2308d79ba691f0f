"""The authors' files into Hub folders: their ImageNet ``.pth.tar`` files (`imagenet`) and their mmdetection v1
detectors (`mmdet_v1`), each read safely, remapped, written, reloaded and compared; `convert` is the
one call for both."""

from pathlib import Path
from typing import Optional, Union

from ..detection import is_detector
from ..errors import UsageError
from .imagenet import ConversionReport, convert_checkpoint
from .mmdet_v1 import DetectorConversion, convert_mmdet_checkpoint

__all__ = ["convert"]


def convert(
    src: Union[str, Path],
    model: str,
    out: Union[str, Path],
    *,
    overwrite: bool = False,
    check_size: int = 224,
    kernel_code: Optional[str] = None,
) -> Union[ConversionReport, DetectorConversion]:
    """Convert an authors' file into a Hub-ready folder (model.safetensors, config.json, README.md), checked to
    reload to the same outputs.

    Args:
        src: The authors' file: a classification ``.pth.tar`` or an mmdetection v1 ``.pth``.
        model: What the weights belong to: a classifier (``eca_resnet50_k3557``) or a detector
            (``maskrcnn_eca_resnet50_fpn``).
        out: The folder to write.
        overwrite: Replace ``out`` if it exists.
        check_size: Classifiers: image size of the logits check.
        kernel_code: Detectors: the kernel code expected (the file's ECA tensors decide; a mismatch is an error).

    Returns:
        What was converted and checked.
    """
    if is_detector(model):
        return convert_mmdet_checkpoint(src, model, out, kernel_code=kernel_code, overwrite=overwrite)
    if kernel_code is not None:
        raise UsageError(f"kernel_code= is a detector's option: {model}'s kernel code is its name's, or its file's")
    return convert_checkpoint(src, model, out, overwrite=overwrite, check_size=check_size)
