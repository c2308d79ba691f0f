"""Check checkpoints' Top-1/Top-5 on ImageNet val (detectors: COCO box / mask AP) against the reported numbers.

For each model: load it (Hub, --checkpoint, or a converted / fine-tuned folder), read the val
images in either layout with their global labels, apply the evaluation protocol of its
pretrained cfg, measure, and report measured vs reported with a 95% interval, the complexity
beside the published figures, and a verdict. Exit status: 0 PASS, 1 FAIL, 2 bad usage.
Runs on CPU or CUDA, alone or under torchrun (every image counted exactly once). Detectors (a detector name or
folder) are scored on COCO-format data instead: see :mod:`.validate_detection`.
"""

import argparse
import csv
import fnmatch
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from timm.data import create_transform, resolve_data_config

from .. import distributed
from ..complexity import count_macs, count_params
from ..data.imagenet import imagenet_samples
from ..data.images import ImageListDataset, ShardSampler, subset
from ..detection import list_detectors
from ..detection.weights import is_detector_source
from ..evaluation import IMAGENET_VAL_SIZE, NOT_SCORED, evaluate, verdict, wilson_interval
from ..factory import class_labels
from ..files import check_output_file, write_text_atomic
from ..weights import binary_units, find_checkpoint, weights_location
from ..weights.manifest import update_manifest
from ..zoo import list_models
from .common import ModelUnavailable, UsageError, add_num_classes_arg, add_runtime_args, load_model, positive_int
from .validate_detection import run_detection

HELP = "measure Top-1/Top-5 on ImageNet val (detectors: COCO AP) and check them against the reported numbers"


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
    parser.add_argument(
        "--min-size", type=positive_int, help="detectors: resize the shorter side to this (default 800)"
    )
    parser.add_argument(
        "--max-size", type=positive_int, help="detectors: and the longer side to at most this (default 1333)"
    )
    parser.add_argument(
        "--labels",
        help="ground truth of a flat folder: LOC_val_solution.csv, or lines 'file label_index', 'file wnid' or "
        "'file wnid label_index'",
    )
    add_runtime_args(parser, batch_size=64)
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
    names = _expand_models(args.model)
    if args.checkpoint and len(names) > 1:
        raise UsageError(
            "--checkpoint goes with one model; for several, set ECA_MODELS_WEIGHTS_DIR to converted folders"
        )
    if args.results_file and Path(args.results_file).suffix.lower() not in (".json", ".csv"):
        raise UsageError(f"--results-file must end in .json or .csv, got {args.results_file}")
    for flag, path in (("--results-file", args.results_file), ("--predictions", args.predictions)):
        if path:
            check_output_file(path, flag)
    detectors = [is_detector_source(name) for name in names]
    if any(detectors) and not all(detectors):
        raise UsageError("validate classifiers and detectors in separate runs: they need other data")
    if not any(detectors) and (args.annotations or args.predictions):
        raise UsageError("--annotations and --predictions are for detectors (e.g. maskrcnn_eca_resnet50_fpn)")
    if args.predictions and len(names) > 1:
        raise UsageError("--predictions goes with one model")
    device = distributed.setup(args.device)
    validate_one = run_detection if all(detectors) else _validate_one
    rows, skipped = [], []
    try:
        for name in names:
            try:
                rows.append(validate_one(name, args, device))
            except ModelUnavailable as e:
                if len(names) == 1:
                    raise
                skipped.append(name)
                if distributed.is_main():
                    print(f"eca-models validate: skipping {e}", file=sys.stderr)
    finally:
        distributed.cleanup()
    if not rows:
        raise UsageError(f"none of the {len(names)} models could be loaded (see the lines above)")
    if args.results_file and distributed.is_main():
        _write_results(Path(args.results_file), rows)
    if skipped and distributed.is_main():
        print(f"\nvalidated {len(rows)} of {len(names)} models; skipped {len(skipped)}: {', '.join(skipped)}")
    if any(row["verdict"] == NOT_SCORED for row in rows):
        return 2  # bad input: no image could be scored
    return 1 if any(row["verdict"] == "FAIL" for row in rows) else 0


