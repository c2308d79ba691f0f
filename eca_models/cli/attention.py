"""Draw what ECA learns, as in the paper's Figure 6: for chosen blocks, the average channel weight of each chosen
class and of all images, one panel per block; with --compare, the SE-ResNet's weights in the same layout beside
them. The averaged arrays are saved next to the figure (.npz). In Python: eca_models.attention_figure(...)."""

import argparse
import sys

from ..attention import attention_figure
from ..runtime import default_device
from .common import add_num_classes_arg, positive_int

HELP = "plot per-class channel weights of ECA blocks (the paper's Figure 6)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for --model")
    parser.add_argument("--data", required=True, help="images in class folders (WordNet ids for ImageNet models)")
    parser.add_argument(
        "--classes", nargs="+", help="classes to plot: folder names or class indices (default: the first 4 present)"
    )
    parser.add_argument(
        "--blocks", nargs="+", help="blocks to plot, e.g. layer2.1 layer4.2 (default: the last block of each stage)"
    )
    parser.add_argument("--out", required=True, help="figure file (.png); the arrays go beside it as .npz and .json")
    parser.add_argument("--compare", help="a timm SE model to show beside, e.g. seresnet50")
    parser.add_argument("--compare-checkpoint", help="weights for --compare")
    parser.add_argument("--img-size", type=positive_int, help="input size (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    add_num_classes_arg(parser)
    parser.add_argument("--device", default=default_device())


def run(args: argparse.Namespace) -> int:
    options = ("checkpoint", "num_classes", "classes", "blocks", "compare", "compare_checkpoint", "img_size")
    options += ("batch_size", "device")
    figure = attention_figure(args.model, args.data, args.out, **{k: getattr(args, k) for k in options})
    out = figure.figure
    print(f"wrote {out}, {out.with_suffix('.npz')} and {out.with_suffix('.json')}")
    if figure.unreadable:
        print(
            f"eca-models attention: {len(figure.unreadable)} of {figure.images} images could not be read and were "
            "left out (named above)",
            file=sys.stderr,
        )
    return 0
