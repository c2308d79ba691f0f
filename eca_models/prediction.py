"""Prediction as one call: `predict` gives each image's top-k classes (classifiers) or its boxes, scores,
class names and masks (detectors), and draws the detections into a folder if asked.

An image that cannot be read is named on stderr, counted, and the rest are still predicted.
"""

import dataclasses
import io
import os
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from PIL import Image
from timm.data import create_transform, resolve_data_config
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from .data.imagenet import imagenet_class_names
from .data.images import IMAGE_ERRORS, ImageListDataset, find_images, open_rgb, unreadable
from .detection import load_detector
from .detection.coco import read_rgb
from .detection.weights import is_detector_source
from .errors import UsageError, first_line, require_number, require_whole_number
from .evaluation.detection import to_coco_results
from .factory import load
from .files import check_output_folder, write_bytes_atomic
from .runtime import check_device, default_device, default_workers, loader_workers

__all__ = [
    "BAR_FROM",
    "Predictions",
    "classify_images",
    "detect_objects",
    "detection_line",
    "draw",
    "predict",
    "short_names",
]

BAR_FROM = 20  # images: a progress bar (on stderr) from this many on


@dataclasses.dataclass
class Predictions:
    """What `predict` found.

    Attributes:
        results: One entry per readable image: ``image`` and ``top`` (``class``, ``index``, ``prob``) for a
            classifier; ``image``, ``width``, ``height`` and ``detections`` (``box``, ``score``, ``label``,
            ``category_id``, ``segmentation``) for a detector.
        images: How many images were asked for.
        unreadable: How many could not be read (each named on stderr).
        drawn: How many were drawn into ``out_dir``.
        names: Each image's shortest path ending that tells it apart from the others asked for (`short_names`):
            what the command's lines call it, and its drawing's name in ``out_dir``.
    """

    results: List[Dict[str, Any]]
    images: int
    unreadable: int = 0
    drawn: int = 0
    names: Dict[str, str] = dataclasses.field(default_factory=dict)


def predict(
    images: Union[str, Path, Sequence[Union[str, Path]]],
    model: Union[str, Path],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    num_classes: Optional[int] = None,
    top_k: int = 5,
    device: Optional[str] = None,
    score_thr: float = 0.3,
    out_dir: Optional[Union[str, Path]] = None,
    min_size: Optional[int] = None,
    max_size: Optional[int] = None,
) -> Predictions:
    """Predict ``images`` (files, folders: every image under them, sorted, or wildcard patterns) with ``model``.

    Args:
        images: Image files, folders or wildcard patterns (``photos/**/*.jpg``).
        model: A registered classifier or detector name, or a model folder.
        checkpoint: A weights file or folder for a registered name.
        num_classes: The classes of ``checkpoint``'s classifier, when not ImageNet's 1000.
        top_k: Classes per image (classifiers).
        device: Where to run (default: ``cuda`` where torch sees a GPU, else ``cpu``).
        score_thr: Detectors: keep detections scoring this or more.
        out_dir: Detectors: draw each image with its detections into this folder.
        min_size: Detectors: resize the shorter side to this (the release's 800 when None).
        max_size: Detectors: and the longer side to at most this (1333 when None).

    Raises:
        UsageError: A URL; no images found, or none could be read; ``top_k``, a size or ``score_thr`` out of range;
            ``out_dir`` with a classifier.
        ModelUnavailable: The model cannot be loaded.
    """
    require_whole_number("top_k", top_k, 1)
    for name, size in (("min_size", min_size), ("max_size", max_size)):
        require_whole_number(name, size, 1)
    require_number("score_thr", score_thr, lambda v: 0 <= v <= 1, "a score from 0 to 1")
    device = str(check_device(device or default_device()))
    given = [images] if isinstance(images, (str, Path)) else list(images)
    paths = find_images(given)
    if not paths:
        raise UsageError(f"no images found in {', '.join(map(str, given))}")
    if is_detector_source(str(model)):
        if out_dir:
            check_output_folder(out_dir, "out_dir")
        detector = load_detector(model, checkpoint=checkpoint, min_size=min_size, max_size=max_size).to(device)
        found = detect_objects(detector, paths, device, score_thr, Path(out_dir) if out_dir else None)
    elif out_dir:
        raise UsageError("out_dir= draws detections: it goes with a detector (e.g. maskrcnn_eca_resnet50_fpn)")
    else:
        classifier = load(model, checkpoint=checkpoint, num_classes=num_classes).to(device)
        found = classify_images(classifier, paths, top_k, device)
    if not found.results:
        raise UsageError(f"none of the {found.images} images could be read (each is named above)")
    return found


