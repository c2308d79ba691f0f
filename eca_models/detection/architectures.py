"""The release's six detectors as facts, in one table: what each name is (head, trunk depth, the release's kernel
code, classes), so that no code reads them from a name."""

import dataclasses
from typing import Dict, List, Optional, Tuple

from torchvision.models import detection as torchvision_detection
from torchvision.models import list_models

from ..errors import UnknownModel
from ..weights.manifest import DETECTION_TASKS

__all__ = [
    "ARCHITECTURES",
    "DetectorArchitecture",
    "find_architecture",
    "get_architecture",
    "is_torchvision_detector",
    "torchvision_detectors",
]

_BOXES, _MASKS = DETECTION_TASKS
TASKS = {"fasterrcnn": _BOXES, "retinanet": _BOXES, "maskrcnn": _MASKS}  # each head's task


@dataclasses.dataclass(frozen=True)
class DetectorArchitecture:
    """One registered detector.

    Attributes:
        name: Its builder's name, e.g. ``maskrcnn_eca_resnet50_fpn``.
        kind: Its head: ``fasterrcnn``, ``maskrcnn`` or ``retinanet``.
        depth: The trunk's depth, 50 or 101.
        release_code: The kernel code the release trained it with.
        categories: The classes of the release's weights (COCO's 80).
    """

    name: str
    kind: str
    depth: int
    release_code: str
    categories: int = 80

    @property
    def trunk(self) -> str:
        """The ECA-ResNet classifier under the FPN, e.g. ``eca_resnet50``."""
        return f"eca_resnet{self.depth}"

    @property
    def plain_trunk(self) -> str:
        """timm's plain ResNet of the same depth (the benchmark's twin)."""
        return f"resnet{self.depth}"

    @property
    def task(self) -> str:
        """The Hub's task: ``object-detection`` or ``instance-segmentation``."""
        return TASKS[self.kind]

    @property
    def background(self) -> bool:
        """Whether the classification head has a background class (the two-stage detectors; not RetinaNet)."""
        return self.kind != "retinanet"

    @property
    def masks(self) -> bool:
        """Whether it predicts masks (Mask R-CNN)."""
        return self.kind == "maskrcnn"

    @property
    def returned_layers(self) -> Tuple[int, ...]:
        """The trunk stages the FPN takes: C2-C5 for the two-stage detectors, C3-C5 (and P6, P7) for RetinaNet."""
        return (2, 3, 4) if self.kind == "retinanet" else (1, 2, 3, 4)


ARCHITECTURES: Dict[str, DetectorArchitecture] = {
    a.name: a
    for a in (
        DetectorArchitecture("fasterrcnn_eca_resnet50_fpn", "fasterrcnn", 50, "k5"),
        DetectorArchitecture("fasterrcnn_eca_resnet101_fpn", "fasterrcnn", 101, "k3357"),
        DetectorArchitecture("maskrcnn_eca_resnet50_fpn", "maskrcnn", 50, "k3377"),
        DetectorArchitecture("maskrcnn_eca_resnet101_fpn", "maskrcnn", 101, "k3357"),
        DetectorArchitecture("retinanet_eca_resnet50_fpn", "retinanet", 50, "k3377"),
        DetectorArchitecture("retinanet_eca_resnet101_fpn", "retinanet", 101, "k3357"),
    )
}


def get_architecture(name: str) -> DetectorArchitecture:
    """The facts of the detector ``name``: a registered one, or a torchvision builder of the three kinds (depth 0,
    no release code or categories: what the builder and ``add_eca`` make of it).

    Raises:
        UnknownModel: Unknown name (a ``KeyError``); the message lists the known ones.
    """
    if name in ARCHITECTURES:
        return ARCHITECTURES[name]
    if is_torchvision_detector(name):
        return DetectorArchitecture(name, name.split("_")[0], 0, "none", 0)  # torchvision's, ECA by add_eca
    raise UnknownModel(
        f"unknown detector {name!r}; choose one of: {', '.join(sorted(ARCHITECTURES))}, or torchvision's "
        "fasterrcnn_*, maskrcnn_*, retinanet_* (with add_eca=)"
    )


def torchvision_detectors() -> List[str]:
    """torchvision's detection builders of the three kinds the package runs (Faster / Mask R-CNN, RetinaNet), which
    take ECA through ``add_eca=``."""
    return [n for n in list_models(module=torchvision_detection) if n.split("_")[0] in TASKS]


def is_torchvision_detector(name: str) -> bool:
    """True for one of `torchvision_detectors`."""
    return name in torchvision_detectors()


def find_architecture(kind: str, depth: int) -> Optional[DetectorArchitecture]:
    """The detector with head ``kind`` on a trunk of ``depth``, or None."""
    found = [a for a in ARCHITECTURES.values() if a.kind == kind and a.depth == depth]
    return found[0] if found else None
