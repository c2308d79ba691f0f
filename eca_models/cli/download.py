"""Fetch release checkpoints into the cache, ready for pretrained=True: from the Hub where published, else the
authors' own Google Drive files, each checked, converted to safetensors and cached (see the weights guide). The
second time, nothing is fetched. --to DIR also copies the converted folders there (for ECA_MODELS_WEIGHTS_DIR or
another machine)."""

import argparse

from ..weights.fetch import download_checkpoints
from ..weights.release import SOURCES

HELP = "fetch release checkpoints (Hub, else the authors' Drive files), verified and cached as safetensors"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", help="checkpoints or models (eca_resnet50, maskrcnn_eca_resnet50_fpn, ...)")
    parser.add_argument("--all", action="store_true", help="every checkpoint of the manifest")
    parser.add_argument("--source", choices=SOURCES, help="fetch only from here (default: ECA_MODELS_SOURCES, or both)")
    parser.add_argument("--to", help="also copy each converted folder into this folder, as <checkpoint>/")
    parser.add_argument("--keep-original", action="store_true", help="keep the authors' downloaded file in the cache")


def run(args: argparse.Namespace) -> int:
    for result in download_checkpoints(
        args.names, all=args.all, source=args.source, to=args.to, keep_original=args.keep_original
    ):
        print(f"{result.checkpoint}: {result.state} {result.folder}")
    return 0