def _readable(paths: List[Path], read, note: List[int]):
    """``(path, image)`` for each path ``read`` can read; each one it cannot is named on stderr and counted."""
    for path in tqdm(paths, desc="predict", unit="img", disable=len(paths) < BAR_FROM, leave=False):
        try:
            image = read(path)
        except IMAGE_ERRORS as e:
            tqdm.write(f"eca-models predict: cannot read {path}: {first_line(e)}", file=sys.stderr)
            note[0] += 1
            continue
        yield path, image


def classify_images(
    model: torch.nn.Module, images: List[Path], top_k: int, device: str, batch_size: int = 32
) -> Predictions:
    """The ``top_k`` classes of each image, by name, index and probability (the model's own class names, or
    ImageNet's for a 1000-class model), ``batch_size`` images a forward pass, read by data loading processes
    where there is more than one batch."""
    names = model.pretrained_cfg.get("label_names") or (imagenet_class_names() if model.num_classes == 1000 else None)
    if names is None:
        names = [str(i) for i in range(model.num_classes)]
    config = resolve_data_config({}, model=model)
    dataset = ImageListDataset([(p, 0) for p in images], create_transform(**config), config["input_size"])
    workers = loader_workers(default_workers()) if len(images) > batch_size else 0
    loader = torch.utils.data.DataLoader(dataset, batch_size, num_workers=workers, pin_memory=device.startswith("cuda"))
    results, failed = [], 0
    for x, _, index, ok in tqdm(loader, desc="predict", unit="batch", disable=len(images) < BAR_FROM, leave=False):
        for path in unreadable(ok, index, dataset.samples):
            tqdm.write(f"eca-models predict: cannot read {path}: {_read_error(path)}", file=sys.stderr)
            failed += 1
        if not ok.any():
            continue
        with torch.inference_mode():
            top = model(x[ok].to(device)).float().softmax(dim=1).topk(min(top_k, model.num_classes))
        for i, probs, classes in zip(index[ok].tolist(), top.values.tolist(), top.indices.tolist()):
            ranked = [{"class": names[c], "index": c, "prob": round(p, 4)} for p, c in zip(probs, classes)]
            results.append({"image": str(images[i]), "top": ranked})
    return Predictions(results, len(images), failed, names=short_names(map(str, images)))


def _read_error(path: Path) -> str:
    """Why ``path`` cannot be read, in one line (read again: a loading process only says that it could not)."""
    try:
        open_rgb(path)
    except IMAGE_ERRORS as e:
        return first_line(e)
    return "unreadable"


def detect_objects(
    model: torch.nn.Module, images: List[Path], device: str, score_thr: float, out_dir: Optional[Path] = None
) -> Predictions:
    """Each image's detections above ``score_thr``, in its own pixels; drawn into ``out_dir`` when given (made at
    the first drawing), each under the shortest ending of its path that tells it apart (``a/x.jpg`` and
    ``b/x.jpg`` stay so), a JPEG or PNG image as its own format, any other as PNG (``x.bmp.png``)."""
    results, failed, drawn = [], [0], 0
    names = short_names(map(str, images))
    for path, image in _readable(images, read_rgb, failed):
        with torch.inference_mode():
            detection = {k: v.cpu() for k, v in model([image.to(device).float().div(255)])[0].items()}
        found = detections_of(detection, model.label_map, score_thr)
        results.append({"image": str(path), "width": image.shape[-1], "height": image.shape[-2], "detections": found})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)  # only once there is something to draw
            jpeg = path.suffix.lower() in (".jpg", ".jpeg")
            name = names[str(path)] + ("" if jpeg or path.suffix.lower() == ".png" else ".png")
            buffer = io.BytesIO()
            draw(image, detection, model.label_map, score_thr).save(buffer, format="JPEG" if jpeg else "PNG")
            write_bytes_atomic(out_dir / name, buffer.getvalue())
            drawn += 1
    return Predictions(results, len(images), failed[0], drawn, names)


