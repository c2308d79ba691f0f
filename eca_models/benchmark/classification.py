"""The efficiency half of the paper's Table 3, measured on the user's hardware.

For one backbone: timm's plain ResNet, SE-ResNet and CBAM-ResNet of the same depth (same stem
and layout as ours), timm's own ECA path with our kernel sizes, and our ECA-ResNet; or timm's
plain MobileNetV2 and ours. For each: exact parameters, GMACs, inference and training
images/s (forward + backward + optimizer step), each the median of several timed repetitions,
and each model's ratio to the plain one as the median of their ratios within a repetition, with a
95% interval for that median (which says whether the run resolves the difference at all). The
models are interleaved so that drift in the machine's speed hits all alike, and their order is
shuffled afresh every repetition (seeded) so that none always runs right after the same other model
(whose memory and caches it inherits). A rotation would not do that: rotated, every model but the
first of a repetition follows the same model every time.
"""

import copy
import ctypes
import ctypes.util
import dataclasses
import importlib.util
import inspect
import io
import json
import math
import platform
import random
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar, Union

import timm
import torch
from safetensors.torch import save_file
from timm.layers import EcaModule
from timm.models.resnet import BasicBlock, Bottleneck, ResNet

from ..complexity import count_macs, count_params
from ..errors import UsageError, require_suffix, require_whole_number
from ..export import require_onnx, write_onnx
from ..files import check_output_file, write_text_atomic
from ..insertion import add_eca as insert_eca
from ..layers import check_onnx_form
from ..runtime import autocast_for, check_device
from ..weights import read_weights_file

__all__ = [
    "BACKBONES",
    "PAPER_TABLE3",
    "Result",
    "benchmark",
    "build_models",
    "interleaved_orders",
    "keep_freed_memory",
    "median_interval",
    "run_benchmark",
    "time_loading",
]

T = TypeVar("T")

DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 34: (BasicBlock, (3, 4, 6, 3)), 50: (Bottleneck, (3, 4, 6, 3))}
DEPTHS.update({101: (Bottleneck, (3, 4, 23, 3)), 152: (Bottleneck, (3, 8, 36, 3))})
# the run's settings, as the report and the command's first line give them
SETTINGS = ("backbone", "device", "batch_size", "img_size", "channels_last", "amp", "compile", "trace", "runtimes")
SETTINGS += ("onnx_form", "reps", "warmup", "iters", "add_eca", "models")
# where the models run: PyTorch (inference and training, mode names "infer" and "train"), or exported to ONNX
# (inference only) in ONNX Runtime's CPU provider ("ort") or OpenVINO's CPU plugin ("ov")
RUNTIMES = {"torch": ("infer", "train"), "onnxruntime": ("ort",), "openvino": ("ov",)}
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenetv2")

# Paper Table 3 (2080Ti GPUs, batch not stated): training and inference FPS.
PAPER_TABLE3 = {
    "resnet50": {"plain": (1024, 1855), "se": (759, 1620), "cbam": (472, 1213), "eca": (785, 1805)},
    "resnet101": {"plain": (386, 1174), "se": (367, 1044), "cbam": (270, 635), "eca": (380, 1089)},
    "resnet152": {"plain": (281, 815), "se": (268, 761), "eca": (279, 785)},
    "mobilenetv2": {"plain": (711, 2086), "se": (671, 2000), "eca": (676, 2010)},
}


@dataclasses.dataclass
class Result:
    """One model's figures."""

    name: str
    kind: str  # plain, se, cbam, timm-eca, eca
    params: int
    gmacs: float
    infer_img_s: float = 0.0
    infer_spread: float = 0.0  # (max - min) / median of the repetitions, percent
    train_img_s: float = 0.0
    train_spread: float = 0.0
    infer_ratio: float = 0.0  # to the plain model: median over repetitions of the ratio within each
    train_ratio: float = 0.0
    # 95% interval of that median (see median_interval); None with fewer than 6 repetitions
    infer_ratio_interval: Optional[Tuple[float, float]] = None
    train_ratio_interval: Optional[Tuple[float, float]] = None
    infer_runs: List[float] = dataclasses.field(default_factory=list)
    train_runs: List[float] = dataclasses.field(default_factory=list)
    # inference of the model exported to ONNX, where asked: in ONNX Runtime (CPU provider) and OpenVINO (CPU)
    ort_img_s: float = 0.0
    ort_spread: float = 0.0
    ort_ratio: float = 0.0
    ort_ratio_interval: Optional[Tuple[float, float]] = None
    ort_runs: List[float] = dataclasses.field(default_factory=list)
    ov_img_s: float = 0.0
    ov_spread: float = 0.0
    ov_ratio: float = 0.0
    ov_ratio_interval: Optional[Tuple[float, float]] = None
    ov_runs: List[float] = dataclasses.field(default_factory=list)
    paper_infer_ratio: Optional[float] = None
    paper_train_ratio: Optional[float] = None


