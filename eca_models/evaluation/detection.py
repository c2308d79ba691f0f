"""COCO evaluation of a detector: predictions in COCO's results format, scored by pycocotools' ``COCOeval``.

pycocotools is the reference implementation: the release's, mmdetection's and torchvision's figures all come from
it, so its twelve summary metrics are the ones to hold a checkpoint against. Predictions are made in batches
(AMP on CUDA), on one process or a shard per torchrun process, every image scored once; boxes come back in the
original image's pixels (torchvision's transform undoes its resize) and masks as RLE.
"""

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..data.images import ShardSampler, subset
from ..detection import load_detector
from ..detection.coco import CocoData, CocoDataset, check_categories, collate, find_coco_splits, quiet_coco, read_coco
from ..detection.weights import released_checkpoint
from ..errors import DataError
from ..files import write_text_atomic
from ..runtime import autocast_for, loader_workers
from ..weights import find_checkpoint, weights_location
from ..weights.manifest import update_manifest
from .classification import NOT_SCORED

__all__ = [
    "COCO_VAL2017_IMAGES",
    "SUMMARY_KEYS",
    "DetectionScores",
    "coco_evaluate",
    "detection_verdict",
    "predict_coco",
    "read_split",
    "record_detector",
    "released_metrics",
    "to_coco_results",
    "validate_detector",
]

COCO_VAL2017_IMAGES = 5000
DEFAULT_TOLERANCE = 0.5  # AP points: torchvision's box conventions differ slightly from mmdetection v1's

# COCOeval.stats, in order: AP at IoU .50:.95, .50, .75, small, medium, large; AR with 1, 10, 100 detections, S/M/L
SUMMARY_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")  # fmt: skip
IOU_TYPES = {"bbox": "box", "segm": "mask"}


def to_coco_results(
    image_id: int, detection: Dict[str, torch.Tensor], label_map, mask_threshold: float = 0.5
) -> List[Dict[str, Any]]:
    """One image's torchvision detections as COCO results: ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] in
    the original pixels, ``score``, and an RLE ``segmentation`` where the model has masks."""
    boxes = detection["boxes"].float().cpu()
    scores = detection["scores"].float().cpu().tolist()
    labels = detection["labels"].cpu().tolist()
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).tolist()
    out = [
        {
            "image_id": int(image_id),
            "category_id": label_map.category_id(label),
            "bbox": [round(v, 2) for v in box],
            "score": round(score, 5),
        }
        for box, score, label in zip(xywh, scores, labels)
    ]
    if "masks" in detection and len(out):
        from pycocotools import mask as mask_utils

        binary = (detection["masks"][:, 0] > mask_threshold).cpu().numpy().astype(np.uint8)
        rles = mask_utils.encode(np.asfortranarray(binary.transpose(1, 2, 0)))
        for result, rle in zip(out, rles):
            result["segmentation"] = {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}
    return out


@dataclasses.dataclass
class CocoPredictions:
    """What `predict_coco` made: results of every process (COCO result entries), the image ids scored, the files
    that could not be read, seconds. (`eca_models.predict` returns `Predictions`: per-image results for any images.)"""

    results: List[Dict[str, Any]]
    image_ids: List[int]
    unreadable: List[str]
    seconds: float


