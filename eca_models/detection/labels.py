"""Label maps: a detector's contiguous class indices to a dataset's category ids and names.

COCO's 80 category ids run from 1 to 90 with gaps, and mmdetection v1 trained its heads on contiguous
labels: an 81-way two-stage head has background at index 0 and ``CLASSES[j - 1]`` at index ``j``; RetinaNet's
80-way sigmoid head has ``CLASSES[j]`` at index ``j``. A `LabelMap` carries that mapping with the
weights (in ``config.json``) so predictions come out as the dataset's own ids and names.
"""

import dataclasses
from typing import Any, Dict, List, Sequence

from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

from ..errors import UsageError

__all__ = ["LabelMap", "coco_categories"]


def coco_categories() -> List[Dict[str, Any]]:
    """The 80 COCO categories, ``[{"id": 1, "name": "person"}, ...]`` in id order (torchvision's list, less its gaps)."""
    names = FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"]  # index = category id, 'N/A' at the gaps
    return [{"id": i, "name": name} for i, name in enumerate(names) if i > 0 and name != "N/A"]


@dataclasses.dataclass(frozen=True)
class LabelMap:
    """Contiguous head indices <-> category ids and names.

    Attributes:
        category_ids: The category id of each foreground class, in head order.
        names: The name of each foreground class, in head order.
        background: True for heads whose index 0 is background (Faster / Mask R-CNN), False for RetinaNet.
    """

    category_ids: Sequence[int]
    names: Sequence[str]
    background: bool = True

    def __post_init__(self) -> None:
        if len(self.category_ids) != len(self.names):
            raise UsageError(f"{len(self.category_ids)} category ids but {len(self.names)} names")
        if len(set(self.category_ids)) != len(self.category_ids):
            raise UsageError("category ids repeat: each class needs its own id")

    @classmethod
    def from_categories(cls, categories: Sequence[Dict[str, Any]], background: bool = True) -> "LabelMap":
        """From COCO ``categories`` entries (``{"id", "name"}``), sorted by id as mmdetection and torchvision do.

        Raises:
            UsageError: None given, an id given twice, or an entry that is not ``{"id": whole number, "name": ...}``.
        """
        if not categories:
            raise UsageError("categories: none given; a head needs at least one")
        for c in categories:
            if (
                not isinstance(c, dict)
                or "name" not in c
                or isinstance(c.get("id"), bool)
                or not isinstance(c.get("id"), int)
            ):
                raise UsageError(f"categories: each entry needs an integer 'id' and a 'name', as COCO's do (got {c!r})")
        ordered = sorted(categories, key=lambda c: int(c["id"]))
        repeated = [a["id"] for a, b in zip(ordered, ordered[1:]) if a["id"] == b["id"]]
        if repeated:
            raise UsageError(f"categories: id {repeated[0]} is given twice; each category needs an id of its own")
        return cls(tuple(int(c["id"]) for c in ordered), tuple(str(c["name"]) for c in ordered), background)

    @classmethod
    def coco(cls, background: bool = True) -> "LabelMap":
        """The release's map: COCO's 80 categories."""
        return cls.from_categories(coco_categories(), background)

    @property
    def num_classes(self) -> int:
        """The head's width: the classes, plus one for background where the head has it."""
        return len(self.names) + int(self.background)

    def category_id(self, label: int) -> int:
        """The category id of head index ``label``."""
        return self.category_ids[self._position(label)]

    def name(self, label: int) -> str:
        """The class name of head index ``label``."""
        return self.names[self._position(label)]

    def label(self, category_id: int) -> int:
        """The head index of ``category_id``.

        Raises:
            KeyError: The model has no class with that id.
        """
        try:
            return self.category_ids.index(category_id) + int(self.background)
        except ValueError:
            raise KeyError(f"category id {category_id} is not one of the model's classes") from None

    def _position(self, label: int) -> int:
        position = int(label) - int(self.background)
        if not 0 <= position < len(self.names):
            raise IndexError(f"label {label} is outside the model's {self.num_classes} classes")
        return position

    def to_json(self) -> Dict[str, Any]:
        """The ``config.json`` form: categories in head order and whether index 0 is background."""
        return {
            "background": self.background,
            "categories": [{"id": i, "name": n} for i, n in zip(self.category_ids, self.names)],
        }

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "LabelMap":
        """Read back `to_json` (head order kept as written)."""
        cats = data["categories"]
        return cls(tuple(int(c["id"]) for c in cats), tuple(str(c["name"]) for c in cats), bool(data["background"]))
