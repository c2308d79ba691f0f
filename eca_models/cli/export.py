"""Export a model for deployment: ONNX (checked with ONNX Runtime), TorchScript, or a torch.export program.

A classifier's file has a dynamic batch dimension; a detector's (ONNX or TorchScript) takes one image of any
size. The file carries the model's architecture, kernel code, preprocessing and classes (a fine-tuned run's own)
as metadata. It is loaded back and compared with PyTorch: a classifier's outputs at batch sizes 1 and 3, a
detector's detections on two real-sized images (or --check-image photos); the largest difference is printed, and
above --tolerance the file is not written and the command exits 1. In Python: eca_models.export.export(model,
format, out, **options).
"""

import argparse

from ..export import CHECK_BATCH_SIZES, FORMATS, export
from ..layers import ONNX_FORMS
from .common import add_num_classes_arg, positive_int

HELP = "export to ONNX, TorchScript or torch.export, checked against PyTorch"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for a registered name")
    add_num_classes_arg(parser)
    parser.add_argument("--no-weights", action="store_true", help="random weights (to try the export path)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="the file to write (.onnx, .pt, .pt2)")
    parser.add_argument("--img-size", type=positive_int, help="input height and width (default: the model's)")
    parser.add_argument(
        "--opset", type=positive_int, help="ONNX opset version (default 18, or newer; detectors: 17 only)"
    )
    parser.add_argument(
        "--onnx-form", choices=ONNX_FORMS, default="blocked",
        help="a classifier's ECA layers in ONNX: blocked (default; the form ONNX Runtime runs fastest, height and "
        "width fixed) or plain (the graph as PyTorch runs it)",
    )  # fmt: skip
    parser.add_argument(
        "--check-image", action="append", dest="images", default=[], metavar="IMAGE",
        help="detectors: check the file on this photo (repeatable; default two synthetic real-sized images)",
    )  # fmt: skip
    parser.add_argument(
        "--tolerance", type=float, default=1e-4, help="largest difference allowed, times max(1, largest |output|)"
    )


def run(args: argparse.Namespace) -> int:
    options = {
        k: getattr(args, k)
        for k in ("checkpoint", "num_classes", "img_size", "opset", "tolerance", "images", "onnx_form")
    }
    check = export(args.model, args.format, args.out, pretrained=not args.no_weights, **options)
    sizes = " and ".join(str(n) for n in CHECK_BATCH_SIZES)
    status = f"largest difference from PyTorch {check.max_abs_diff:.3g} at batch sizes {sizes}, {check.img_size} px"
    if check.detections is not None:
        status = f"largest difference from PyTorch {check.max_abs_diff:.3g} over {check.detections} detections"
        if not check.detections:
            print("eca-models export: warning: no detection to compare: pass --check-image with a photo of objects")
    if not check.passed:
        allowed = f"{check.allowed:.3g} (tolerance {args.tolerance:g} x largest output {check.scale:.3g})"
        print(f"eca-models export: FAIL: {status}, over the tolerance: {allowed}; {check.path} not written")
        return 1
    print(
        f"{check.path}: {args.format}, {status} (allowed {check.allowed:.3g}: tolerance {args.tolerance:g} x {check.scale:.3g})"
    )
    return 0