def _timm_eca(depth: int, kernel_sizes) -> torch.nn.Module:
    """timm's ResNet with timm's EcaModule at our kernel sizes: its EcaModule adapts k to the channel
    count when given one, so each stage's module is built from its width with the size fixed."""
    block, layers = DEPTHS[depth]
    widths = [64 * 2**i * block.expansion for i in range(4)]
    sizes = dict(zip(widths, kernel_sizes))
    return ResNet(
        block, layers, block_args=dict(attn_layer=lambda channels, **kw: EcaModule(kernel_size=sizes[channels]))
    )


def build_models(backbone: str, add_eca: Optional[str] = None) -> Dict[str, Callable[[], torch.nn.Module]]:
    """Constructors of the models to compare, keyed by display name, the plain model first; with ``add_eca`` (a
    kernel code or ``'adaptive'``), ``backbone`` is any timm model, timed without and with `eca_models.add_eca`."""
    if add_eca is not None:
        return {
            backbone: partial(timm.create_model, backbone),
            f"{backbone}+eca": partial(_with_eca, backbone, add_eca),
        }
    if backbone not in BACKBONES:
        raise UsageError(f"backbone={backbone!r}: one of {', '.join(BACKBONES)}, or any timm model with add_eca=")
    if backbone == "mobilenetv2":
        return {
            "mobilenetv2_100": partial(timm.create_model, "mobilenetv2_100"),
            "eca_mobilenetv2": partial(timm.create_model, "eca_mobilenetv2"),
        }
    depth = int(backbone.removeprefix("resnet"))
    block, layers = DEPTHS[depth]
    ours = partial(timm.create_model, f"eca_{backbone}")
    kernel_sizes = timm.create_model(f"eca_{backbone}", num_classes=0).kernel_sizes if depth else None
    return {
        backbone: partial(timm.create_model, backbone),
        f"se{backbone}": partial(timm.create_model, f"se{backbone}"),
        f"cbam_{backbone}": partial(ResNet, block, layers, block_args=dict(attn_layer="cbam")),
        f"timm_eca_{backbone}": partial(_timm_eca, depth, kernel_sizes),
        f"eca_{backbone}": ours,
    }


def select_models(built: Dict[str, T], names: Optional[Sequence[str]]) -> Dict[str, T]:
    """The plain model (the first) and those of ``built`` named in ``names`` (all where None), in their order."""
    if names is None:
        return built
    unknown = [n for n in names if n not in built]
    if unknown:
        raise UsageError(f"models={list(names)!r}: {unknown[0]!r} is not compared here; choose from {', '.join(built)}")
    plain = next(iter(built))
    return {n: make for n, make in built.items() if n == plain or n in names}


def _with_eca(name: str, kernel_sizes: str) -> torch.nn.Module:
    return insert_eca(timm.create_model(name), kernel_sizes)


