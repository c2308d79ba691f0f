"""Measure, side by side and interleaved, the plain ResNet, SE-ResNet, CBAM-ResNet, timm's ECA path
and our ECA-ResNet of one depth (or plain and ECA MobileNetV2): exact parameters and GMACs, training
and inference images/s with their spread and ratio to the plain model, the paper's Table 3 ratios
beside them, and the time to load a checkpoint from safetensors against the authors' pickle. In Python:
eca_models.benchmark.benchmark(backbone, **options) and benchmark_detector(name, **options)."""

import argparse
from types import SimpleNamespace

from ..benchmark import BACKBONES, benchmark, benchmark_detector
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
        "--onnxruntime", action="store_true", help="also time inference of each model exported to ONNX, in ONNX Runtime"
    )
    parser.add_argument(
        "--reps", type=positive_int, default=5, help="timed repetitions per model (the median is reported)"
    )
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repetitions first")
    parser.add_argument("--iters", type=positive_int, default=1, help="steps per timed repetition")
    parser.add_argument("--no-train", action="store_true", help="time inference only")
    parser.add_argument(
        "--keep-memory",
        action="store_true",
        help="glibc: reuse freed memory instead of faulting fresh pages in every step (less noise)",
    )
    parser.add_argument("--results-file", help="write the results as JSON")
    parser.add_argument("--plot", help="draw the images/s ratios as a bar chart (PNG)")


def run(args: argparse.Namespace) -> int:
    def announce(settings) -> None:
        print("settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()))

    if args.detector:
        return _run_detector(args, announce)
    options = ("device", "img_size", "channels_last", "amp", "compile", "trace", "onnxruntime", "reps", "warmup")
    options += ("iters", "keep_memory", "results_file", "plot", "add_eca")
    batch = 32 if args.batch_size is None else args.batch_size
    report = benchmark(
        args.backbone, batch_size=batch, train=not args.no_train, announce=announce,
        **{k: getattr(args, k) for k in options},
    )  # fmt: skip
    results = [SimpleNamespace(**r) for r in report["models"]]
    loading = report["loading"]
    _print_table(results, not args.no_train, args.onnxruntime)
    if loading:
        print(
            f"\nloading {results[-1].name} ({loading['file_mb']:.1f} MiB): safetensors {1000 * loading['safetensors']:.1f} ms, "
            f"authors' pickle (torch.load weights_only=True) {1000 * loading['pickle']:.1f} ms"
        )
    for path in (args.results_file, args.plot):
        if path:
            print(f"wrote {path}")
    return 0


def _print_table(results, train: bool, onnxruntime: bool = False) -> None:
    header = ["model", "params", "/2^20", "GMACs", "infer img/s", "spread", "ratio", "95% interval", "paper"]
    if train:
        header += ["train img/s", "spread", "ratio", "95% interval", "paper"]
    if onnxruntime:
        header += ["ORT img/s", "spread", "ratio", "95% interval"]
    rows = [header]
    for r in results:
        row = [
            r.name,
            f"{r.params:,}",
            f"{r.params / 2**20:.2f}M",
            f"{r.gmacs:.3f}",
            f"{r.infer_img_s:.1f}",
            f"{r.infer_spread:.1f}%",
        ]
        row += [f"{r.infer_ratio:.3f}", _interval(r.infer_ratio_interval)]
        row += [f"{r.paper_infer_ratio:.3f}" if r.paper_infer_ratio else "-"]
        if train:
            row += [f"{r.train_img_s:.1f}", f"{r.train_spread:.1f}%", f"{r.train_ratio:.3f}"]
            row += [_interval(r.train_ratio_interval), f"{r.paper_train_ratio:.3f}" if r.paper_train_ratio else "-"]
        if onnxruntime:
            row += [f"{r.ort_img_s:.1f}", f"{r.ort_spread:.1f}%", f"{r.ort_ratio:.3f}", _interval(r.ort_ratio_interval)]
        rows.append(row)
    _print_rows(rows)
    print(
        "ratio: images/s relative to the plain model (first row), the median over repetitions of the ratio within one;"
        " paper: the same ratio in the paper's Table 3 (2080Ti GPUs)."
    )
    print(
        "95% interval: of that median, from the order statistics of the ratios (no assumption on their distribution);"
        " '-' below 6 repetitions. Where it spans a difference, this run does not resolve it."
    )
    print(
        "spread: (max - min) / median over the timed repetitions. GMACs: torch.utils.flop_counter, 1e9 MACs per image."
    )
    if onnxruntime:
        print("ORT: inference of each model exported to ONNX (plain operations), in ONNX Runtime's CPU provider.")


def _interval(interval) -> str:
    return f"{interval[0]:.3f}-{interval[1]:.3f}" if interval else "-"


def _run_detector(args: argparse.Namespace, announce) -> int:
    unused = [
        f for f in ("compile", "trace", "onnxruntime", "channels_last", "keep_memory", "plot") if getattr(args, f)
    ]
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} is for the classifiers' benchmark, not --detector")
    batch = 1 if args.batch_size is None else args.batch_size
    report = benchmark_detector(
        args.detector, device=args.device, batch_size=batch, det_size=tuple(args.det_size), amp=args.amp,
        reps=args.reps, warmup=args.warmup, results_file=args.results_file, announce=announce,
    )  # fmt: skip
    rows = [("detector", "params", "release count", "GMACs@1280x800", "infer img/s", "ratio", "95% interval")]
    for i, r in enumerate(SimpleNamespace(**r) for r in report["detectors"]):  # the plain one's ratio is 1: no interval
        rows.append((r.name, f"{r.params:,}", f"{r.release_params / 1e6:.3f}M", f"{r.gmacs:.2f}", f"{r.img_s:.3f}",
                     f"{r.ratio:.3f}", _interval(r.ratio_interval) if i else "-"))  # fmt: skip
    _print_rows(rows)
    print(
        "release count: every parameter and frozen BatchNorm affine less the stem and layer1 (the release's Param). "
        "GMACs: torch.utils.flop_counter on the release's dummy forward at 1280x800 (the paper's GFLOPs are mmcv's "
        "count of the same, with more layer types). ratio: images/s against the plain detector (first row), the median "
        "of the per-repetition ratios; its 95% interval needs 6 repetitions or more."
    )
    if args.results_file:
        print(f"wrote {args.results_file}")
    return 0


def _print_rows(rows) -> None:
    """A table: the first column left-aligned, the figures right-aligned, after a blank line."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for row in rows:
        print("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))))
