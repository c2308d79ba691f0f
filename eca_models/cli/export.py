"""Export a model for deployment: ONNX (checked with ONNX Runtime), TorchScript, or a torch.export program.

The file has a dynamic batch dimension and carries the model's architecture, kernel code, preprocessing and
class names (a fine-tuned run's own) as metadata. It is loaded back and its outputs at batch sizes 1 and 3
are compared with PyTorch's; the largest difference is printed, and above --tolerance the file is not
written and the command exits 1.
"""

import argparse
from pathlib import Path

from timm.layers import set_layer_config

from ..detection.weights import is_detector_source
from ..export import CHECK_BATCH_SIZES, FORMATS, export_model
from ..files import check_output_file
from .common import UsageError, add_num_classes_arg, load_model, positive_int

HELP = "export to ONNX, TorchScript or torch.export, checked against PyTorch"
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for a registered name")
    add_num_classes_arg(parser)
    parser.add_argument("--no-weights", action="store_true", help="random weights (to try the export path)")
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, help="the file to write (.onnx, .pt, .pt2)")
    parser.add_argument("--img-size", type=positive_int, help="input height and width (default: the model's)")
    parser.add_argument("--opset", type=positive_int, default=18, help="ONNX opset version (default 18)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest absolute difference allowed")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(
            f"--out {out} is a folder; name the file to write (e.g. {out / 'model'}{SUFFIXES[args.format]})"
        )
    if not out.parent.is_dir():
        check_output_file(out, "--out")  # names a parent that is a file or cannot be written
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    check_output_file(out, "--out")
    if args.no_weights and args.checkpoint:
        raise UsageError("--no-weights and --checkpoint exclude each other")
    if is_detector_source(args.model):
        raise UsageError(
            f"{args.model} is a detector: export takes classifiers only for now (torchvision's detectors need their "
            "own ONNX path, not built yet); in Python, torch.export or TorchScript of the detector may serve"
        )
    if args.format == "onnx":
        require_onnx()
    with set_layer_config(exportable=True):  # plain operations: exporters cannot write autograd functions
        model = load_model(args.model, args.checkpoint, pretrained=not args.no_weights, num_classes=args.num_classes)
    img_size = args.img_size or model.pretrained_cfg["input_size"][-1]
    check = export_model(model, args.format, out, img_size, opset=args.opset, tolerance=args.tolerance)
    sizes = " and ".join(str(n) for n in CHECK_BATCH_SIZES)
    status = f"largest difference from PyTorch {check.max_abs_diff:.3g} at batch sizes {sizes}, {img_size} px"
    if not check.passed:
        print(f"eca-models export: FAIL: {status}, over the tolerance {args.tolerance:g}; {out} not written")
        return 1
    print(f"{out}: {args.format}, {status} (tolerance {args.tolerance:g})")
    return 0


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UsageError(f"ONNX export needs {e.name}: pip install 'eca-models[export]'") from None
