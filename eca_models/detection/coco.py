"""COCO-format data: annotation files checked up front, images read as RGB, targets in torchvision's form.

`read_coco` reads an ``instances_*.json`` and its image folder and refuses, in one line, what would fail
later or silently: JSON that is unreadable or truncated, missing sections, annotations whose image is not listed,
listed images whose file is missing or of another size (named). Boxes with no area are dropped and counted
(``CocoData.dropped``); crowd boxes are kept for evaluation and left out of training losses. Annotation ids that are
missing, repeat (merged files) or start at 0 (Roboflow's exports) are numbered afresh: pycocotools' evaluation
matches boxes by them. `find_coco_splits` finds the splits of a COCO-layout root, or of Roboflow's export.
"""

import contextlib
import dataclasses
import io
import json
import random
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..data.images import IMAGE_ERRORS, open_rgb
from ..errors import DataError
from .labels import LabelMap

__all__ = ["CocoData", "CocoDataset", "collate", "find_coco_splits", "quiet_coco", "read_coco", "read_rgb"]


@dataclasses.dataclass
class CocoData:
    """An annotation file, checked, with its image folder.

    Attributes:
        annotations: The file's path.
        images_dir: The folder the ``file_name`` entries are in.
        dataset: The parsed JSON (boxes with no area removed).
        dropped: How many boxes were dropped for having no area.
    """

    annotations: Path
    images_dir: Path
    dataset: Dict[str, Any]
    dropped: int

    @property
    def categories(self) -> List[Dict[str, Any]]:
        """The ``categories`` section, sorted by id."""
        return sorted(self.dataset["categories"], key=lambda c: c["id"])

    @property
    def classes(self) -> List[Dict[str, Any]]:
        """The categories a detector learns and knows from this data: all but a group with no annotation that names
        other categories' ``supercategory`` (Roboflow's exports list the dataset itself so, as category 0)."""
        used, categories = {ann["category_id"] for ann in self.dataset["annotations"]}, self.categories

        def group(c: Dict[str, Any]) -> bool:
            return any(o is not c and o.get("supercategory") == c["name"] for o in categories)

        return [c for c in categories if c["id"] in used or not group(c)]

    @property
    def image_ids(self) -> List[int]:
        """Every image id, in file order."""
        return [img["id"] for img in self.dataset["images"]]

    def coco(self, outlines: bool = False):
        """A pycocotools ``COCO`` over the checked dataset (its chatter silenced).

        Args:
            outlines: For mask AP: each annotation's segmentation as `_outline` reads it, its box where it has none
                (pycocotools fails on ``[]``, as box-only exports write it); None where no annotation has one.
        """
        from pycocotools.coco import COCO  # it loads matplotlib: only when scoring (start-up time)

        coco, dataset = COCO(), self.dataset
        if outlines:
            sizes = {img["id"]: (img["height"], img["width"]) for img in dataset["images"]}
            found = [_outline(ann, *sizes[ann["image_id"]]) for ann in dataset["annotations"]]
            if not any(o is not None for o in found):
                return None
            annotations = [{**a, "segmentation": o or _box_outline(a)} for a, o in zip(dataset["annotations"], found)]
            dataset = {**dataset, "annotations": annotations}
        coco.dataset = dataset
        with quiet_coco():
            coco.createIndex()
        return coco