def _expand_models(patterns: List[str]) -> List[str]:
    names: List[str] = []
    for pattern in patterns:
        if any(c in pattern for c in "*?[") and not Path(pattern).exists():
            found = list_models(pattern) + fnmatch.filter(list_detectors(), pattern)
            if not found:
                raise UsageError(f"no model matches {pattern!r} (see `eca-models list`)")
            names += found
        else:
            names.append(pattern)
    return list(dict.fromkeys(names))


def _validate_one(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    model = load_model(name, args.checkpoint, num_classes=args.num_classes)
    labels = class_labels(model)
    overrides = {
        k: v
        for k, v in dict(crop_pct=args.crop_pct, interpolation=args.interpolation, mean=args.mean, std=args.std).items()
        if v
    }
    if args.img_size:
        overrides["input_size"] = (3, args.img_size, args.img_size)
    data_config = resolve_data_config(overrides, model=model)
    samples = imagenet_samples(Path(args.data), Path(args.labels) if args.labels else None, labels)
    dataset = ImageListDataset(samples, create_transform(**data_config, is_training=False), data_config["input_size"])
    sampler = ShardSampler(subset(len(samples), args.limit), distributed.rank(), distributed.world_size())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers, pin_memory=device.type == "cuda"
    )
    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    counts = evaluate(model, loader, device, args.amp, args.channels_last, args.on_error, desc=name)

    measured = {"acc@1": counts.top1, "acc@5": counts.top5}
    ckpt = find_checkpoint(model.pretrained_cfg.get("architecture", name)) if labels is None else None
    if ckpt is not None and ckpt.kernel_code != getattr(model, "kernel_code", None):
        ckpt = None  # another kernel code: not the released checkpoint, nothing to compare with
    reported = ckpt.metrics[ckpt.dataset] if ckpt else None
    paper = ckpt.paper_metrics[ckpt.dataset] if ckpt and ckpt.paper_metrics else None
    state, why = verdict(measured, reported, counts.images, 0.3 if args.tolerance is None else args.tolerance)
    if args.record and distributed.is_main():
        _record(ckpt, measured, counts.images)
    params, macs = count_params(model), count_macs(model.to("cpu").float(), tuple(data_config["input_size"]))
    # the weights used: --checkpoint, the folder given as the model, or the folder ECA_MODELS_WEIGHTS_DIR supplied
    weights = args.checkpoint or (name if Path(name).is_dir() else None)
    weights = weights or weights_location(model.pretrained_cfg.get("hf_hub_id") or "")
    row = _row(name, model, data_config, counts, reported, paper, state, why, params, macs, ckpt, weights)
    if distributed.is_main():
        _print_report(row, counts.failed, args.results_file)
    return row


def _record(ckpt, measured: Dict[str, float], images: int) -> None:
    """Keep a measurement in the manifest: only a released checkpoint on the full validation set."""
    if ckpt is None or images != IMAGENET_VAL_SIZE:
        print(f"  not recorded: --record takes a released checkpoint measured on all {IMAGENET_VAL_SIZE:,} images")
        return
    values = {"acc@1": round(measured["acc@1"], 3), "acc@5": round(measured["acc@5"], 3)}
    update_manifest(ckpt.name, measured_metrics={ckpt.dataset: values})
    print(f"  recorded the measurement in the manifest entry {ckpt.name}")


def _row(
    name, model, data_config, counts, reported, paper, state, why, params, macs, ckpt, checkpoint
) -> Dict[str, Any]:
    ci1, ci5 = wilson_interval(counts.top1, counts.images), wilson_interval(counts.top5, counts.images)

    def score(value: float):  # None, not NaN, where no image was scored (JSON has no NaN)
        return round(value, 3) if counts.images else None

    return {
        # timm validate.py's columns
        "model": name,
        "top1": score(counts.top1),
        "top1_err": score(100 - counts.top1),
        "top5": score(counts.top5),
        "top5_err": score(100 - counts.top5),
        "param_count": round(params / 1e6, 2),
        "img_size": data_config["input_size"][-1],
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
        # ours
        "kernel_code": getattr(model, "kernel_code", ""),
        "checkpoint": str(checkpoint or model.pretrained_cfg.get("hf_hub_id") or ""),
        "images": counts.images,
        "unreadable": len(counts.failed),
        "unreadable_images": counts.failed,
        "top1_ci95": [round(v, 3) for v in ci1],
        "top5_ci95": [round(v, 3) for v in ci5],
        "num_classes": model.num_classes,
        "reported_top1": reported["acc@1"] if reported else None,
        "reported_top5": reported["acc@5"] if reported else None,
        "paper_top1": paper["acc@1"] if paper else None,
        "paper_top5": paper["acc@5"] if paper else None,
        "verdict": state,
        "verdict_reason": why,
        "params": params,
        "gmacs": round(macs / 1e9, 4),
        "published_params": ckpt.published["params"] if ckpt else None,
        "published_flops": ckpt.published["flops"] if ckpt else None,
        "seconds": round(counts.seconds, 2),
        "img_per_sec": round(counts.images / counts.seconds, 1) if counts.seconds else None,
    }


