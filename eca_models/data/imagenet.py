"""ImageNet-1k validation images with their global labels, from any of the common layouts.

Labels are always positions in the 1000 sorted WordNet ids (the ImageFolder order on the full
set), so a folder that holds only some classes still maps each image to its true global index.
"""

import csv
import re
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from timm.data import ImageNetInfo

from ..errors import DataError, require_folder
from .images import is_image, list_images

__all__ = ["folder_samples", "ground_truth_file", "imagenet_class_names", "imagenet_samples", "imagenet_wnids"]

WNID = re.compile(r"^n\d{8}$")
# Hugging Face's ILSVRC/imagenet-1k archives name each image by its class: ILSVRC2012_val_00000001_n01751748.JPEG
NAMED_CLASS = re.compile(r"_(n\d{8})$")


@lru_cache(maxsize=1)
def imagenet_wnids() -> Tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids, sorted: position = class index."""
    return tuple(ImageNetInfo().label_names())


@lru_cache(maxsize=1)
def imagenet_class_names() -> Tuple[str, ...]:
    """Short English names of the 1000 classes, in class-index order ('tench', 'goldfish', ...)."""
    return tuple(d.split(",")[0].strip() for d in ImageNetInfo().label_descriptions())


def _class_folders(root: Path) -> List[Path]:
    """The sub-folders of ``root``, sorted, hidden ones left out."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _named_images(data: Path) -> List[Path]:
    """The images of a flat folder, sorted, where every one is named by its class (`NAMED_CLASS`); else none, said at
    the first image that is not (a flat val of 50,000 with a ground-truth file is not listed whole for it)."""
    images = []
    for path in data.iterdir():
        if is_image(path):
            if not NAMED_CLASS.search(path.stem):
                return []
            images.append(path)
    return sorted(images)


def _named_samples(data: Path, class_names: Sequence[str], what: str) -> List[Tuple[Path, int]]:
    """``(path, label)`` for a flat folder of images named by their class (Hugging Face's imagenet-1k)."""
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for path in _named_images(data):
        wnid = NAMED_CLASS.search(path.stem).group(1)
        if wnid not in index:
            raise DataError(f"{path} is named by {wnid}, which is not {what}")
        samples.append((path, index[wnid]))
    return samples


def folder_samples(root: Path, class_names: Sequence[str], what: str) -> List[Tuple[Path, int]]:
    """``(path, label)`` for a folder of class sub-folders, labels looked up in ``class_names``.

    Args:
        root: The folder with one sub-folder per class.
        class_names: The model's classes in index order; each sub-folder must be one of them.
        what: How to call a class in errors ("an ImageNet-1k WordNet id", "a class of this model").
    """
    index = {name: i for i, name in enumerate(class_names)}
    samples = []
    for sub in _class_folders(root):
        if sub.name not in index:
            split = next((root / n for n in ("val", "validation") if (root / n).is_dir()), None)  # a dataset's root
            hint = f" (the validation split: data={split}?)" if split is not None else ""
            raise DataError(f"{sub} is not named by {what}; each sub-folder of data= must be one{hint}")
        samples += [(path, index[sub.name]) for path in list_images(sub)]
    return samples


def _read_labels(labels_file: Path, wnids: Sequence[str]) -> Dict[str, int]:
    """Image stem -> global index, from Kaggle's LOC_val_solution.csv, lines of ``file label_index`` (`_label_of_line`),
    or a WordNet id a line in val's order."""
    index = {w: i for i, w in enumerate(wnids)}
    text = labels_file.read_text(encoding="utf-8-sig", errors="replace")  # -sig: as Excel or Notepad saved it
    labels: Dict[str, int] = {}
    if text.startswith("ImageId,PredictionString"):
        for row in csv.DictReader(text.splitlines()):
            wnid = row["PredictionString"].split()[0] if row["PredictionString"].split() else ""
            if wnid not in index:
                raise DataError(f"{labels_file}: {wnid!r} for {row['ImageId']} is not an ImageNet-1k WordNet id")
            labels[Path(row["ImageId"]).stem] = index[wnid]
        return labels
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if lines and all(len(parts) == 1 for parts in lines):
        return _labels_in_val_order([parts[0] for parts in lines], index, labels_file)
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        labels[Path(line.split()[0]).stem] = _label_of_line(line, index, labels_file, n)
    return labels


def _labels_in_val_order(labels: List[str], index: Dict[str, int], labels_file: Path) -> Dict[str, int]:
    """A label a line for ``ILSVRC2012_val_00000001`` on, as WordNet ids (TensorFlow's
    ``imagenet_2012_validation_synset_labels.txt``); the devkit's numbers count the classes in another order."""
    unknown = next((label for label in labels if label not in index), None)
    if unknown is not None:
        raise DataError(
            f"{labels_file}: lines of one label are read as the WordNet ids of ILSVRC2012_val_00000001, 00000002, ... "
            f"and {unknown!r} is not one (the devkit's ILSVRC2012_validation_ground_truth.txt numbers classes in its "
            "own order, not the sorted WordNet ids': use LOC_val_solution.csv)"
        )
    return {f"ILSVRC2012_val_{n:08d}": index[label] for n, label in enumerate(labels, 1)}


