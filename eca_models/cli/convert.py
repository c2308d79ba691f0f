"""Convert an authors' .pth.tar into a Hub-ready folder (model.safetensors, config.json, README.md),
explaining its kernel code, then reload the folder and check its logits equal the source's."""

import argparse

from ..weights.convert import convert_checkpoint

HELP = "convert an authors' .pth.tar to a safetensors Hub folder"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="the authors' checkpoint, e.g. eca_resnet50_k3557.pth.tar")
    parser.add_argument("--model", required=True, help="entrypoint the weights belong to, e.g. eca_resnet50_k3557")
    parser.add_argument("--out", required=True, help="folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--check-size", type=int, default=224, help="image size of the logits check (default 224)")


def run(args: argparse.Namespace) -> int:
    convert_checkpoint(args.src, args.model, args.out, overwrite=args.overwrite, check_size=args.check_size)
    return 0
