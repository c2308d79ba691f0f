"""COCO evaluation of a detector: predictions in COCO's results format, scored by pycocotools' ``COCOeval``.

pycocotools is the reference implementation: the release's, mmdetection's and torchvision's figures all come from
it, so its twelve summary metrics are the ones to hold a checkpoint against. Predictions are made in batches
(AMP on CUDA), on one process or a shard per torchrun process, every image scored once; boxes come back in the
original image's pixels (torchvision's transform undoes its resize) and masks as RLE.
"""

import dataclasses
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .. import distributed
from ..data.images import ShardSampler
from ..training.loop import autocast_for
from .coco import CocoData, CocoDataset, collate, quiet_coco

__all__ = ["SUMMARY_KEYS", "DetectionScores", "coco_evaluate", "predict_coco", "to_coco_results"]

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
class Predictions:
    """What :func:`predict_coco` made: results of every process, images scored, unreadable files, seconds."""

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
) -> Predictions:
    """Run ``model`` over ``image_ids`` (this process's shard of them under torchrun) and gather every result."""
    dataset = CocoDataset(data, model.label_map, image_ids)
    sampler = ShardSampler(range(len(dataset)), distributed.rank(), distributed.world_size())
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate
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
    return Predictions(
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
        iou_types: ``bbox`` and/or ``segm``.
    """
    from pycocotools.cocoeval import COCOeval

    gt = data.coco()
    metrics: Dict[str, Dict[str, float]] = {}
    for iou_type in iou_types:
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
