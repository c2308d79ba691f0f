"""Convert an authors' file into a Hub-ready folder (model.safetensors, config.json, README.md), explaining its
kernel code, then reload the folder and check it gives the same outputs: a classification ``.pth.tar`` for a
classifier, an mmdetection v1 ``.pth`` for a detector (``--model maskrcnn_eca_resnet50_fpn``)."""

import argparse

from ..conversion import convert
from .common import positive_int

HELP = "convert an authors' .pth.tar (or mmdetection v1 detector .pth) to a safetensors Hub folder"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the authors' checkpoint, e.g. eca_resnet50_k3557.pth.tar")
    parser.add_argument(
        "--model",
        required=True,
        help="what the weights belong to: a classifier (eca_resnet50_k3557) or a detector (maskrcnn_eca_resnet50_fpn)",
    )
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--check-size", type=positive_int, default=224, help="image size of the logits check (default 224)"
    )
    parser.add_argument(
        "--kernel-code",
        help="detectors: the kernel code you expect (the file's ECA tensors decide; a mismatch is an error)",
    )


def run(args: argparse.Namespace) -> int:
    convert(
        args.src,
        args.model,
        args.out,
        overwrite=args.overwrite,
        check_size=args.check_size,
        kernel_code=args.kernel_code,
    )
    return 0
