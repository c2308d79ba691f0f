"""The ``README.md`` of a detector folder: Hub front matter, usage, classes, reported and measured COCO AP."""

from typing import Dict, List, Optional

from torch import nn

from ..weights.model_card import card_text, front_matter
from .architectures import get_architecture
from .backbone import release_param_count
from .weights import released_checkpoint

__all__ = ["render_detector_card", "METRIC_NAMES"]

METRIC_NAMES = {
    "map": "AP",
    "map_50": "AP50",
    "map_75": "AP75",
    "map_small": "APS",
    "map_medium": "APM",
    "map_large": "APL",
    "mar_1": "AR1",
    "mar_10": "AR10",
    "mar_100": "AR100",
    "mar_small": "ARS",
    "mar_medium": "ARM",
    "mar_large": "ARL",
}


def _metric_lines(metrics: Dict[str, float], source: str) -> List[str]:
    lines = []
    for key, value in metrics.items():
        iou_type, _, metric = key.partition("_")
        label = f"{'box' if iou_type == 'box' else 'mask'} {METRIC_NAMES.get(metric, metric)}"
        lines += [f"          - type: {key}", f"            name: {label} ({source})", f"            value: {value}"]
    return lines


def render_detector_card(
    model: nn.Module,
    source_file: str = "",
    source_sha256: str = "",
    measured: Optional[Dict[str, float]] = None,
    dataset: str = "COCO-val2017",
) -> str:
    """The model card of a converted or fine-tuned detector.

    Args:
        model: The detector (it carries ``detector_cfg`` and ``label_map``).
        source_file: The file converted from, if any.
        source_sha256: Its sha256.
        measured: Metrics measured on ``dataset`` (``box_map``, ...), e.g. by a fine-tuning run.
        dataset: What ``measured`` was measured on.
    """
    cfg = model.detector_cfg
    arch, code = cfg["architecture"], cfg["kernel_code"]
    released = released_checkpoint(arch, code, model.label_map)
    body = _detector_usage(model, arch, code) + _detector_complexity(model, released)
    provenance = f"Converted from `{source_file}` (sha256 `{source_sha256}`), mmdetection v1." if source_file else ""
    return card_text(_detector_front_matter(arch, released, measured, dataset), body, provenance)


def _detector_front_matter(arch: str, released, measured: Optional[Dict[str, float]], dataset: str) -> List[str]:
    """The Hub's YAML, with the model index of reported and measured figures."""
    task = get_architecture(arch).task
    results: List[str] = []
    for metrics, source, name in (
        (released.metrics["COCO-val2017"] if released else None, "reported", "COCO-val2017"),
        (measured, "measured", dataset),
    ):
        if metrics:
            results += [
                f"      - task: {{type: {task}}}",
                f"        dataset: {{name: {name}, type: {'coco' if name.startswith('COCO') else 'custom'}}}",
                "        metrics:",
            ] + _metric_lines(metrics, source)
    return front_matter("pytorch", task.replace("instance-", "image-"), [task, "torchvision"], arch, results)


def _detector_usage(model: nn.Module, arch: str, code: str) -> List[str]:
    """The title, what the detector is, how to load it, and its classes."""
    names = ", ".join(model.label_map.names[:12]) + (", ..." if len(model.label_map.names) > 12 else "")
    return [
        f"# {arch} ({code})",
        "",
        (
            f"torchvision's `{arch}` with ECA layers put into its trunk by `eca_models.add_eca`, kernel code `{code}`, "
            if model.detector_cfg["trunk"] == "torchvision"
            else f"torchvision's {type(model).__name__} on an ECA-ResNet FPN trunk, kernel code `{code}`, "
        )
        + "from *ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks* (Wang et al., CVPR 2020).",
        "",
        "## Usage",
        "",
        "```python",
        "from eca_models.detection import load_detector",
        "",
        "model = load_detector('path/to/this/folder')  # a torchvision detector, in eval mode",
        "detections = model([image])  # float tensor (3, H, W) in 0-1, RGB",
        "```",
        "",
        "or `eca-models predict --model path/to/this/folder IMAGE`.",
        "",
        "## Classes",
        "",
        f"{len(model.label_map.names)} classes ({names}); `config.json` maps each head index to its category id and "
        "name" + (" (index 0 is background)." if model.label_map.background else "."),
    ]


def _detector_complexity(model: nn.Module, released) -> List[str]:
    """The release's parameter count, and the reported figures of a released detector."""
    lines = [
        "",
        "## Complexity",
        "",
        f"- {release_param_count(model) / 1e6:.2f}M parameters counted as the release counted them (every parameter "
        "and frozen BatchNorm affine, less the stem and layer1).",
    ]
    if released is not None:
        m = released.metrics["COCO-val2017"]
        line = f"- Reported on COCO val2017: box AP {m['box_map']}"
        if "mask_map" in m:
            line += f", mask AP {m['mask_map']}"
        lines.append(line + " (release README; APS/APM/APL from the paper's tables).")
    return lines