@contextlib.contextmanager
def quiet_coco():
    """pycocotools prints progress lines ("creating index...") to stdout; keep them out of our output."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def find_coco_splits(root: Path) -> Dict[str, Tuple[Path, Path]]:
    """``{split: (annotation file, image folder)}`` of a COCO-layout root (``annotations/instances_train2017.json``
    with ``train2017/``, or ``images/train2017/`` as CVAT exports it), or of Roboflow's COCO export
    (``train/_annotations.coco.json`` among its images).

    Raises:
        DataError: Neither layout, or a split without its image folder.
    """
    root = Path(root)
    found = {}
    for path in sorted((root / "annotations").glob("instances_*.json")):
        split = path.stem[len("instances_") :]
        images = next((p for p in (root / split, root / "images" / split) if p.is_dir()), None)  # COCO's, CVAT's
        if images is None:
            raise DataError(
                f"{path} has no image folder {root / split} (or images/{split}): put the {split} images there"
            )
        found[split] = (path, images)
    if not found:
        found = {path.parent.name: (path, path.parent) for path in sorted(root.glob("*/_annotations.coco.json"))}
    if not found:
        raise DataError(
            f"{root} is not a COCO-layout folder: expected annotations/instances_<split>.json beside <split>/, or "
            "<split>/_annotations.coco.json among its images (or pass the annotation file and image folder explicitly)"
        )
    return found


def read_coco(annotations: Path, images_dir: Path, check_files: bool = True) -> CocoData:
    """Read and check a COCO ``instances`` file.

    Args:
        annotations: The JSON file.
        images_dir: Where its images are.
        check_files: Also check that every listed image file exists and is the size the file gives.

    Raises:
        DataError: One line naming what is wrong and where.
    """
    annotations, images_dir = Path(annotations), Path(images_dir)
    if not annotations.is_file():
        raise DataError(f"annotation file not found: {annotations}")
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    data = _read_json(annotations)
    images, category_ids = _check_entries(annotations, data)
    data["annotations"], dropped = _boxes(annotations, data["annotations"], images, category_ids)
    if check_files:
        for img in data["images"]:  # a file made on Windows names its sub-folders with backslashes
            posix = img["file_name"].replace("\\", "/")
            if posix != img["file_name"] and not (images_dir / img["file_name"]).is_file():
                img["file_name"] = posix
        missing = [img["file_name"] for img in data["images"] if not (images_dir / img["file_name"]).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} images listed in {annotations.name} are not in {images_dir} (first: {missing[0]})"
            )
        _check_sizes(annotations, images_dir, data["images"])
    return CocoData(annotations, images_dir, data, dropped)


def _check_sizes(annotations: Path, images_dir: Path, images: List[Dict[str, Any]]) -> None:
    """Refuse images whose file is not the size the annotations were drawn at (resized since): every box would lie
    off its object. Either way round for a photo its EXIF tag turns; an unreadable file is left to be named when read.
    """
    wrong = []
    for img in images:
        try:
            with Image.open(images_dir / img["file_name"]) as opened:  # the header only
                size = opened.size
                turned = size[::-1] == (img["width"], img["height"]) and opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
        except IMAGE_ERRORS:
            continue
        if size != (img["width"], img["height"]) and not turned:
            wrong.append(f"{img['file_name']} is {size[0]} x {size[1]}, the file says {img['width']} x {img['height']}")
    if wrong:
        raise DataError(
            f"{len(wrong)} images in {images_dir} are not the size {annotations.name} gives (first: {wrong[0]}): "
            "resized after annotation, their boxes would lie off their objects; annotate the images as they are"
        )


def _read_json(annotations: Path) -> Dict[str, Any]:
    """The file's JSON object, with its ``images`` and ``categories`` lists (``annotations`` empty if missing)."""
    try:
        data = json.loads(annotations.read_text(encoding="utf-8-sig"))  # -sig: a byte order mark is read past
    except UnicodeDecodeError:
        raise DataError(f"{annotations} is not a UTF-8 JSON file") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{annotations} is not valid JSON (truncated?): {e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "categories")):
        raise DataError(f"{annotations} is not a COCO instances file: it needs 'images' and 'categories' lists")
    data.setdefault("annotations", [])
    return data


