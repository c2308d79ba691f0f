"""Classify images: the top-k classes of each, by name (ImageNet names for ImageNet models, a
fine-tuned run's own class names), one line per image, or JSON with --json. For a detector (a detector name or
folder): its boxes, scores and class names per image, drawn with --out-dir (see :mod:`.predict_detection`)."""

import argparse
import json
import sys
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from timm.data import create_transform, resolve_data_config

from ..data.imagenet import imagenet_class_names
from ..detection.weights import is_detector_source
from .common import UsageError, load_model
from .predict_detection import run_detection

HELP = "print the top-k classes of images (detectors: their boxes, drawn with --out-dir)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for a registered name")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument("--score-thr", type=float, default=0.3, help="detectors: show detections scoring this or more")
    parser.add_argument("--out-dir", help="detectors: write each image with its detections drawn into this folder")
    parser.add_argument("--min-size", type=int, help="detectors: resize the shorter side to this (default 800)")
    parser.add_argument("--max-size", type=int, help="detectors: and the longer side to at most this (default 1333)")


def run(args: argparse.Namespace) -> int:
    if is_detector_source(args.model):
        return run_detection(args)
    if args.out_dir:
        raise UsageError("--out-dir draws detections: it goes with a detector (e.g. maskrcnn_eca_resnet50_fpn)")
    model = load_model(args.model, args.checkpoint).to(args.device)
    names = model.pretrained_cfg.get("label_names") or (imagenet_class_names() if model.num_classes == 1000 else None)
    if names is None:
        names = [str(i) for i in range(model.num_classes)]
    transform = create_transform(**resolve_data_config({}, model=model), is_training=False)
    k = min(args.top_k, model.num_classes)
    results, failed = [], 0
    for image in args.images:
        try:
            with Image.open(image) as img:
                x = transform(img.convert("RGB")).unsqueeze(0).to(args.device)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as e:
            print(
                f"eca-models predict: cannot read {image}: {str(e).splitlines()[0] if str(e) else type(e).__name__}",
                file=sys.stderr,
            )
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
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{Path(r['image']).name}: " + ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))
    return 2 if failed else 0  # an unreadable image is bad input: the rest are still reported