def keep_freed_memory() -> bool:
    """Make glibc serve every allocation from its heap and keep what is freed there for reuse.

    By default glibc maps each allocation above 32 MiB (a block-sized activation at batch 32) fresh from
    the OS and unmaps it when freed, so every step faults its pages in again; on a shared virtual machine
    that cost is large and erratic and swamps what the models compute. With mmap off and trimming off,
    freed memory is reused, as jemalloc, tcmalloc or a GPU's caching allocator do. It holds for the rest of
    the process. Returns False where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or not name:
        return False
    libc = ctypes.CDLL(name)
    m_trim_threshold, m_mmap_max = -1, -4  # <malloc.h>
    return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**31 - 1))


def _kind(name: str) -> str:
    for prefix, kind in (("timm_eca", "timm-eca"), ("eca", "eca"), ("se", "se"), ("cbam", "cbam")):
        if name.startswith(prefix):
            return kind
    return "eca" if name.endswith("+eca") else "plain"


def synchronize(device: torch.device) -> None:
    """Wait for ``device``'s queued work (CUDA), so that a timer reads the work's end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(
    backbone: str = "resnet50",
    device: str = "cpu",
    batch_size: int = 32,
    img_size: int = 224,
    channels_last: bool = False,
    amp: bool = False,
    compile: bool = False,
    reps: int = 5,
    warmup: int = 2,
    iters: int = 1,
    train: bool = True,
    log: Callable[[str], None] = print,
    trace: bool = False,
    runtimes: Sequence[str] = ("torch",),
    onnx_form: str = "blocked",
    add_eca: Optional[str] = None,
    models: Optional[Sequence[str]] = None,
) -> List[Result]:
    """Measure the models of ``backbone``; every repetition times each model once, in an order shuffled
    afresh each repetition (the same sequence of orders in every run).

    Args:
        backbone: One of `BACKBONES`.
        device: 'cpu' or 'cuda'.
        batch_size: Images per step.
        img_size: Input size.
        channels_last: Channels-last tensors and weights.
        amp: Autocast (float16 on CUDA, bfloat16 on CPU).
        compile: ``torch.compile`` every model (warm-up includes the compilation).
        reps: Timed repetitions per model and mode; the median is reported.
        warmup: Untimed repetitions before them.
        iters: Steps per timed repetition.
        train: Also time training steps.
        log: Progress lines.
        trace: Time every model as ``torch.fx.symbolic_trace`` gives it, the path FX tools run.
        runtimes: Where to time the models (`RUNTIMES`): ``'torch'`` (inference, and training unless ``train`` is
            False), ``'onnxruntime'``, ``'openvino'`` (inference, each model as `eca_models.export.write_onnx` writes).
        onnx_form: How the ECA layers are written to ONNX (`eca_models.layers.ONNX_FORMS`).
        add_eca: Time ``backbone`` (any timm model) without and with `eca_models.add_eca` at these kernel sizes.
        models: Time only these of the comparison's models, by name, and the plain one (first: the ratios' base).
    """
    dev = torch.device(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 1000, (batch_size,), device=dev)
    results: List[Result] = []
    steps: Dict[str, Dict[str, Callable[[], None]]] = {}
    for name, make in select_models(build_models(backbone, add_eca), models).items():
        model = make()
        params, macs = count_params(model), count_macs(model, (3, img_size, img_size))
        results.append(Result(name, _kind(name), params, macs / 1e9))
        model = model.to(dev, memory_format=fmt)
        steps[name] = _steps(model, x, y, dev, amp, compile, train, trace) if "torch" in runtimes else {}
        steps[name].update(_exported_steps(model, x, runtimes, onnx_form))
    modes = [m for r in runtimes for m in RUNTIMES[r] if train or m != "train"]
    for mode in modes:
        _time_mode(mode, results, steps, dev, batch_size * iters, reps, warmup, iters, log)
    _summarise(results, modes, PAPER_TABLE3.get(backbone, {}))
    return results


def _time_mode(mode: str, results: List[Result], steps, dev: torch.device, images: int, reps, warmup, iters, log):
    """``warmup`` untimed rounds, then ``reps`` timed ones in interleaved orders: each model's images/s per
    repetition appended to its ``<mode>_runs``."""
    for _ in range(warmup):
        for name in steps:
            steps[name][mode]()
    for rep, order in enumerate(interleaved_orders(results, reps)):
        for r in order:
            synchronize(dev)
            start = time.perf_counter()
            for _ in range(iters):
                steps[r.name][mode]()
            synchronize(dev)
            getattr(r, f"{mode}_runs").append(images / (time.perf_counter() - start))
        log(f"{mode} repetition {rep + 1}/{reps} done")


def _summarise(results: List[Result], modes: Sequence[str], paper: Dict[str, Tuple[int, int]]) -> None:
    """Medians, spreads and ratios to the plain model (the first), with their intervals and the paper's ratios."""
    base = results[0]
    for r in results:
        for mode in modes:
            runs = getattr(r, f"{mode}_runs")
            median = statistics.median(runs)
            setattr(r, f"{mode}_img_s", median)
            setattr(r, f"{mode}_spread", 100 * (max(runs) - min(runs)) / median)
            # both models of a pair ran within one repetition, so a change in the machine's state between
            # repetitions (another tenant, free huge pages) cancels out of their ratio
            ratios = [a / b for a, b in zip(runs, getattr(base, f"{mode}_runs"))]
            setattr(r, f"{mode}_ratio", statistics.median(ratios))
            setattr(r, f"{mode}_ratio_interval", median_interval(ratios))
        if r.kind in paper and "plain" in paper:
            r.paper_train_ratio = paper[r.kind][0] / paper["plain"][0]
            r.paper_infer_ratio = paper[r.kind][1] / paper["plain"][1]


