"""``eca-models validate`` for detectors: COCO box AP (and mask AP for Mask R-CNN) against the reported numbers.

The data is ``--data IMAGES --annotations instances.json`` or ``--data ROOT`` of the COCO layout; the model a
registered detector (the release's weights, or ``--checkpoint DIR``) or a detector folder. pycocotools scores the
predictions; the twelve summary metrics of each IoU type are printed beside the reported ones. On the whole of
val2017 (5,000 images) box AP and mask AP must be within ``--tolerance`` AP points of the release's for PASS;
on a subset or another dataset the figures are measured only (AP has no per-image interval to judge a subset by).
"""

import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from .. import distributed
from ..data.imagenet import DataError
from ..data.images import subset
from ..detection.coco import CocoData, check_categories, find_coco_splits, read_coco
from ..detection.evaluation import SUMMARY_KEYS, coco_evaluate, predict_coco
from ..detection.model_card import METRIC_NAMES
from ..detection.weights import released_checkpoint
from ..evaluation import NOT_SCORED
from ..files import write_text_atomic
from ..weights import find_checkpoint, weights_location
from ..weights.manifest import update_manifest
from .common import load_detector_model
from .predict_detection import detector_kwargs

COCO_VAL2017_IMAGES = 5000
DEFAULT_TOLERANCE = 0.5  # AP points: torchvision's box conventions differ slightly from mmdetection v1's


def read_split(data: str, annotations: Optional[str], prefer: Tuple[str, ...] = ("val2017", "val")) -> CocoData:
    """The annotation file and image folder the flags name: explicit, or found in a COCO-layout root."""
    if annotations:
        return read_coco(Path(annotations), Path(data))
    splits = find_coco_splits(Path(data))
    for name in prefer:
        found = [s for s in splits if s == name] or [s for s in splits if s.startswith(name)]
        if found:
            return read_coco(*splits[found[0]])
    if len(splits) == 1:
        return read_coco(*next(iter(splits.values())))
    raise DataError(f"{data} has splits {', '.join(splits)} and none named val*: pass --annotations FILE")


def released_metrics(model: torch.nn.Module) -> Tuple[Optional[str], Optional[Dict[str, float]]]:
    """The release's COCO figures for a model of a released architecture, kernel code and COCO's 80 classes."""
    ckpt = released_checkpoint(model.detector_cfg["architecture"], model.detector_cfg["kernel_code"], model.label_map)
    return (None, None) if ckpt is None else (ckpt.name, ckpt.metrics[ckpt.dataset])


def detection_verdict(
    measured: Dict[str, float],
    reported: Optional[Dict[str, float]],
    full: bool,
    tolerance: float,
    images: Optional[int] = None,
) -> Tuple[str, str]:
    """``('PASS' | 'FAIL' | 'MEASURED' | 'NOT SCORED', why)``: box AP and mask AP within ``tolerance`` points on all
    of val2017; no verdict at all where no image was scored (``images`` 0)."""
    if images is not None and images <= 0:
        return NOT_SCORED, "no image was scored: there is nothing to judge"
    if not reported:
        return "MEASURED", "no reported figures for this model (another kernel code, classes or architecture)"
    if not full:
        return "MEASURED", (
            f"a subset or another set than val2017's {COCO_VAL2017_IMAGES:,} images: AP is only comparable on the whole set"
        )
    failures = [
        f"{key} {measured[key]:.2f} is {measured[key] - reported[key]:+.2f} from {reported[key]}"
        for key in ("box_map", "mask_map")
        if key in reported and key in measured and abs(measured[key] - reported[key]) > tolerance
    ]
    rule = f"all of val2017, tolerance {tolerance} AP points"
    return ("FAIL", f"{rule}: " + "; ".join(failures)) if failures else ("PASS", rule)