def _check_entries(annotations: Path, data: Dict[str, Any]) -> Tuple[Dict[int, Dict[str, Any]], Set[int]]:
    """The images by id and the category ids, each entry checked (and its fields given their types)."""
    try:
        for img in data["images"]:  # the types pycocotools and torch take: ids written as "12" match 12
            img["id"], img["file_name"] = int(img["id"]), str(img["file_name"])
            img["height"], img["width"] = int(img["height"]), int(img["width"])
        images = {img["id"]: img for img in data["images"]}
        for c in data["categories"]:
            c["id"], c["name"] = int(c["id"]), str(c["name"])
        category_ids = {c["id"] for c in data["categories"]}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{annotations}: an image or category entry lacks {e} (images need id, file_name, width, height)"
        ) from None
    if len(images) != len(data["images"]) or len(category_ids) != len(data["categories"]):
        raise DataError(f"{annotations}: image or category ids repeat; each must be unique")
    if not data["categories"]:
        raise DataError(f"{annotations} has no categories")
    return images, category_ids


def _boxes(annotations: Path, entries: List[Dict[str, Any]], images, category_ids) -> Tuple[List[Dict[str, Any]], int]:
    """The annotations checked against the images and categories, those without area dropped (and counted)."""
    kept, dropped = [], 0
    for i, ann in enumerate(entries):
        try:
            image_id, category_id = int(ann["image_id"]), int(ann["category_id"])
            x, y, w, h = (float(v) for v in ann["bbox"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{annotations}: annotation {ann.get('id', i)} needs image_id, category_id and bbox [x, y, w, h]"
            ) from None
        if image_id not in images:
            raise DataError(
                f"{annotations}: annotation {ann.get('id', i)} is of image {image_id}, which 'images' does not list"
            )
        if category_id not in category_ids:
            raise DataError(
                f"{annotations}: annotation {ann.get('id', i)} has category {category_id}, which 'categories' does not list"
            )
        if w <= 0 or h <= 0:
            dropped += 1  # no area: no box to learn or match
            continue
        ann.update(image_id=image_id, category_id=category_id, bbox=[x, y, w, h])  # "12" as 12, as the images' ids
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", w * h)
        kept.append(ann)
    ids = [ann.get("id") for ann in kept]
    if not all(type(i) is int and i > 0 for i in ids) or len(set(ids)) < len(ids):
        for n, ann in enumerate(kept, 1):  # pycocotools matches by id: one repeated, or 0, scored a hit as a miss
            ann["id"] = n
    return kept, dropped


def check_categories(data: CocoData, label_map: LabelMap) -> None:
    """Refuse a dataset whose categories the model does not know (evaluating a detector of other classes).

    Raises:
        DataError: The unknown ids, named.
    """
    unknown = [c for c in data.classes if c["id"] not in label_map.category_ids]
    if unknown:
        names = ", ".join(f"{c['id']} {c['name']!r}" for c in unknown[:4])
        raise DataError(
            f"{data.annotations.name} has {len(unknown)} categories the model does not know ({names}); "
            "fine-tune it on this data first (eca-models finetune), or pass a model trained on these categories"
        )


def _masks(anns: List[Dict[str, Any]], height: int, width: int) -> torch.Tensor:
    """Each annotation's mask at the image's own size: its `_outline`, or its box where it has none."""
    from pycocotools import mask as mask_utils

    out = np.zeros((len(anns), height, width), dtype=np.uint8)
    for i, ann in enumerate(anns):
        found = _outline(ann, height, width)
        if found is None:
            x, y, w, h = ann["bbox"]
            out[i, int(y) : int(np.ceil(y + h)), int(x) : int(np.ceil(x + w))] = 1
        elif isinstance(found, list):
            out[i] = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(found, height, width)))
        else:
            out[i] = mask_utils.decode(
                mask_utils.frPyObjects(found, height, width) if isinstance(found["counts"], list) else found
            )
    return torch.from_numpy(out)


def _outline(ann: Dict[str, Any], height: int, width: int) -> Any:
    """An annotation's own outline as pycocotools reads it: its polygons of three points or more, or an RLE of the
    image's size; None where it has none usable (no segmentation, ``[]``, an RLE of another size)."""
    seg = ann.get("segmentation")
    if isinstance(seg, list):
        if seg and all(isinstance(v, (int, float)) for v in seg):
            seg = [seg]  # one polygon written flat, as some converters do, for a list of polygons
        return [p for p in seg if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0] or None
    if isinstance(seg, dict) and list(seg.get("size", ())) == [height, width] and "counts" in seg:
        return seg
    return None


