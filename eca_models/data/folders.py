"""A user's own dataset: class folders under ``train/`` and ``val/``, or one folder split in two.

Every problem a user can make with such a folder gets one line that says what is wrong: a
missing folder, fewer than two classes, an empty class, val classes that differ from train.
Files that are not images are ignored.
"""

import random
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from ..errors import DataError, require_folder
from .images import list_images

__all__ = ["ClassFolders", "find_class_folders"]

Samples = List[Tuple[Path, int]]


class ClassFolders:
    """Train and val samples with their class names (sorted folder names: the ImageFolder order)."""

    def __init__(self, classes: List[str], train: Samples, val: Samples) -> None:
        self.classes, self.train, self.val = classes, train, val


def _classes(root: Path) -> Dict[str, List[Path]]:
    require_folder(root, "folder")
    found = {d.name: list_images(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    if len(found) < 2:
        raise DataError(
            f"{root} has {len(found)} class folder(s); fine-tuning needs at least two, one sub-folder per class"
        )
    empty = [name for name, images in found.items() if not images]
    if empty:
        raise DataError(
            f"class folder {root / empty[0]} holds no images"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
        )
    return found


def find_class_folders(data: Path, val_split: Optional[float] = None, seed: int = 0) -> ClassFolders:
    """Read ``data/train`` and ``data/val``, or split ``data`` itself by ``val_split``.

    Args:
        data: The dataset folder.
        val_split: Fraction of each class held out for validation when there is no ``val/``.
        seed: Seed of that split.
    """
    data = require_folder(data)
    if (data / "train").is_dir():
        train = _classes(data / "train")
        if not (data / "val").is_dir():
            if not val_split:
                raise DataError(f"{data} has train/ but no val/: add val/ or pass val_split=0.2")
            return _split(train, val_split, seed)
        val = _classes(data / "val")
        if set(val) != set(train):
            only = {"train": sorted(set(train) - set(val)), "val": sorted(set(val) - set(train))}
            which = "; ".join(f"only in {k}: {', '.join(v[:5])}" for k, v in only.items() if v)
            raise DataError(f"val classes differ from train ({which}): give every class a folder in both")
        classes = sorted(train)
        index = {c: i for i, c in enumerate(classes)}
        return ClassFolders(
            classes,
            [(p, index[c]) for c in classes for p in train[c]],
            [(p, index[c]) for c in classes for p in val[c]],
        )
    if not val_split:
        raise DataError(
            f"{data} has no train/ and val/ folders: add them, or pass val_split=0.2 to split its class folders"
        )
    return _split(_classes(data), val_split, seed)


def _split(found: Dict[str, List[Path]], val_split: float, seed: int) -> ClassFolders:
    if not 0 < val_split < 1:
        raise DataError(f"val_split={val_split!r}: must be between 0 and 1")
    classes = sorted(found)
    rng = random.Random(seed)
    train: Samples = []
    val: Samples = []
    for i, c in enumerate(classes):
        images = list(found[c])
        rng.shuffle(images)
        n_val = max(1, round(len(images) * val_split))
        if n_val >= len(images):
            raise DataError(f"class {c} has {len(images)} image(s): too few to hold {val_split:.0%} out for validation")
        val += [(p, i) for p in sorted(images[:n_val])]
        train += [(p, i) for p in sorted(images[n_val:])]
    return ClassFolders(classes, train, val)
