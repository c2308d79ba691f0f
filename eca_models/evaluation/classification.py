"""Measuring Top-1/Top-5 and judging them against reported figures.

``evaluate`` runs a model over a loader of `ImageListDataset` items
and returns counts summed over all torchrun processes; ``verdict`` compares the accuracies with
the reported ones: on the full 50,000-image val set within a tolerance, on a subset by whether
the reported value lies inside the 95% confidence interval.
"""

import dataclasses
import math
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from timm.data import create_transform, resolve_data_config
from tqdm import tqdm

from .. import distributed
from ..complexity import count_macs, count_params
from ..data.imagenet import imagenet_samples
from ..data.images import ImageListDataset, ShardSampler, subset, unreadable
from ..errors import EcaModelsError
from ..factory import class_labels, load
from ..runtime import autocast_for, loader_workers
from ..weights import find_checkpoint, weights_location
from ..weights.manifest import update_manifest

__all__ = [
    "IMAGENET_VAL_SIZE",
    "NOT_SCORED",
    "Counts",
    "evaluate",
    "record_classifier",
    "validate_classifier",
    "verdict",
    "wilson_interval",
]

IMAGENET_VAL_SIZE = 50_000
VAL_NAME = re.compile(r"ILSVRC2012_val_\d{8}")  # in the name of each ImageNet val image, however prepared
NOT_SCORED = "NOT SCORED"  # the state of a run that scored no image: never PASS or FAIL


@dataclasses.dataclass
class Counts:
    """Evaluation counts, summed over processes."""

    images: int  # images scored
    correct1: int
    correct5: int
    failed: List[str]  # unreadable images, not scored
    seconds: float
    loss: float = float("nan")  # mean loss over the scored images, when a loss function was given

    @property
    def top1(self) -> float:
        return 100.0 * self.correct1 / self.images if self.images else float("nan")

    @property
    def top5(self) -> float:
        return 100.0 * self.correct5 / self.images if self.images else float("nan")


class UnreadableImage(EcaModelsError, RuntimeError):
    """An image could not be read and ``--on-error fail`` was asked for."""