def run_detection(name: str, args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """Validate one detector; returns its results row."""
    data = read_split(args.data, args.annotations)
    model = load_detector_model(name, args.checkpoint, **detector_kwargs(args))
    check_categories(data, model.label_map)
    ids = [data.image_ids[i] for i in subset(len(data.image_ids), args.limit)]
    model = model.to(device)
    predictions = predict_coco(
        model, data, ids, device, args.batch_size, args.workers, args.amp, desc=model.detector_cfg["architecture"]
    )
    iou_types = ("bbox", "segm") if hasattr(model, "roi_heads") and model.roi_heads.has_mask() else ("bbox",)
    scores = coco_evaluate(data, predictions.results, predictions.image_ids, iou_types)
    measured = scores.flat()
    checkpoint_name, reported = released_metrics(model)
    full = len(predictions.image_ids) == len(data.image_ids) == COCO_VAL2017_IMAGES
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    state, why = detection_verdict(measured, reported, full, tolerance, len(predictions.image_ids))
    released = find_checkpoint(checkpoint_name) if checkpoint_name else None
    weights = args.checkpoint or (name if Path(name).is_dir() else None)
    weights = weights or (weights_location(released.hf_hub_id) if released else None) or checkpoint_name
    row = {
        "model": name,
        "architecture": model.detector_cfg["architecture"],
        "kernel_code": model.detector_cfg["kernel_code"],
        "checkpoint": str(weights or ""),
        "annotations": str(data.annotations),
        "images": len(predictions.image_ids),
        "unreadable": len(predictions.unreadable),
        "unreadable_images": predictions.unreadable,
        "boxes_without_area_dropped": data.dropped,
        "detections": len(predictions.results),
        "metrics": scores.metrics,
        "reported": reported,
        "verdict": state,
        "verdict_reason": why,
        "seconds": round(predictions.seconds, 2),
    }
    if distributed.is_main():
        if args.record:
            _record(checkpoint_name, measured, full)
        if args.predictions:
            write_text_atomic(Path(args.predictions), json.dumps(predictions.results) + "\n")
        _print_report(row, args.predictions)
    return row


def _record(checkpoint_name: Optional[str], measured: Dict[str, float], full: bool) -> None:
    """Keep a measurement in the manifest: only a released detector's, on all of val2017."""
    if checkpoint_name is None or not full:
        print(
            f"  not recorded: --record takes a released detector measured on all {COCO_VAL2017_IMAGES:,} val2017 images"
        )
        return
    update_manifest(checkpoint_name, measured_metrics={"COCO-val2017": {k: round(v, 3) for k, v in measured.items()}})
    print(f"  recorded the measurement in the manifest entry {checkpoint_name}")


def _print_report(row: Dict[str, Any], predictions_file: Optional[str]) -> None:
    p = print
    p(
        f"\n{row['model']}  ({row['architecture']}, kernel code {row['kernel_code']}; weights {row['checkpoint'] or 'none'})"
    )
    extra = f", {row['unreadable']} unreadable (not scored)" if row["unreadable"] else ""
    dropped = (
        f"; {row['boxes_without_area_dropped']} boxes with no area dropped" if row["boxes_without_area_dropped"] else ""
    )
    p(f"  images    {row['images']:,} scored{extra}{dropped}; {row['detections']:,} detections")
    reported = row["reported"] or {}
    for kind, values in row["metrics"].items():
        p(f"  {kind:<5} {'':5}  {'measured':>8}  {'reported':>8}  {'diff':>6}")
        for key in SUMMARY_KEYS:
            label = METRIC_NAMES[key]
            rep = reported.get(f"{kind}_{key}")
            value = values[key]
            shown = f"{value:8.2f}" if value >= 0 else f"{'n/a':>8}"  # COCOeval's -1: no objects of that size
            diff = f"{value - rep:+.2f}" if rep is not None and value >= 0 else "-"
            p(f"  {'':5} {label:<5}  {shown}  {rep if rep is not None else '-':>8}  {diff:>6}")
    if predictions_file:
        p(f"  predictions written to {predictions_file} (COCO results format)")
    for path in row["unreadable_images"][:5]:
        p(f"  unreadable: {path}")
    p(f"  verdict   {row['verdict']}: {row['verdict_reason']}")