def _print_report(row: Dict[str, Any], failed: List[str], results_file: Optional[str]) -> None:
    p = print
    p(f"\n{row['model']}  (kernel code {row['kernel_code']}; weights {row['checkpoint'] or 'none'})")
    resize = round(row["img_size"] / row["crop_pct"])
    p(f"  protocol  resize {resize} {row['interpolation']}, center crop {row['img_size']}")
    shown = failed[:5] if results_file else failed
    where = f"listed in {results_file}" if results_file else "listed below"
    extra = f", {row['unreadable']} unreadable (not scored, {where})" if row["unreadable"] else ""
    p(f"  images    {row['images']:,} scored{extra}")
    p(f"  {'':8}  {'measured':>8}  {'reported':>8}  {'diff':>6}  {'95% interval':>16}  {'paper':>6}")
    shown_metrics = (("top1", "Top-1"), ("top5", "Top-5")) if row["num_classes"] > 5 else (("top1", "Top-1"),)
    for key, label in shown_metrics:  # Top-5 of five classes or fewer is 100% by definition
        rep, paper, value = row[f"reported_{key}"], row[f"paper_{key}"], row[key]
        diff = f"{value - rep:+.2f}" if rep is not None and value is not None else "-"
        low, high = row[f"{key}_ci95"]
        interval = f"[{low:.2f}, {high:.2f}]" if value is not None else "-"
        p(
            f"  {label:8}  {f'{value:.2f}' if value is not None else '-':>8}  {rep if rep is not None else '-':>8}  "
            f"{diff:>6}  {interval:>16}  {paper if paper is not None else '-':>6}"
        )
    params, macs = row["params"], row["gmacs"] * 1e9
    pub_p = f"published {row['published_params']} (params / 2^20)" if row["published_params"] else ""
    pub_f = f"published {row['published_flops']} (thop MACs / 2^30)" if row["published_flops"] else ""
    p(f"  params    {params:,} exact = {params / 2**20:.2f}M in 2^20 units   {pub_p}")
    if pub_f and row["img_size"] != 224:
        pub_f += " at 224"  # not comparable with this run's size
    p(
        f"  MACs      {macs / 1e9:.3f}e9 at {row['img_size']} (flop_counter) = {macs / 2**30:.2f}G in 2^30 units   {pub_f}"
    )
    if row["published_flops"] and row["img_size"] == 224:
        gap = 100 * (binary_units(row["published_flops"]) / macs - 1)
        p(f"  {'':8}  (the published count is {gap:+.1f}% against flop_counter's: thop counts other layers)")
    for path in shown:
        p(f"  unreadable: {path}")
    p(f"  verdict   {row['verdict']}: {row['verdict_reason']}")


def _write_results(path: Path, rows: List[Dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps(rows, indent=2) + "\n")
        return
    rows = [_flat_row(row) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    for row in rows:
        flat = {k: ";".join(map(str, v)) if isinstance(v, list) else v for k, v in row.items()}
        writer.writerow(flat)
    write_text_atomic(path, buffer.getvalue())


def _flat_row(row: Dict[str, Any]) -> Dict[str, Any]:
    """A detector's row with its nested metrics as columns (``box_map``, ``reported_box_map``, ...) for CSV."""
    if "metrics" not in row:
        return row
    flat = {k: v for k, v in row.items() if k not in ("metrics", "reported")}
    for kind, values in row["metrics"].items():
        flat.update({f"{kind}_{k}": v for k, v in values.items()})
    flat.update({f"reported_{k}": v for k, v in (row["reported"] or {}).items()})
    return flat
