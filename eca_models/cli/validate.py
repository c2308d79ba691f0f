"""Check checkpoints' Top-1/Top-5 on ImageNet val (detectors: COCO box / mask AP) against the reported numbers.

For each model: load it (Hub, --checkpoint, or a converted / fine-tuned folder), read the val images in either
layout with their global labels, apply the evaluation protocol of its pretrained cfg, measure, and report measured
vs reported with a 95% interval, the complexity beside the published figures, and a verdict. Exit status: 0 PASS,
1 FAIL, 2 bad usage or nothing scored. Runs on CPU or CUDA, alone or under torchrun (every image counted exactly
once). Detectors (a detector name or folder) are scored on COCO-format data: box AP and mask AP must be within
--tolerance of the release's on all of val2017 (5,000 images); on a subset the figures are measured only.
In Python: eca_models.validate(models, data, **options).
"""

import argparse

from .. import distributed
from ..evaluation.report import format_report
from ..evaluation.validate import ValidateOptions, Validation, validate
from .common import add_detector_size_args, add_num_classes_arg, add_runtime_args, defaults_of, positive_int

HELP = "measure Top-1/Top-5 on ImageNet val (detectors: COCO AP) and check them against the reported numbers"
DEFAULTS = defaults_of(ValidateOptions)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", nargs="+", required=True, help="names or patterns ('eca_resnet*'), or a model folder"
    )
    parser.add_argument(
        "--checkpoint", help="weights file or folder (authors' .pth.tar, model.safetensors, converted folder)"
    )
    parser.add_argument(
        "--data",
        required=True,
        help="val folder: one sub-folder per WordNet id, or flat images + --labels; detectors: a COCO-layout root "
        "(annotations/instances_val2017.json, val2017/) or an image folder + --annotations",
    )
    parser.add_argument("--annotations", help="detectors: the COCO instances JSON of the --data images")
    parser.add_argument("--predictions", help="detectors: also write the predictions here (COCO results JSON)")
    add_detector_size_args(parser)
    parser.add_argument(
        "--labels",
        help="ground truth of a flat folder: LOC_val_solution.csv (found in or above it by default), lines "
        "'file label_index', 'file wnid' or 'file wnid label_index', or a WordNet id a line in val's order",
    )
    add_runtime_args(parser, batch_size=DEFAULTS["batch_size"])
    add_num_classes_arg(parser)
    parser.add_argument("--limit", type=positive_int, help="score only N images, spread evenly over the set")
    parser.add_argument("--img-size", type=positive_int, help="crop size (default: the pretrained cfg's, 224)")
    parser.add_argument("--crop-pct", type=float, help="crop fraction (default: 0.875, i.e. resize 256)")
    parser.add_argument("--interpolation", help="resize interpolation (default: bilinear)")
    parser.add_argument("--mean", type=float, nargs=3, help="normalisation mean")
    parser.add_argument("--std", type=float, nargs=3, help="normalisation std")
    parser.add_argument(
        "--tolerance",
        type=float,
        help="allowed points off on the full set (default 0.3 Top-1/Top-5 points; detectors 0.5 AP points)",
    )
    parser.add_argument("--on-error", choices=("skip", "fail"), default="skip", help="unreadable images: count or stop")
    parser.add_argument("--results-file", help="write one row per model: .json or .csv")
    parser.add_argument(
        "--record", action="store_true", help="write a full-val-set measurement into the weights manifest"
    )


def run(args: argparse.Namespace) -> int:
    """Validate every model asked for. Several models (a pattern, or names): one that cannot be loaded is skipped
    with one line and the rest are validated and written; exit 2 only if none could be. Exit 1 if any FAILs, 2 if
    any scored no image."""
    options = {k: getattr(args, k) for k in DEFAULTS}

    def show(validation: Validation) -> None:
        print(format_report(validation, args.results_file, args.predictions))

    result = validate(args.model, args.data, on_result=show, **options)
    if result.skipped and distributed.is_main():
        print(
            f"\nvalidated {len(result.validations)} of {len(result.names)} models; skipped {len(result.skipped)}: "
            f"{', '.join(result.skipped)}"
        )
    return result.status