def predict_coco(
    model: nn.Module,
    data: CocoData,
    image_ids: Sequence[int],
    device: torch.device,
    batch_size: int = 2,
    workers: int = 0,
    amp: bool = False,
    desc: str = "predict",
    on_unreadable: Optional[Callable[[List[str]], None]] = None,
) -> CocoPredictions:
    """Run ``model`` over ``image_ids`` (this process's shard of them under torchrun) and gather every result."""
    dataset = CocoDataset(data, model.label_map, image_ids)
    sampler = ShardSampler(range(len(dataset)), distributed.rank(), distributed.world_size())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=loader_workers(workers), collate_fn=collate
    )
    model.eval()
    results: List[Dict[str, Any]] = []
    scored: List[int] = []
    bad: List[str] = []
    start = time.perf_counter()
    bar = tqdm(total=len(sampler), desc=desc, unit="img", disable=not distributed.is_main(), dynamic_ncols=True)
    with torch.inference_mode():
        for images, targets, ok in loader:
            for t, good in zip(targets, ok):
                if not good:
                    bad.append(dataset.samples[int(t["index"])])
            batch = [img.to(device, non_blocking=True) for img, good in zip(images, ok) if good]
            kept = [t for t, good in zip(targets, ok) if good]
            if batch:
                with autocast_for(device, amp and device.type == "cuda"):
                    detections = model(batch)
                for t, det in zip(kept, detections):
                    results += to_coco_results(int(t["image_id"]), det, model.label_map)
                    scored.append(int(t["image_id"]))
            bar.update(len(images))
    bar.close()
    seconds = time.perf_counter() - start
    gathered = distributed.all_gather_objects((results, scored, bad))
    if on_unreadable is not None:
        on_unreadable([p for _, _, b in gathered for p in b])
    return CocoPredictions(
        [r for res, _, _ in gathered for r in res],
        sorted(i for _, ids, _ in gathered for i in ids),
        [p for _, _, b in gathered for p in b],
        seconds,
    )


@dataclasses.dataclass
class DetectionScores:
    """COCOeval's summary per IoU type, in AP points (0-100): ``{"box": {"map": ..., ...}, "mask": {...}}``."""

    metrics: Dict[str, Dict[str, float]]
    images: int

    def flat(self) -> Dict[str, float]:
        """``{"box_map": ..., "mask_map_50": ...}``: the manifest's keys."""
        return {f"{kind}_{k}": v for kind, values in self.metrics.items() for k, v in values.items()}


def coco_evaluate(
    data: CocoData, results: List[Dict[str, Any]], image_ids: Sequence[int], iou_types: Sequence[str] = ("bbox",)
) -> DetectionScores:
    """Score ``results`` against ``data`` on ``image_ids`` with pycocotools' COCOeval (its twelve summary metrics).

    Args:
        data: The ground truth.
        results: COCO-format results (``segmentation`` needed for ``segm``).
        image_ids: The images the results cover: only these are scored (a subset, or one shard's).
        iou_types: ``bbox`` and/or ``segm`` (left out where no annotation has an outline).
    """
    from pycocotools.cocoeval import COCOeval  # pycocotools loads matplotlib: only when scoring (start-up time)

    metrics: Dict[str, Dict[str, float]] = {}
    for iou_type in iou_types:
        gt = data.coco(outlines=iou_type == "segm")
        if gt is None:
            continue  # no annotation has an outline (a box-only dataset): no mask AP to measure
        kept = [r for r in results if iou_type != "segm" or "segmentation" in r]
        with quiet_coco():
            dt = gt.loadRes(kept) if kept else _empty_results(gt)
            evaluator = COCOeval(gt, dt, iou_type)
            evaluator.params.imgIds = list(image_ids)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # COCOeval reports -1 where a metric has no ground truth (e.g. no small objects): kept as -1
        metrics[IOU_TYPES[iou_type]] = {
            k: round(100 * float(v), 3) if v >= 0 else -1.0 for k, v in zip(SUMMARY_KEYS, evaluator.stats)
        }
    return DetectionScores(metrics, len(image_ids))


def _empty_results(gt):
    from pycocotools.coco import COCO

    dt = COCO()
    dt.dataset = {"images": gt.dataset["images"], "categories": gt.dataset["categories"], "annotations": []}
    dt.createIndex()
    return dt


def read_split(data: str, annotations: Optional[str], prefer: Tuple[str, ...] = ("val2017", "val")) -> CocoData:
    """The annotation file and image folder asked for: explicit, or found in a COCO-layout root."""
    if annotations:
        return read_coco(Path(annotations), Path(data))
    splits = find_coco_splits(Path(data))
    for name in prefer:
        found = [s for s in splits if s == name] or [s for s in splits if s.startswith(name)]
        if found:
            return read_coco(*splits[found[0]])
    if len(splits) == 1:
        return read_coco(*next(iter(splits.values())))
    raise DataError(f"{data} has splits {', '.join(splits)} and none named val*: pass annotations=FILE")