def _box_outline(ann: Dict[str, Any]) -> List[List[float]]:
    """An annotation's box as a polygon, the outline pycocotools scores it by where it has none of its own."""
    x, y, w, h = ann["bbox"]
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


class CocoDataset(Dataset):
    """Images and torchvision targets of a `CocoData`.

    Items are ``(image, target, ok)``: ``image`` a float RGB tensor in 0-1 (grayscale, palette and CMYK images
    converted), ``target`` torchvision's dict (``boxes`` x1y1x2y2 in pixels, ``labels`` head indices, ``masks``
    when asked, ``image_id``, ``iscrowd``), ``ok`` False for an unreadable image (a 1x1 placeholder, named by the
    loop that drops it).
    """

    def __init__(
        self,
        data: CocoData,
        label_map: LabelMap,
        image_ids: Optional[Sequence[int]] = None,
        masks: bool = False,
        hflip: float = 0.0,
        skip_crowd: bool = False,
    ) -> None:
        """
        Args:
            data: The checked annotation file.
            label_map: Category ids -> the model's head indices.
            image_ids: The images to serve (default: all, in file order).
            masks: Decode instance masks (Mask R-CNN training).
            hflip: Probability of a horizontal flip (training).
            skip_crowd: Leave crowd boxes out of the targets (training: they are not objects to learn).
        """
        self.data, self.label_map, self.masks, self.hflip, self.skip_crowd = data, label_map, masks, hflip, skip_crowd
        self.images = {img["id"]: img for img in data.dataset["images"]}
        self.ids = list(image_ids) if image_ids is not None else data.image_ids
        self.by_image: Dict[int, List[Dict[str, Any]]] = {i: [] for i in self.images}
        for ann in data.dataset["annotations"]:
            self.by_image[ann["image_id"]].append(ann)
        self.samples = [str(data.images_dir / self.images[i]["file_name"]) for i in self.ids]  # for error reports

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], bool]:
        info = self.images[self.ids[index]]
        anns = [a for a in self.by_image[info["id"]] if not (self.skip_crowd and a.get("iscrowd"))]
        try:
            image = read_rgb(self.data.images_dir / info["file_name"], (info["width"], info["height"]))
        except IMAGE_ERRORS:
            empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
            return (
                torch.zeros(3, 1, 1),
                {**empty, "image_id": torch.tensor(info["id"]), "index": torch.tensor(index)},
                False,
            )
        image = image.float().div_(255)
        height, width = image.shape[-2:]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        target = {
            "boxes": boxes,
            "labels": torch.tensor([self.label_map.label(a["category_id"]) for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "image_id": torch.tensor(info["id"]),
            "index": torch.tensor(index),
        }
        if self.masks:
            target["masks"] = _masks(anns, height, width)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # boxes wholly outside the image
        for key in ("boxes", "labels", "iscrowd", "masks"):
            if key in target:
                target[key] = target[key][keep]
        if self.hflip and random.random() < self.hflip:
            image = image.flip(-1)
            b = target["boxes"]
            target["boxes"] = torch.stack([width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]], dim=1)
            if "masks" in target:
                target["masks"] = target["masks"].flip(-1)
        return image, target, True


def read_rgb(path, size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """An image file as a uint8 RGB tensor (3, H, W), read by `open_rgb` (``size``: the annotations' width, height).

    Raises:
        One of `IMAGE_ERRORS` for a file that cannot be read.
    """
    return torch.from_numpy(np.asarray(open_rgb(path, size), dtype=np.uint8).copy()).permute(2, 0, 1)


def collate(batch):
    """Detection batches are lists: images of different sizes, one target dict each."""
    images, targets, ok = zip(*batch)
    return list(images), list(targets), list(ok)
