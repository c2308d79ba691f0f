"""Detectors side by side: an ECA-ResNet detector against the same detector on the plain ResNet trunk.

Both are built here with the same FPN, heads and settings, differing only in the trunk (timm's ``resnet50`` /
``resnet101`` with frozen BatchNorm against ours), so the difference is ECA's. Reported: exact parameters, the
release's count, MACs of the release's dummy forward at 1280 x 800 (`detector_macs`), and
measured inference images/s, timed interleaved with the ratio's median and 95% interval as for the classifiers.
"""

import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..complexity import count_params, detector_macs
from ..detection import get_builder, is_detector, list_detectors
from ..detection.architectures import get_architecture
from ..detection.backbone import release_param_count
from ..errors import UsageError, require_whole_number
from ..export import write_detector_onnx
from ..files import write_text_atomic
from ..runtime import autocast_for, check_device
from .classification import (
    check_outputs,
    check_runtimes,
    interleaved_orders,
    machine,
    median_interval,
    on_cpu,
    openvino_request,
    synchronize,
)

__all__ = ["DetectorResult", "benchmark_detector", "plain_detector", "run_detector_benchmark"]


def plain_detector(name: str) -> nn.Module:
    """``name``'s detector on the plain ResNet trunk of the same depth (timm's ``resnet50`` / ``resnet101``)."""
    return get_builder(name)(trunk=get_architecture(name).plain_trunk)


@dataclasses.dataclass
class DetectorResult:
    """One detector's figures."""

    name: str
    params: int
    release_params: int
    gmacs: float
    runtime: str = "torch"  # where it ran: PyTorch, or exported to ONNX in ONNX Runtime or OpenVINO
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
    runtimes: Sequence[str] = ("torch",),
) -> List[DetectorResult]:
    """Time inference of the plain and the ECA detector ``name`` on random images of ``img_size`` (H, W), in each
    of ``runtimes`` (`RUNTIMES`), all interleaved, and count both at 1280 x 800 (plain first in each runtime)."""
    dev = torch.device(device)
    arch = get_architecture(name)
    models = {f"{arch.kind}_{arch.plain_trunk}_fpn": plain_detector(name), name: get_builder(name)()}
    images = [torch.rand(3, *img_size, device=dev) for _ in range(batch_size)]
    results, steps = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for label, model in models.items():
            counts = (count_params(model), release_param_count(model), detector_macs(model) / 1e9)
            model = model.to(dev).eval()
            # the input is already at its size: keep torchvision's transform from resizing it again
            model.transform.min_size, model.transform.max_size = (min(img_size),), max(img_size)
            for runtime, step in _detector_steps(model, images, runtimes, amp, Path(folder) / label).items():
                results.append(DetectorResult(label, *counts, runtime=runtime))
                steps[label, runtime] = step
        for _ in range(warmup):
            for step in steps.values():
                step()
        for rep, order in enumerate(interleaved_orders(results, reps)):
            for r in order:
                synchronize(dev)
                start = time.perf_counter()
                steps[r.name, r.runtime]()
                synchronize(dev)
                r.runs.append(batch_size / (time.perf_counter() - start))
            log(f"repetition {rep + 1}/{reps} done")
    for r in results:
        base = next(b for b in results if b.runtime == r.runtime)  # the plain detector in the same runtime
        r.img_s = statistics.median(r.runs)
        ratios = [a / b for a, b in zip(r.runs, base.runs)]
        r.ratio, r.ratio_interval = statistics.median(ratios), median_interval(ratios)
    return results


def _detector_steps(model: nn.Module, images, runtimes: Sequence[str], amp: bool, path: Path):
    """One inference step of ``model`` on ``images`` per runtime: PyTorch, and the model exported to ONNX as
    ``eca-models export`` writes a detector (one image per call) in ONNX Runtime and OpenVINO."""
    steps: Dict[str, Callable[[], None]] = {}
    if "torch" in runtimes:

        def step() -> None:
            with torch.inference_mode(), autocast_for(images[0].device, amp):
                model(images)

        steps["torch"] = step
    if set(runtimes) - {"torch"}:
        cpu, exported = [image.cpu() for image in images], on_cpu(model)
        with torch.no_grad():
            names = list(exported([cpu[0]])[0])
            run = write_detector_onnx(exported, cpu[0], names, path.with_suffix(".onnx"))
        if "onnxruntime" in runtimes:
            steps["onnxruntime"] = lambda: [run(image) for image in cpu]
        if "openvino" in runtimes:
            infer = openvino_request(path.with_suffix(".onnx"))
            steps["openvino"] = lambda: [infer({0: image.numpy()}) for image in cpu]
    return steps


def benchmark_detector(
    name: str,
    *,
    device: str = "cpu",
    batch_size: int = 1,
    det_size: Tuple[int, int] = (800, 1216),
    amp: bool = False,
    reps: int = 5,
    warmup: int = 2,
    runtimes: Sequence[str] = ("torch",),
    results_file: Optional[Union[str, Path]] = None,
    announce: Callable[[Dict[str, Any]], None] = lambda settings: None,
) -> Dict[str, Any]:
    """Time the detector ``name`` against its plain ResNet twin (`run_detector_benchmark`).

    Args:
        name: A registered detector.
        det_size: The input's height and width.
        runtimes: Where to time them (`RUNTIMES`): PyTorch, and exported to ONNX (as ``eca-models export`` writes a
            detector) in ONNX Runtime or OpenVINO.
        results_file: Also write the report here as JSON.
        announce: Called with the settings before the timing starts.

    Returns:
        The report: ``settings``, ``machine``, ``detectors`` (one `DetectorResult` each, as a dict).
    """
    check_outputs(results_file, None)
    check_device(device)
    if not is_detector(name):
        raise UsageError(f"unknown detector {name!r}; choose one of: {', '.join(list_detectors())}")
    for option, value, least in (("batch_size", batch_size, 1), ("reps", reps, 1), ("warmup", warmup, 0)):
        require_whole_number(option, value, least)
    if not (isinstance(det_size, (tuple, list)) and len(det_size) == 2):
        raise UsageError(f"det_size={det_size!r}: expected two whole numbers, height and width")
    for side in det_size:
        require_whole_number("det_size", side, 1)
    runtimes = check_runtimes(runtimes)
    settings = dict(detector=name, device=device, batch_size=batch_size, det_size=list(det_size), amp=amp,
                    reps=reps, warmup=warmup, runtimes=list(runtimes))  # fmt: skip
    announce(settings)
    results = run_detector_benchmark(name, device, tuple(det_size), batch_size, reps, warmup, amp, print, runtimes)
    report = {"settings": settings, "machine": machine(), "detectors": [dataclasses.asdict(r) for r in results]}
    if results_file:
        write_text_atomic(Path(results_file), json.dumps(report, indent=2) + "\n")
    return report
