"""Upload a converted folder to the Hugging Face Hub with huggingface_hub, then record the commit,
sha256 and size in the weights manifest so pretrained=True downloads exactly that file."""

import argparse

from ..weights.publish import publish_folder

HELP = "upload a converted folder to the Hub and pin it in the manifest"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a folder written by `eca-models convert`")
    parser.add_argument("--repo", required=True, help="Hub repo, ORG/NAME")
    parser.add_argument("--dry-run", action="store_true", help="show what would be uploaded and recorded")
    parser.add_argument("--manifest", default=None, help="manifest file to update (default: the package's)")


def run(args: argparse.Namespace) -> int:
    publish_folder(args.folder, args.repo, dry_run=args.dry_run, manifest_path=args.manifest)
    return 0