def evaluate(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    device: torch.device,
    amp: bool = False,
    channels_last: bool = False,
    on_error: str = "skip",
    desc: str = "validate",
    loss_fn: Optional[Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = None,
) -> Counts:
    """Top-1/Top-5 counts of ``model`` over ``loader``, reduced over all processes.

    Args:
        model: The model, already on ``device`` and in eval mode.
        loader: Yields ``(images, labels, indices, ok)`` batches.
        device: Where to run.
        amp: Autocast (bfloat16 on CPU, float16 on CUDA).
        channels_last: Feed channels-last tensors.
        on_error: ``'skip'`` counts and lists unreadable images; ``'fail'`` stops at the first.
        desc: Progress bar label.
        loss_fn: Also average this loss (mean-reduced) over the images.
    """
    samples = loader.dataset.samples
    counts = [0, 0, 0, 0.0]  # images, Top-1 hits, Top-5 hits, loss sum
    failed: List[str] = []
    start = time.perf_counter()
    bar = tqdm(total=len(loader.sampler), desc=desc, unit="img", disable=not distributed.is_main(), dynamic_ncols=True)
    with torch.inference_mode(), autocast_for(device, amp):
        for x, y, index, ok in loader:
            bad = unreadable(ok, index, samples)
            if bad and on_error == "fail":
                bar.leave = False
                bar.close()
                raise UnreadableImage(f"cannot read image {bad[0]} (pass on_error=skip to count and list such images)")
            failed += bad
            x, y = x[ok].to(device, non_blocking=True), y[ok].to(device, non_blocking=True)
            if len(y):
                x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
                _count(model(x), y, loss_fn, counts)
            bar.update(len(ok))
            bar.set_postfix(img_s=f"{bar.n / max(time.perf_counter() - start, 1e-9):.1f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - start
    images, correct1, correct5, loss_sum = distributed.all_reduce_sum(counts, device)
    failed = sorted(sum(distributed.all_gather_objects(failed), []))
    loss = loss_sum / images if images else float("nan")
    return Counts(int(images), int(correct1), int(correct5), failed, seconds, loss)


def _count(logits: torch.Tensor, y: torch.Tensor, loss_fn: Optional[Callable], counts: List[Any]) -> None:
    """Add a batch's images, Top-1 and Top-5 hits and loss sum to ``counts``."""
    hits = logits.topk(min(5, logits.shape[1]), dim=1).indices.eq(y[:, None])
    counts[0] += len(y)
    counts[1] += int(hits[:, 0].sum())
    counts[2] += int(hits.any(dim=1).sum())
    if loss_fn is not None:
        counts[3] += float(loss_fn(logits.float(), y)) * len(y)


def wilson_interval(percent: float, n: int, z: float = 1.959964) -> Tuple[float, float]:
    """95% Wilson score interval, in percent, of an accuracy measured on ``n`` images."""
    if n == 0:
        return (0.0, 100.0)
    p = percent / 100.0
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100.0 * max(0.0, centre - half), 100.0 * min(1.0, centre + half))


def verdict(
    measured: Dict[str, float], reported: Optional[Dict[str, float]], images: int, tolerance: float = 0.3
) -> Tuple[str, str]:
    """``('PASS' | 'FAIL' | 'MEASURED' | 'NOT SCORED', why)`` for measured vs reported ``{'acc@1', 'acc@5'}``.

    On the full val set (50,000 scored images) each metric must be within ``tolerance`` points of
    the reported value; on a subset the reported value must lie inside the 95% interval, and only
    where the subset is large enough that each reported figure could fall outside it (on one image
    the Top-1 interval spans the reported value whether the image is right or wrong: no verdict).
    No image scored gives no verdict at all.
    """
    if images <= 0:
        return NOT_SCORED, "no image was scored: there is nothing to judge"
    if not reported:
        return "MEASURED", "no reported figures for this model: measured only"
    full = images == IMAGENET_VAL_SIZE
    if not full and not all(_subset_can_fail(reported[key], images) for key in ("acc@1", "acc@5")):
        return "MEASURED", (
            f"{images} image{'s are' if images > 1 else ' is'} too few for a verdict: no result on "
            f"{'them' if images > 1 else 'it'} could put every reported figure outside its 95% interval"
        )
    failures = []
    for key in ("acc@1", "acc@5"):
        if full:
            if abs(measured[key] - reported[key]) > tolerance:
                failures.append(
                    f"{key} {measured[key]:.2f} is {measured[key] - reported[key]:+.2f} from {reported[key]}"
                )
        else:
            low, high = wilson_interval(measured[key], images)
            if not low <= reported[key] <= high:
                failures.append(f"{key} reported {reported[key]} is outside [{low:.2f}, {high:.2f}]")
    rule = (
        f"full val set, tolerance {tolerance} points"
        if full
        else f"subset of {images} images, where each reported value must lie inside the measured 95% interval"
    )
    return ("FAIL", f"{rule}: " + "; ".join(failures)) if failures else ("PASS", rule)


def _subset_can_fail(reported: float, images: int) -> bool:
    """Whether some accuracy measured on ``images`` images would put ``reported`` outside its 95% interval."""
    return any(
        not low <= reported <= high
        for low, high in (wilson_interval(100.0 * k / images, images) for k in range(images + 1))
    )


def validate_classifier(name: str, data: str, options: Any, device: torch.device) -> Tuple[Dict[str, Any], List[str]]:
    """Measure one classifier on ImageNet val ``data`` with its own evaluation protocol (or the ``options``'
    overrides) and judge it against its released checkpoint's figures.

    Args:
        name: A registered name or a model folder.
        data: Class folders by WordNet id, or flat images with ``options.labels``.
        options: A `ValidateOptions`.
        device: Where to run.

    Returns:
        The results row, and what ``options.record`` did.
    """
    model = load(name, checkpoint=options.checkpoint, num_classes=options.num_classes)
    labels = class_labels(model)
    data_config = _data_config(model, options)
    samples = imagenet_samples(Path(data), Path(options.labels) if options.labels else None, labels)
    loader = _loader(samples, data_config, options, device, upright=labels is not None)
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    counts = evaluate(model, loader, device, options.amp, options.channels_last, options.on_error, desc=name)
    measured = {"acc@1": counts.top1, "acc@5": counts.top5}
    ckpt = find_checkpoint(model.pretrained_cfg.get("architecture", name)) if labels is None else None
    if ckpt is not None and ckpt.kernel_code != getattr(model, "kernel_code", None):
        ckpt = None  # another kernel code: not the released checkpoint, nothing to compare with
    tolerance = 0.3 if options.tolerance is None else options.tolerance
    judged = verdict(measured, ckpt.metrics[ckpt.dataset] if ckpt else None, counts.images, tolerance)
    val_set = all(VAL_NAME.search(path.name) for path, _ in samples)  # not ImageNetV2, -Sketch, -R, ...
    if judged[0] in ("PASS", "FAIL") and not val_set:
        judged = (
            "MEASURED",
            "the images are not ImageNet val's (named ILSVRC2012_val_NNNNNNNN): another test set, measured only",
        )
    record = options.record and distributed.is_main()
    notes = [record_classifier(ckpt if val_set else None, measured, counts.images)] if record else []
    params, macs = count_params(model), count_macs(model.to("cpu").float(), tuple(data_config["input_size"]))
    # the weights used: the checkpoint, the folder given as the model, or the folder ECA_MODELS_WEIGHTS_DIR supplied
    weights = options.checkpoint or (name if Path(name).is_dir() else None)
    weights = weights or weights_location(model.pretrained_cfg.get("hf_hub_id") or "")
    row = {
        **_timm_columns(name, counts, params, data_config),
        **_our_columns(model, counts, ckpt, weights, judged),
        "params": params,
        "gmacs": round(macs / 1e9, 4),
        "published_params": ckpt.published["params"] if ckpt else None,
        "published_flops": ckpt.published["flops"] if ckpt else None,
        "seconds": round(counts.seconds, 2),
        "img_per_sec": round(counts.images / counts.seconds, 1) if counts.seconds else None,
    }
    return row, notes


def _loader(samples, data_config: Dict[str, Any], options: Any, device: torch.device, upright: bool):
    """The evaluation loader over this process's share of ``samples`` (``options.limit`` of them, spread). An ImageNet
    model sees val's pixels as stored (``upright`` False: EXIF orientation ignored), as the published figures were
    measured by torchvision's and timm's loaders."""
    dataset = ImageListDataset(samples, create_transform(**data_config), data_config["input_size"], upright=upright)
    sampler = ShardSampler(subset(len(samples), options.limit), distributed.rank(), distributed.world_size())
    workers = loader_workers(options.workers)
    return torch.utils.data.DataLoader(
        dataset, options.batch_size, sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda"
    )


def _data_config(model: torch.nn.Module, options: Any) -> Dict[str, Any]:
    """The model's evaluation protocol, with what ``options`` override."""
    overrides = dict(crop_pct=options.crop_pct, interpolation=options.interpolation, mean=options.mean, std=options.std)
    overrides = {k: v for k, v in overrides.items() if v}
    if options.img_size:
        overrides["input_size"] = (3, options.img_size, options.img_size)
    return resolve_data_config(overrides, model=model)


def _score(value: float, counts: Counts) -> Optional[float]:
    """A figure for the row: None, not NaN, where no image was scored (JSON has no NaN)."""
    return round(value, 3) if counts.images else None


def _timm_columns(name: str, counts: Counts, params: int, data_config: Dict[str, Any]) -> Dict[str, Any]:
    """timm's validate.py columns."""
    return {
        "model": name,
        "top1": _score(counts.top1, counts),
        "top1_err": _score(100 - counts.top1, counts),
        "top5": _score(counts.top5, counts),
        "top5_err": _score(100 - counts.top5, counts),
        "param_count": round(params / 1e6, 2),
        "img_size": data_config["input_size"][-1],
        "crop_pct": data_config["crop_pct"],
        "interpolation": data_config["interpolation"],
    }


def _our_columns(model, counts: Counts, ckpt, weights, judged: Tuple[str, str]) -> Dict[str, Any]:
    """Ours: the weights, the intervals, the reported and the paper's figures, the verdict."""
    reported = ckpt.metrics[ckpt.dataset] if ckpt else None
    paper = ckpt.paper_metrics[ckpt.dataset] if ckpt and ckpt.paper_metrics else None
    ci1, ci5 = wilson_interval(counts.top1, counts.images), wilson_interval(counts.top5, counts.images)
    return {
        "kernel_code": getattr(model, "kernel_code", ""),
        "checkpoint": str(weights or model.pretrained_cfg.get("hf_hub_id") or ""),
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
        "verdict": judged[0],
        "verdict_reason": judged[1],
    }


def record_classifier(ckpt, measured: Dict[str, float], images: int) -> str:
    """Keep a measurement in the manifest: only a released checkpoint's, on the full validation set. Returns what
    was done, in one line."""
    if ckpt is None or images != IMAGENET_VAL_SIZE:
        return f"not recorded: record=True takes a released checkpoint measured on all {IMAGENET_VAL_SIZE:,} images"
    values = {"acc@1": round(measured["acc@1"], 3), "acc@5": round(measured["acc@5"], 3)}
    update_manifest(ckpt.name, measured_metrics={ckpt.dataset: values})
    return f"recorded the measurement in the manifest entry {ckpt.name}"