def _label_of_line(line: str, index: Dict[str, int], labels_file: Path, n: int) -> int:
    """The global index of one ground-truth line: ``file label_index``, ``file wnid`` or ``file wnid label_index``
    (the class id and its index must then agree)."""
    parts = line.split()
    where = f"{labels_file}:{n}"
    if len(parts) == 2 and parts[1] in index:
        return index[parts[1]]
    if len(parts) == 2 and parts[1].lstrip("-").isdigit():
        label = int(parts[1])
        if not 0 <= label < len(index):
            raise DataError(f"{where}: label {label} is outside 0..{len(index) - 1}")
        return label
    if len(parts) == 3 and parts[1] in index and parts[2].lstrip("-").isdigit():
        if int(parts[2]) != index[parts[1]]:
            raise DataError(
                f"{where}: {parts[1]} is class {index[parts[1]]}, but the line says {parts[2]}; "
                "the file's class order is not this model's"
            )
        return index[parts[1]]
    raise DataError(
        f"{where}: expected 'file label_index', 'file wnid', 'file wnid label_index' or Kaggle's "
        f"LOC_val_solution.csv, got {line.strip()!r}"
    )


def ground_truth_file(data: Path, labels_file: Optional[Path] = None, hint: str = "pass labels=FILE") -> Optional[Path]:
    """Which layout a validation folder has, checked before any model is loaded: None for class sub-folders or
    images named by their class (`NAMED_CLASS`), else the flat layout's ground truth (``labels_file``, or the nearest
    ``LOC_val_solution.csv`` in the folder or up to four above it); ``hint`` ends the message where there is none.

    Raises:
        DataError: The folder is missing, or has neither class sub-folders, nor named images, nor a ground-truth file.
    """
    data = require_folder(data)
    if labels_file is None and (_class_folders(data) or _named_images(data)):
        return None
    if labels_file is None:
        near = [data, *data.absolute().parents][:5]  # Kaggle's is four folders above its ILSVRC/Data/CLS-LOC/val
        found = [p / "LOC_val_solution.csv" for p in near if (p / "LOC_val_solution.csv").is_file()]
        if not found:
            raise DataError(
                f"{data} has no class sub-folders, no images named by class (x_n01751748.JPEG) and no ground truth "
                f"(LOC_val_solution.csv): {hint}"
            )
        labels_file = found[0]
    if not Path(labels_file).is_file():
        raise DataError(f"labels file not found: {labels_file}")
    return Path(labels_file)


def imagenet_samples(
    data: Path, labels_file: Optional[Path] = None, class_names: Optional[Sequence[str]] = None
) -> List[Tuple[Path, int]]:
    """The labelled images of a validation folder, in either layout.

    (a) one sub-folder per class (WordNet ids for ImageNet, or ImageNetV2's class indices ``0`` to ``999``, read as
    numbers where ImageFolder's sorted names would not be); (b) a flat folder of images named by their class, as
    Hugging Face's imagenet-1k archives hold them; (c) a flat folder of images plus a ground-truth file
    (``labels_file``, or ``LOC_val_solution.csv`` found in the folder or above it, as Kaggle's download holds it).

    Args:
        data: The folder.
        labels_file: Ground truth for the flat layout.
        class_names: The model's classes, when it is not an ImageNet-1k model (a fine-tuned one).
    """
    data = Path(data)
    wnids = class_names or imagenet_wnids()
    what = "an ImageNet-1k WordNet id" if class_names is None else "a class of this model"
    labels_file, folders = ground_truth_file(data, labels_file), _class_folders(data)
    if labels_file is None and class_names is None and folders and all(p.name.isdecimal() for p in folders):
        wnids, what = tuple(map(str, range(1000))), "a class index 0 to 999 (ImageNetV2's layout)"
    if labels_file is None and folders:
        samples = folder_samples(data, wnids, what)
    elif labels_file is None:
        samples = _named_samples(data, wnids, what)
    else:
        labels = _read_labels(labels_file, wnids)
        images = sorted(p for p in data.iterdir() if is_image(p))  # the flat layout: the folder's own files
        unlabelled = [p.name for p in images if p.stem not in labels]
        if unlabelled:
            raise DataError(f"{len(unlabelled)} images of {data} have no label in {labels_file} (e.g. {unlabelled[0]})")
        samples = [(p, labels[p.stem]) for p in images]
    if not samples:
        raise DataError(f"no images found in {data} (looked for {', '.join(sorted({'.jpg', '.jpeg', '.png'}))} ...)")
    return samples