def released_metrics(model: nn.Module) -> Tuple[Optional[str], Optional[Dict[str, float]]]:
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
            f"a subset or another set than val2017's {COCO_VAL2017_IMAGES:,} images and 80 categories: AP is only "
            "comparable on the whole set"
        )
    failures = [
        f"{key} {measured[key]:.2f} is {measured[key] - reported[key]:+.2f} from {reported[key]}"
        for key in ("box_map", "mask_map")
        if key in reported and key in measured and abs(measured[key] - reported[key]) > tolerance
    ]
    rule = f"all of val2017, tolerance {tolerance} AP points"
    return ("FAIL", f"{rule}: " + "; ".join(failures)) if failures else ("PASS", rule)


def validate_detector(name: str, data: str, options: Any, device: torch.device) -> Tuple[Dict[str, Any], List[str]]:
    """Measure one detector's COCO AP on ``data`` and judge it against the release's figures.

    Args:
        name: A registered detector or a detector folder.
        data: A COCO-layout root, or an image folder with ``options.annotations``.
        options: A `ValidateOptions` (``predictions`` also writes them).
        device: Where to run.

    Returns:
        The results row, and what ``options.record`` did.
    """
    coco = read_split(data, options.annotations)
    model = load_detector(name, checkpoint=options.checkpoint, min_size=options.min_size, max_size=options.max_size)
    check_categories(coco, model.label_map)
    ids = [coco.image_ids[i] for i in subset(len(coco.image_ids), options.limit)]
    model = model.to(device)
    arch = model.detector_cfg["architecture"]
    predictions = predict_coco(model, coco, ids, device, options.batch_size, options.workers, options.amp, desc=arch)
    iou_types = ("bbox", "segm") if hasattr(model, "roi_heads") and model.roi_heads.has_mask() else ("bbox",)
    scores = coco_evaluate(coco, predictions.results, predictions.image_ids, iou_types)
    measured = scores.flat()
    checkpoint_name, reported = released_metrics(model)
    every_class = {c["id"] for c in coco.categories} == set(model.label_map.category_ids)  # not a person-only file
    full = len(predictions.image_ids) == len(coco.image_ids) == COCO_VAL2017_IMAGES and every_class
    tolerance = DEFAULT_TOLERANCE if options.tolerance is None else options.tolerance
    state, why = detection_verdict(measured, reported, full, tolerance, len(predictions.image_ids))
    released = find_checkpoint(checkpoint_name) if checkpoint_name else None
    weights = options.checkpoint or (name if Path(name).is_dir() else None)
    weights = weights or (weights_location(released.hf_hub_id) if released else None) or checkpoint_name
    row = {
        "model": name,
        "architecture": arch,
        "kernel_code": model.detector_cfg["kernel_code"],
        "checkpoint": str(weights or ""),
        "annotations": str(coco.annotations),
        "images": len(predictions.image_ids),
        "unreadable": len(predictions.unreadable),
        "unreadable_images": predictions.unreadable,
        "boxes_without_area_dropped": coco.dropped,
        "detections": len(predictions.results),
        "metrics": scores.metrics,
        "reported": reported,
        "verdict": state,
        "verdict_reason": why,
        "seconds": round(predictions.seconds, 2),
    }
    notes = []
    if distributed.is_main():
        if options.record:
            notes.append(record_detector(checkpoint_name, measured, full))
        if options.predictions:
            write_text_atomic(Path(options.predictions), json.dumps(predictions.results) + "\n")
    return row, notes


def record_detector(checkpoint_name: Optional[str], measured: Dict[str, float], full: bool) -> str:
    """Keep a measurement in the manifest: only a released detector's, on all of val2017. Returns what was done."""
    if checkpoint_name is None or not full:
        return (
            f"not recorded: record=True takes a released detector measured on all {COCO_VAL2017_IMAGES:,} val2017 "
            "images and 80 categories"
        )
    update_manifest(checkpoint_name, measured_metrics={"COCO-val2017": {k: round(v, 3) for k, v in measured.items()}})
    return f"recorded the measurement in the manifest entry {checkpoint_name}"
