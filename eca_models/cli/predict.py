"""Classify images: the top-k classes of each, by name (ImageNet names for ImageNet models, a
fine-tuned run's own class names), one line per image, or JSON with --json. A folder stands for every image
under it, sorted. For a detector (a detector name or folder): its boxes, scores and class names per image, drawn
with --out-dir (see eca_models.cli.predict_detection)."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
from timm.data import create_transform, resolve_data_config
from tqdm import tqdm

from ..data.imagenet import imagenet_class_names
from ..data.images import IMAGE_ERRORS, find_images, open_rgb, reason
from ..detection.weights import is_detector_source
from ..files import check_output_folder
from .common import UsageError, add_num_classes_arg, load_model, positive_int, probability
from .predict_detection import BAR_FROM, run_detection, unreadable_status

HELP = "print the top-k classes of images (detectors: their boxes, drawn with --out-dir)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files, or folders (every image under them, sorted)")
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for a registered name")
    add_num_classes_arg(parser)
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--score-thr", type=probability, default=0.3, help="detectors: show detections scoring this or more (0-1)"
    )
    parser.add_argument("--out-dir", help="detectors: write each image with its detections drawn into this folder")
    parser.add_argument(
        "--max-boxes", type=positive_int, default=5, help="detectors: boxes per image in the text lines (--json: all)"
    )
    parser.add_argument(
        "--min-size", type=positive_int, help="detectors: resize the shorter side to this (default 800)"
    )
    parser.add_argument(
        "--max-size", type=positive_int, help="detectors: and the longer side to at most this (default 1333)"
    )


def run(args: argparse.Namespace) -> int:
    images = find_images(args.images)
    if not images:
        raise UsageError(f"no images found in {', '.join(args.images)}")
    if is_detector_source(args.model):
        if args.out_dir:
            check_output_folder(args.out_dir, "--out-dir")
        return run_detection(args, images)
    if args.out_dir:
        raise UsageError("--out-dir draws detections: it goes with a detector (e.g. maskrcnn_eca_resnet50_fpn)")
    model = load_model(args.model, args.checkpoint, num_classes=args.num_classes).to(args.device)
    results, failed = predict_classes(model, images, args.top_k, args.device)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{Path(r['image']).name}: " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    return unreadable_status(failed, len(images))


def predict_classes(
    model: torch.nn.Module, images: List[Path], top_k: int, device: str
) -> "tuple[List[Dict[str, Any]], int]":
    """The ``top_k`` classes of each image (by name, index and probability), and how many could not be read (each
    named on stderr)."""
    names = model.pretrained_cfg.get("label_names") or (imagenet_class_names() if model.num_classes == 1000 else None)
    if names is None:
        names = [str(i) for i in range(model.num_classes)]
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    k = min(top_k, model.num_classes)
    results, failed = [], 0
    for image in tqdm(images, desc="predict", unit="img", disable=len(images) < BAR_FROM, leave=False):
        try:
            x = transform(open_rgb(image)).unsqueeze(0).to(device)
        except IMAGE_ERRORS as e:
            tqdm.write(f"eca-models predict: cannot read {image}: {reason(e)}", file=sys.stderr)
            failed += 1
            continue
        with torch.inference_mode():
            probs = model(x).float().softmax(dim=1)[0]
        top = probs.topk(k)
        results.append(
            {
                "image": str(image),
                "top": [
                    {"class": names[i], "index": int(i), "prob": round(float(p), 4)}
                    for p, i in zip(top.values, top.indices)
                ],
            }
        )
    return results, failed
