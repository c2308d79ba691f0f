"""Measure, side by side and interleaved, the plain ResNet, SE-ResNet, CBAM-ResNet, timm's ECA path
and our ECA-ResNet of one depth (or plain and ECA MobileNetV2): exact parameters and GMACs, training
and inference images/s with their spread and ratio to the plain model, the paper's Table 3 ratios
beside them, and the time to load a checkpoint from safetensors against the authors' pickle. In Python:
eca_models.benchmark.benchmark(backbone, **options) and benchmark_detector(name, **options)."""

import argparse

from ..benchmark import BACKBONES, benchmark, benchmark_detector
from ..benchmark.classification import RUNTIMES
from ..benchmark.tables import classifier_table, detector_table
from ..layers import ONNX_FORMS
from .common import UsageError, non_negative_int, positive_int

HELP = "time plain, SE, CBAM and ECA models side by side (the paper's Table 3)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone",
        default="resnet50",
        help=f"{', '.join(BACKBONES)}; with --add-eca, any timm model (default %(default)s)",
    )
    parser.add_argument(
        "--add-eca", nargs="?", const="adaptive", metavar="CODE",
        help="time --backbone without and with eca_models.add_eca (the adaptive rule, or a kernel code such as k3557)",
    )  # fmt: skip
    parser.add_argument(
        "--models", nargs="+", metavar="NAME",
        help="time only these of the comparison's models, e.g. resnet50 eca_resnet50 (the plain one is always timed)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch-size", type=positive_int, help="images per step (default 32; detectors 1)")
    parser.add_argument(
        "--detector", help="time this detector (maskrcnn_eca_resnet50_fpn, ...) against its plain ResNet twin instead"
    )
    parser.add_argument(
        "--det-size", type=positive_int, nargs=2, default=(800, 1216), metavar=("H", "W"),
        help="detectors: the input's height and width (default 800 1216, a COCO image at the release's scale)",
    )  # fmt: skip
    parser.add_argument("--img-size", type=positive_int, default=224)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--amp", action="store_true", help="mixed precision (float16 on CUDA, bfloat16 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every model")
    parser.add_argument("--trace", action="store_true", help="torch.fx.symbolic_trace every model (FX tools' path)")
    parser.add_argument(
        "--runtime", nargs="+", choices=RUNTIMES, default=["torch"], dest="runtimes", metavar="RUNTIME",
        help="where to time the models, one or more of: torch (default; inference and training), onnxruntime, "
        "openvino (inference of each model exported to ONNX)",
    )  # fmt: skip
    parser.add_argument(
        "--onnx-form", choices=ONNX_FORMS, default="blocked",
        help="how ECA layers are written to ONNX for --runtime onnxruntime / openvino (default %(default)s)",
    )  # fmt: skip
    parser.add_argument(
        "--reps", type=positive_int, default=5, help="timed repetitions per model (the median is reported)"
    )
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repetitions first")
    parser.add_argument("--iters", type=positive_int, default=1, help="steps per timed repetition")
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    parser.add_argument(
        "--keep-memory", action="store_true",
        help="glibc: reuse freed memory instead of faulting fresh pages in every step (less noise)",
    )  # fmt: skip
    parser.add_argument("--results-file", help="write the results as JSON (a .json file)")
    parser.add_argument("--plot", help="draw the images/s ratios as a bar chart (a .png file)")


def run(args: argparse.Namespace) -> int:
    def announce(settings) -> None:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    if args.detector:
        return _run_detector(args, announce)
    options = ("device", "img_size", "channels_last", "amp", "compile", "trace", "runtimes", "onnx_form", "reps")
    options += ("warmup", "iters", "keep_memory", "results_file", "plot", "add_eca", "models")
    batch = 32 if args.batch_size is None else args.batch_size
    report = benchmark(
        args.backbone, batch_size=batch, train=not args.no_train, announce=announce,
        **{k: getattr(args, k) for k in options},
    )  # fmt: skip
    print(classifier_table(report["models"], not args.no_train, args.runtimes))
    loading = report["loading"]
    if loading:
        print(
            f"\nloading {report['models'][-1]['name']} ({loading['file_mb']:.1f} MiB): safetensors {1000 * loading['safetensors']:.1f} ms, "
            f"authors' pickle (torch.load weights_only=True) {1000 * loading['pickle']:.1f} ms"
        )
    for path in (args.results_file, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


def _run_detector(args: argparse.Namespace, announce) -> int:
    unused = [f for f in ("compile", "trace", "channels_last", "keep_memory", "plot") if getattr(args, f)]
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} is for the classifiers' benchmark, not --detector")
    batch = 1 if args.batch_size is None else args.batch_size
    report = benchmark_detector(
        args.detector, device=args.device, batch_size=batch, det_size=tuple(args.det_size), amp=args.amp,
        reps=args.reps, warmup=args.warmup, runtimes=args.runtimes, results_file=args.results_file, announce=announce,
    )  # fmt: skip
    print(detector_table(report["detectors"]))
    if args.results_file:
        print(f"wrote {args.results_file}")
    return 0
