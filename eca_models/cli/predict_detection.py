"""``eca-models predict`` for detectors: per image the boxes (in the image's own pixels), scores and class names;
``--json`` for a list of detections per image (with RLE masks for Mask R-CNN), ``--out-dir`` for the images with
their boxes and masks drawn (torchvision's drawing utilities)."""

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks
from tqdm import tqdm

from ..data.images import IMAGE_ERRORS, reason
from ..detection.coco import read_rgb
from ..detection.evaluation import to_coco_results
from ..files import write_bytes_atomic
from .common import load_detector_model

BAR_FROM = 20  # images: a progress bar (on stderr) from this many on


def detector_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    """The builder arguments the command's --min-size / --max-size ask for."""
    return {k: v for k, v in (("min_size", args.min_size), ("max_size", args.max_size)) if v}


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


def run_detection(args: argparse.Namespace, images: List[Path]) -> int:
    model = load_detector_model(args.model, args.checkpoint, **detector_kwargs(args)).to(args.device)
    out_dir = Path(args.out_dir) if args.out_dir else None
    results, failed, drawn = [], 0, 0
    for path in tqdm(images, desc="predict", unit="img", disable=len(images) < BAR_FROM, leave=False):
        try:
            image = read_rgb(path)
        except IMAGE_ERRORS as e:
            tqdm.write(f"eca-models predict: cannot read {path}: {reason(e)}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            detection = {k: v.cpu() for k, v in model([image.to(args.device).float().div(255)])[0].items()}
        found = detections_of(detection, model.label_map, args.score_thr)
        results.append({"image": str(path), "width": image.shape[-1], "height": image.shape[-2], "detections": found})
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)  # only once there is something to draw
            buffer = io.BytesIO()
            suffix = Path(path).suffix.lower() if Path(path).suffix.lower() in (".jpg", ".jpeg", ".png") else ".png"
            draw(image, detection, model.label_map, args.score_thr).save(
                buffer, format="JPEG" if suffix != ".png" else "PNG"
            )
            write_bytes_atomic(out_dir / (Path(path).stem + suffix), buffer.getvalue())
            drawn += 1
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(detection_line(r, args.max_boxes))
    if drawn:
        print(f"drawn {drawn} images in {out_dir}", file=sys.stderr)
    return unreadable_status(failed, len(images))


def unreadable_status(failed: int, total: int) -> int:
    """Say how many images could not be read (each was named as it failed); the exit status: 2 if any."""
    if failed:
        print(f"eca-models predict: {failed} of {total} images could not be read (named above)", file=sys.stderr)
    return 2 if failed else 0  # an unreadable image is bad input: the rest are still reported


def detection_line(result: Dict[str, Any], max_boxes: int) -> str:
    """One image's text line: how many detections, the ``max_boxes`` best (label, score, box), how many more."""
    found = sorted(result["detections"], key=lambda d: -d["score"])
    items = ", ".join(
        f"{d['label']} {d['score']:.2f} [{', '.join(f'{v:.0f}' for v in d['box'])}]" for d in found[:max_boxes]
    )
    more = f", +{len(found) - max_boxes} more (--json lists all)" if len(found) > max_boxes else ""
    return f"{Path(result['image']).name}: {len(found)} detections" + (f": {items}{more}" if items else "")