def detections_of(detection: Dict[str, torch.Tensor], label_map, score_thr: float) -> List[Dict[str, Any]]:
    """One image's detections above ``score_thr``: ``box`` [x1, y1, x2, y2], ``score``, ``label`` (the class name),
    ``category_id``, and ``segmentation`` (COCO RLE) for masks."""
    keep = detection["scores"] >= score_thr
    kept = {k: v[keep] for k, v in detection.items()}
    coco = to_coco_results(0, kept, label_map)
    out = []
    for result, box, label in zip(coco, kept["boxes"].tolist(), kept["labels"].tolist()):
        item = {
            "box": [round(v, 2) for v in box],
            "score": result["score"],
            "label": label_map.name(label),
            "category_id": result["category_id"],
        }
        if "segmentation" in result:
            item["segmentation"] = result["segmentation"]
        out.append(item)
    return out


def draw(image: torch.Tensor, detection: Dict[str, torch.Tensor], label_map, score_thr: float) -> Image.Image:
    """``image`` (uint8, 3xHxW) with the detections above ``score_thr`` drawn: masks, then boxes and labels."""
    keep = detection["scores"] >= score_thr
    boxes, scores, labels = detection["boxes"][keep], detection["scores"][keep], detection["labels"][keep]
    out = image
    if "masks" in detection and keep.any():
        out = draw_segmentation_masks(out, detection["masks"][keep][:, 0] > 0.5, alpha=0.45)
    if len(boxes):
        text = [f"{label_map.name(int(c))} {float(s):.2f}" for c, s in zip(labels, scores)]
        out = draw_bounding_boxes(out, boxes, labels=text, width=max(2, image.shape[-1] // 320))
    return Image.fromarray(out.permute(1, 2, 0).numpy())


def short_names(paths: Iterable[str]) -> Dict[str, str]:
    """Each path's shortest ending that tells it apart from the others: ``a/x.jpg`` and ``b/x.jpg`` stay so,
    ``a/y.jpg`` beside them is ``y.jpg``. The endings are of the absolute paths (``..`` resolved, no root), so that a
    drawing named by one stays inside its folder: ``x.jpg`` and ``../x.jpg`` are ``photos/x.jpg`` and ``x.jpg`` under
    the parent's name, never ``../x.jpg`` (the original's own path); a Windows drive is a part (``C/a/x.jpg`` and
    ``D/a/x.jpg``). One file given twice has one name."""
    parts = {}
    for p in paths:
        absolute = Path(os.path.abspath(p))
        parts[p] = (*re.findall(r"[^\\/:]+", absolute.drive), *absolute.parts[1:])
    distinct = set(parts.values())
    names: Dict[str, str] = {}
    depth = 1
    while len(names) < len(parts):  # one count per depth: linear in the images, not quadratic
        tails = Counter(own[-depth:] for own in distinct)
        for path, own in parts.items():
            if path not in names and (tails[own[-depth:]] == 1 or depth >= len(own)):
                names[path] = Path(*own[-depth:]).as_posix()
        depth += 1
    return names


def detection_line(result: Dict[str, Any], max_boxes: int, name: Optional[str] = None) -> str:
    """One image's text line (``name``: how to call the image; its file name by default): how many detections,
    the ``max_boxes`` best (label, score, box), how many more."""
    found = sorted(result["detections"], key=lambda d: -d["score"])
    items = ", ".join(
        f"{d['label']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]" for d in found[:max_boxes]
    )
    more = f", +{len(found) - max_boxes} more (the JSON output lists all)" if len(found) > max_boxes else ""
    return f"{name or Path(result['image']).name}: {len(found)} detections" + (f": {items}{more}" if items else "")
