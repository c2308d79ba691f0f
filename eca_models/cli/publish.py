"""Upload a converted folder to the Hugging Face Hub with huggingface_hub, then record the commit,
sha256 and size in the weights manifest so pretrained=True downloads exactly that file. --all-cached publishes
every release file `eca-models download` converted, each to its manifest repo, and records the original's
sha256 and size beside the Hub pin."""

import argparse

from ..weights.publish import publish_cached, publish_folder
from .common import UsageError

HELP = "upload a converted folder to the Hub and pin it in the manifest"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", nargs="?", help="a folder written by `eca-models convert` (or finetune)")
    parser.add_argument("--repo", help="Hub repo, ORG/NAME (with a folder)")
    parser.add_argument(
        "--all-cached", action="store_true", help="every cached conversion of the authors' files, to its manifest repo"
    )
    parser.add_argument("--dry-run", action="store_true", help="show what would be uploaded and recorded")
    parser.add_argument("--manifest", default=None, help="manifest file to update (default: the package's)")


def run(args: argparse.Namespace) -> int:
    if args.all_cached:
        if args.folder or args.repo:
            raise UsageError("--all-cached publishes the cache to the manifest's repos: drop the folder and --repo")
        publish_cached(dry_run=args.dry_run, manifest_path=args.manifest)
        return 0
    if not (args.folder and args.repo):
        raise UsageError("name a folder and --repo ORG/NAME, or pass --all-cached")
    publish_folder(args.folder, args.repo, dry_run=args.dry_run, manifest_path=args.manifest)
    return 0
