"""Print the zoo: every registered ECA model with its kernel code, exact parameters, GMACs measured
at 224x224, the release's published figures in their binary units, the reported Top-1/Top-5, and
where its weights come from: here (cached, with source and date, or in ECA_MODELS_WEIGHTS_DIR), on the Hub,
the authors' own file (fetched on first use), or not published. --json for scripts."""

import argparse
import dataclasses
import json

from ..zoo import detector_rows, zoo_rows
from .common import UsageError

HELP = "list the models, their complexity, reported accuracy and weights"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", nargs="?", default="", help="wildcard filter, e.g. 'eca_resnet5*'")
    parser.add_argument("--json", action="store_true", help="print JSON rows instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = zoo_rows(args.pattern)
    detectors = detector_rows(args.pattern)
    if not rows and not detectors:
        raise UsageError(f"no model matches {args.pattern!r} (`eca-models list` shows them all)")
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in rows + detectors], indent=2))
        return 0
    header = ("model", "kernels", "params", "params/2^20", "GMACs@224", "published P / F", "Top-1", "Top-5", "weights")
    table = [header]
    for r in rows:
        published = f"{r.published_params} / {r.published_flops}" if r.published_params else "-"
        top = (f"{r.top1:.2f}", f"{r.top5:.2f}") if r.top1 is not None else ("-", "-")
        table.append(
            (r.model, r.kernel_code, f"{r.params:,}", r.params_binary, f"{r.gmacs:.3f}", published, *top, _weights(r))
        )
    if rows:
        _print_table(table)
    if detectors:
        print("" if rows else "", end="\n" if rows else "")
        header = (
            "detector",
            "kernels",
            "params",
            "release count",
            "GMACs@1280x800",
            "published P / F",
            "box AP",
            "mask AP",
            "weights",
        )
        table = [header]
        for r in detectors:
            mask = f"{r.mask_map:.1f}" if r.mask_map is not None else "-"
            table.append(
                (r.model, r.kernel_code, f"{r.params:,}", f"{r.release_params / 1e6:.2f}M", f"{r.gmacs:.2f}",
                 f"{r.published_params} / {r.published_flops}", f"{r.box_map:.1f}", mask, _weights(r))
            )  # fmt: skip
        _print_table(table)
    print(
        "\nparams: exact count. published P / F: the release README's Param and FLOPs, in binary units "
        "(P / 2^20, thop MACs / 2^30). GMACs@224: measured here with torch.utils.flop_counter (convs and "
        "matmuls, 1e9 MACs). Top-1/Top-5: the release README, ImageNet-1k val."
        + (
            " Detectors: release count = every parameter and frozen BatchNorm affine less the stem and layer1 (how "
            "the release counted, decimal M); published F = mmcv MACs at 1280x800 (decimal G, more layer types "
            "counted); GMACs@1280x800 = flop_counter on the same dummy forward; box/mask AP: COCO val2017, release README."
            if detectors
            else ""
        )
        + " weights: where pretrained=True takes them from: local (ECA_MODELS_WEIGHTS_DIR), cached (with its source "
        "and date), on the Hub, authors' file (fetched from the authors' Google Drive on first use, checked and "
        "converted; `eca-models download` does it ahead), or not published."
    )
    return 0


def _weights(row) -> str:
    return f"{row.weights} ({row.weights_source})" if row.weights_source else row.weights


def _print_table(table) -> None:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
