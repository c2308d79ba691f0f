"""Classify images: the top-k classes of each, by name (ImageNet names for ImageNet models, a fine-tuned run's own
class names), one line per image, or JSON with --json. A folder stands for every image under it, sorted. For a
detector (a detector name or folder): its boxes, scores and class names per image, drawn with --out-dir.
In Python: eca_models.predict(images, model, **options)."""

import argparse
import json
import sys

from ..prediction import detection_line, predict
from ..runtime import default_device
from .common import add_detector_size_args, add_num_classes_arg, positive_int, probability

HELP = "print the top-k classes of images (detectors: their boxes, drawn with --out-dir)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images", nargs="+", help="image files, folders (every image under them, sorted) or wildcard patterns"
    )
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for a registered name")
    add_num_classes_arg(parser)
    parser.add_argument("--top-k", type=positive_int, default=5)
    parser.add_argument("--device", default=default_device())
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--score-thr", type=probability, default=0.3, help="detectors: show detections scoring this or more (0-1)"
    )
    parser.add_argument("--out-dir", help="detectors: write each image with its detections drawn into this folder")
    parser.add_argument(
        "--max-boxes", type=positive_int, default=5, help="detectors: boxes per image in the text lines (--json: all)"
    )
    add_detector_size_args(parser)


def run(args: argparse.Namespace) -> int:
    options = ("checkpoint", "num_classes", "top_k", "device", "score_thr", "out_dir", "min_size", "max_size")
    found = predict(args.images, args.model, **{k: getattr(args, k) for k in options})
    if args.json:
        print(json.dumps(found.results, indent=2))
    else:
        names = found.names  # a/x.jpg and b/x.jpg told apart, as their drawings are
        for r in found.results:
            if "detections" in r:
                print(detection_line(r, args.max_boxes, names[r["image"]]))
            else:
                top = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
                print(f"{names[r['image']]}: {top}")
    if found.drawn:
        print(f"drawn {found.drawn} images in {args.out_dir}", file=sys.stderr)
    if found.unreadable:
        print(
            f"eca-models predict: {found.unreadable} of {found.images} images could not be read (named above)",
            file=sys.stderr,
        )
    return 2 if found.unreadable else 0  # an unreadable image is bad input: the rest are still reported
