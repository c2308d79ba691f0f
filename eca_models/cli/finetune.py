"""Fine-tune an ECA model on your own class folders, or a detector on COCO-format data: resumable, on one machine
or many (torchrun).

A classifier gets a new classifier for your classes and timm's transforms, optimizer and scheduler; a detector
gets heads for your dataset's categories and the release's recipe (SGD, lr 0.02 per 16 images, warm-up, x0.1
after epochs 8 and 11 of 12). A checkpoint is written atomically after every epoch (and every N steps if asked,
and on Ctrl-C), validation runs after each epoch, and the best model is exported into the run folder as a
Hub-format folder (model.safetensors, config.json, README.md); the metrics are logged and the curves drawn.
In Python: eca_models.finetune(model, data, output=..., **options).
"""

import argparse

from ..training.finetune import RunInterrupted, finetune
from ..training.options import CLASSIFIER, DETECTOR, FinetuneOptions
from .common import add_detector_size_args, add_runtime_args, defaults_of, non_negative_int, positive_int

HELP = "fine-tune a classifier on your class folders (train/ and val/), or a detector on COCO-format data"
DEFAULTS = defaults_of(FinetuneOptions)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.set_defaults(**{k: v for k, v in DEFAULTS.items() if k not in ("model", "output")})
    parser.add_argument(
        "--model",
        required=True,
        help="architecture (eca_resnet50, maskrcnn_eca_resnet50_fpn, any timm CNN or torchvision detector with "
        "--add-eca, ...) or a fine-tuned / converted folder",
    )
    parser.add_argument(
        "--data",
        help="folder with train/ and val/ class folders (or class folders + --val-split); detectors: a COCO-layout "
        "root (annotations/instances_<split>.json beside <split>/)",
    )
    parser.add_argument(
        "--output", required=True, help="run folder: checkpoints, metrics, curves and the exported model"
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained", action="store_true", help="start from the ImageNet weights (default where they exist)"
    )
    weights.add_argument("--checkpoint", help="start from this weights file or folder (e.g. the authors' .pth.tar)")
    weights.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    parser.add_argument(
        "--add-eca", nargs="?", const="adaptive", metavar="CODE",
        help="put ECA where the paper does into --model (any timm CNN it supports, or the trunk of torchvision's "
        "fasterrcnn_/maskrcnn_/retinanet_ detectors): the adaptive rule, or a kernel code such as k3557; the "
        "model's own pretrained weights, the ECA layers new",
    )  # fmt: skip
    parser.add_argument("--epochs", type=positive_int, help="default 10; detectors 12, as released")
    add_runtime_args(parser, batch_size=None)
    parser.add_argument("--opt", help="timm optimizer name (default %(default)s; adamw, ...)")
    parser.add_argument("--lr", type=float, help="default 0.01; detectors 0.02 per 16 images, scaled to the batch")
    parser.add_argument("--momentum", type=float, help="(default %(default)s)")
    parser.add_argument("--weight-decay", type=float, help="(default %(default)s)")
    parser.add_argument("--hflip", type=float, help="horizontal flip probability (default %(default)s)")
    parser.add_argument("--save-every-steps", type=non_negative_int, help="also checkpoint every N steps")
    parser.add_argument("--seed", type=int, help="(default %(default)s)")
    _add_classifier_args(parser)
    _add_detector_args(parser)
    run_dir = parser.add_mutually_exclusive_group()
    run_dir.add_argument("--resume", action="store_true", help="continue the run in --output where it stopped")
    run_dir.add_argument("--overwrite", action="store_true", help="start over in an existing --output")


def _add_classifier_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"{CLASSIFIER}s only (eca_resnet50, eca_mobilenetv2, ...; refused for detectors)")
    group.add_argument("--val-split", type=float, help="hold out this fraction of each class when there is no val/")
    group.add_argument("--sched", help="timm scheduler name (default %(default)s; step, ...)")
    group.add_argument("--warmup-epochs", type=non_negative_int, help="(default %(default)s)")
    group.add_argument("--img-size", type=positive_int, help="(default %(default)s)")
    group.add_argument("--scale", type=float, nargs=2, help="random-resized-crop area range (default 0.08 1)")
    group.add_argument("--smoothing", type=float, help="label smoothing (default %(default)s)")
    group.add_argument("--mixup", type=float, help="mixup alpha (default %(default)s: off)")
    group.add_argument("--cutmix", type=float, help="cutmix alpha (default %(default)s: off)")
    group.add_argument("--drop-rate", type=float, help="dropout before the classifier (default: the model's)")
    group.add_argument("--drop-path-rate", type=float, help="(default %(default)s)")
    group.add_argument("--freeze-backbone", action="store_true", help="train the classifier only")


def _add_detector_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(f"{DETECTOR}s only (maskrcnn_eca_resnet50_fpn, ...; refused for classifiers)")
    group.add_argument("--train-annotations", help="the training split's COCO instances JSON (instead of --data)")
    group.add_argument("--train-images", help="its image folder")
    group.add_argument("--val-annotations", help="the validation split's COCO instances JSON")
    group.add_argument("--val-images", help="its image folder")
    group.add_argument(
        "--weights-backbone",
        metavar="FILE",
        help="start the trunk from ImageNet weights: the authors' .pth.tar, or for torchvision's detectors the name "
        "of torchvision's (DEFAULT)",
    )
    add_detector_size_args(group, prefix="")
    group.add_argument("--warmup-iters", type=non_negative_int, help="linear warm-up from lr/3 (default %(default)s)")
    group.add_argument(
        "--trainable-backbone-layers", type=int, choices=range(6),
        help="trunk stages trained, from layer4 (default %(default)s: stem and layer1 frozen, as released)",
    )  # fmt: skip
    group.add_argument(
        "--lr-steps",
        type=positive_int,
        nargs="+",
        help="epochs after which lr x0.1 (default 8 11 of 12, scaled to --epochs)",
    )


def run(args: argparse.Namespace) -> int:
    options = {k: getattr(args, k) for k in DEFAULTS if hasattr(args, k) and k not in ("model", "data", "output")}
    try:
        finetune(args.model, args.data, output=args.output, **options)
    except RunInterrupted:
        return 130  # the runner said where it stopped and how to continue
    return 0
