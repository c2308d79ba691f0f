"""Detectors side by side: an ECA-ResNet detector against the same detector on the plain ResNet trunk.

Both are built here with the same FPN, heads and settings, differing only in the trunk (timm's ``resnet50`` /
``resnet101`` with frozen BatchNorm against ours), so the difference is ECA's. Reported: exact parameters, the
release's count, MACs of the release's dummy forward at 1280 x 800 (:func:`~.complexity.detector_macs`), and
measured inference images/s, timed interleaved with the ratio's median and 95% interval as for the classifiers.
"""

import dataclasses
import statistics
import time
from typing import Callable, List, Optional, Tuple

import torch
from torch import nn

from ..benchmark import interleaved_orders, median_interval
from ..complexity import count_params
from ..training.loop import autocast_for
from ._registry import get_builder
from .backbone import release_param_count
from .complexity import detector_macs

__all__ = ["DetectorResult", "plain_detector", "run_detector_benchmark"]


def plain_detector(name: str) -> nn.Module:
    """``name``'s detector on the plain ResNet trunk of the same depth (timm's ``resnet50`` / ``resnet101``)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN

    from .faster_rcnn import build_two_stage
    from .retinanet import build_retinanet

    get_builder(name)  # an unknown name fails here, as for the ECA detector
    trunk = "resnet101" if "resnet101" in name else "resnet50"
    plain = name.replace("eca_", "")
    if name.startswith("retinanet"):
        return build_retinanet(plain, trunk, None)
    return build_two_stage(MaskRCNN if name.startswith("maskrcnn") else FasterRCNN, plain, trunk, None)


@dataclasses.dataclass
class DetectorResult:
    """One detector's figures."""

    name: str
    params: int
    release_params: int
    gmacs: float
    runs: List[float] = dataclasses.field(default_factory=list)
    img_s: Optional[float] = None
    ratio: Optional[float] = None
    ratio_interval: Optional[Tuple[float, float]] = None


def run_detector_benchmark(
    name: str,
    device: str = "cpu",
    img_size: Tuple[int, int] = (800, 1216),
    batch_size: int = 1,
    reps: int = 5,
    warmup: int = 1,
    amp: bool = False,
    log: Callable[[str], None] = print,
) -> List[DetectorResult]:
    """Time inference of the plain and the ECA detector ``name`` on random images of ``img_size`` (H, W),
    interleaved, and count both at 1280 x 800 (plain first)."""
    dev = torch.device(device)
    models = {name.replace("eca_", ""): plain_detector(name), name: get_builder(name)()}
    images = [torch.rand(3, *img_size, device=dev) for _ in range(batch_size)]
    results, steps = [], {}
    for label, model in models.items():
        results.append(
            DetectorResult(label, count_params(model), release_param_count(model), detector_macs(model) / 1e9)
        )
        model = model.to(dev).eval()
        # the input is already at its size: keep torchvision's transform from resizing it again
        model.transform.min_size, model.transform.max_size = (min(img_size),), max(img_size)

        def step(model=model) -> None:
            with torch.inference_mode(), autocast_for(dev, amp):
                model(images)

        steps[label] = step
    for _ in range(warmup):
        for step in steps.values():
            step()
    for rep, order in enumerate(interleaved_orders(results, reps)):
        for r in order:
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            start = time.perf_counter()
            steps[r.name]()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            r.runs.append(batch_size / (time.perf_counter() - start))
        log(f"repetition {rep + 1}/{reps} done")
    base = results[0]
    for r in results:
        r.img_s = statistics.median(r.runs)
        ratios = [a / b for a, b in zip(r.runs, base.runs)]
        r.ratio, r.ratio_interval = statistics.median(ratios), median_interval(ratios)
    return results