def interleaved_orders(items: Sequence[T], reps: int) -> Iterator[List[T]]:
    """The order in which each of ``reps`` repetitions runs ``items``: shuffled afresh every repetition, from a
    fixed seed, so that no item always runs right after the same other one and every run repeats the sequence."""
    order, shuffle = list(items), random.Random(0)
    for _ in range(reps):
        shuffle.shuffle(order)
        yield list(order)


def median_interval(values: Sequence[float], level: float = 0.95) -> Optional[Tuple[float, float]]:
    """A distribution-free confidence interval for the median of the population ``values`` were drawn from.

    The interval between the k-th smallest and the k-th largest value, with k the largest count such that
    fewer than k of n independent draws fall below the median with probability at most (1 - level) / 2
    (a binomial tail with p = 1/2), so it covers the median with probability at least ``level`` whatever the
    distribution, treating the values as independent draws.

    Args:
        values: The sample.
        level: Coverage, between 0 and 1.

    Returns:
        (low, high), or None when there are too few values for any interval of that coverage (fewer than 6
        at 0.95).
    """
    n, tail, k = len(values), 0.0, 0
    while k < n and tail + math.comb(n, k) / 2**n <= (1 - level) / 2:
        tail += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


def _steps(model, x, y, device, amp, compile, train, trace=False) -> Dict[str, Callable[[], None]]:
    # a trace fixes the mode it was taken in (BatchNorm's batch or running statistics), so one per mode; the
    # traced modules share the model's parameters
    traced = {m: torch.fx.symbolic_trace(model.train(m == "train")) if trace else model for m in ("infer", "train")}
    run = {m: torch.compile(t) if compile else t for m, t in traced.items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()

    def infer() -> None:
        model.eval()
        with torch.inference_mode(), autocast_for(device, amp):
            run["infer"](x)

    def train_step() -> None:
        model.train()
        with autocast_for(device, amp):
            loss = loss_fn(run["train"](x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {"infer": infer, "train": train_step}


def on_cpu(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` where it is on the CPU, else a copy of it there (the exporters trace on the CPU; the model itself
    stays where PyTorch's own steps run it)."""
    on_device = any(t.device.type != "cpu" for t in [*model.parameters(), *model.buffers()])
    return copy.deepcopy(model).cpu() if on_device else model


def _exported_steps(model: torch.nn.Module, x: torch.Tensor, runtimes: Sequence[str], form: str):
    """Inference of ``model`` exported to ONNX (as ``eca-models export`` writes it, in ``form``) on the same batch, in
    each runtime of ``runtimes`` that runs ONNX files: ONNX Runtime's CPU provider, OpenVINO's CPU plugin."""
    exported = [r for r in runtimes if r != "torch"]
    if not exported:
        return {}
    batch, steps = x.cpu().contiguous(), {}
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        path = Path(folder) / "model.onnx"
        run = write_onnx(on_cpu(model).eval(), batch[:2], path, form=form)
        if "onnxruntime" in exported:
            steps["ort"] = lambda: run(batch)
        if "openvino" in exported:
            infer, images = openvino_request(path), batch.numpy()
            steps["ov"] = lambda: infer({0: images})
    return steps


def openvino_request(path: Path) -> Callable:
    """The ONNX file at ``path`` compiled by OpenVINO for its CPU plugin, as one inference request's ``infer``
    (requests run one at a time, as the other runtimes are timed)."""
    import openvino

    return openvino.Core().compile_model(str(path), "CPU").create_infer_request().infer


def time_loading(model_name: str, reps: int = 5) -> Dict[str, float]:
    """Seconds to read one checkpoint of ``model_name`` from safetensors and from the authors' pickle
    format (``torch.load(weights_only=True)``): the median of ``reps`` reads of files in one folder."""
    model = timm.create_model(model_name)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as folder:
        pickle_path, safe_path = Path(folder) / f"{model_name}.pth.tar", Path(folder) / "model.safetensors"
        buffer = io.BytesIO()
        torch.save({"epoch": 0, "arch": model_name, "state_dict": {f"module.{k}": v for k, v in state.items()}}, buffer)
        pickle_path.write_bytes(buffer.getvalue())
        save_file(state, str(safe_path))
        out = {}
        for label, path in (("safetensors", safe_path), ("pickle", pickle_path)):
            runs = []
            for _ in range(reps):
                start = time.perf_counter()
                read_weights_file(path)
                runs.append(time.perf_counter() - start)
            out[label] = statistics.median(runs)
        out["file_mb"] = safe_path.stat().st_size / 2**20
    return out


def machine() -> Dict[str, str]:
    """What the figures were measured on."""
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
    }
    info["cpu"] = _cpu_name()
    info["threads"] = str(torch.get_num_threads())
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def benchmark(
    backbone: str = "resnet50",
    *,
    keep_memory: bool = False,
    results_file: Optional[Union[str, Path]] = None,
    plot: Optional[Union[str, Path]] = None,
    announce: Callable[[Dict[str, Any]], None] = lambda settings: None,
    **timing: Any,
) -> Dict[str, Any]:
    """The paper's Table 3 on this machine: `run_benchmark` on ``backbone``'s models, and the time to load
    our checkpoint from safetensors against the authors' pickle.

    Args:
        backbone: One of `BACKBONES`.
        keep_memory: glibc: reuse freed memory instead of faulting fresh pages in every step (less noise).
        results_file: Also write the report here as JSON.
        plot: Also draw the images/s ratios here as a bar chart (PNG).
        announce: Called with the settings before the timing starts.
        **timing: `run_benchmark`'s arguments (``device``, ``batch_size``, ``img_size``, ``reps``, ...).

    Returns:
        The report: ``settings``, ``machine``, ``models`` (one `Result` each, as a dict), ``loading``,
        ``paper_table3``.
    """
    check_outputs(results_file, plot)
    if keep_memory and not keep_freed_memory():
        raise UsageError("keep_memory=True works with glibc on Linux only; run without it")
    call = inspect.signature(run_benchmark).bind(backbone, **timing)  # an unknown keyword: TypeError
    call.apply_defaults()
    check_device(call.arguments["device"])
    for name, least in (("batch_size", 1), ("img_size", 1), ("reps", 1), ("warmup", 0), ("iters", 1)):
        require_whole_number(name, call.arguments[name], least)
    call.arguments["runtimes"] = check_runtimes(call.arguments["runtimes"])
    check_onnx_form(call.arguments["onnx_form"])
    settings = {k: call.arguments[k] for k in SETTINGS}
    settings["keep_memory"] = keep_memory
    announce(settings)
    results = run_benchmark(**call.arguments)
    report = {
        "settings": settings,
        "machine": machine(),
        "models": [dataclasses.asdict(r) for r in results],
        "loading": time_loading(results[-1].name) if call.arguments["add_eca"] is None else None,
        "paper_table3": PAPER_TABLE3.get(backbone),
    }
    if results_file:
        write_text_atomic(Path(results_file), json.dumps(report, indent=2) + "\n")
    if plot:
        from ..plots import plot_benchmark  # matplotlib, only when drawing (start-up time)

        plot_benchmark(
            results,
            Path(plot),
            f"{backbone}, batch {settings['batch_size']}, {settings['img_size']}px, {settings['device']}",
        )
    return report


def check_runtimes(runtimes: Sequence[str]) -> Tuple[str, ...]:
    """``runtimes`` as a tuple, refused in one line where one is unknown or its packages are missing."""
    runtimes = (runtimes,) if isinstance(runtimes, str) else tuple(runtimes)
    if not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise UsageError(f"runtimes={list(runtimes)!r}: choose from {', '.join(RUNTIMES)}")
    if set(runtimes) - {"torch"}:
        require_onnx()
    if "openvino" in runtimes and importlib.util.find_spec("openvino") is None:
        raise UsageError("runtimes=['openvino'] needs OpenVINO: pip install 'eca-models[openvino]'")
    return runtimes


def check_outputs(results_file: Optional[Union[str, Path]], plot: Optional[Union[str, Path]]) -> None:
    """Refuse, before any timing, an output that cannot be written, or whose name says another format."""
    require_suffix("results_file", results_file, (".json",), "the report is JSON")
    require_suffix("plot", plot, (".png",), "the chart is a PNG")
    for name, path in (("results_file", results_file), ("plot", plot)):
        if path:
            check_output_file(path, name)
