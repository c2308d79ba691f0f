"""Export a model to ONNX, TorchScript or a ``torch.export`` program, and check the file against PyTorch.

The model is built under timm's ``set_exportable(True)``, so its blocks take plain operations (the fused
training functions are autograd functions no exporter can write). A classifier's file has a dynamic batch
dimension; a detector's (ONNX or TorchScript) takes one image of any height and width, as torchvision's
detectors do. The file is written beside its target and renamed into place only once it has been loaded back
(ONNX Runtime for ONNX) and its outputs matched PyTorch's within the tolerance: a classifier's at two batch sizes,
a detector's boxes, scores, labels (and masks) on two real-sized images, landscape and portrait.
"""

import contextlib
import json
import logging
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from timm.layers import set_layer_config

from .data.images import IMAGE_ERRORS
from .detection import load_detector
from .detection.coco import read_rgb
from .detection.weights import is_detector_source
from .errors import UsageError, first_line, require_number, require_whole_number
from .factory import load
from .files import atomic_path, check_output_file
from .layers import check_onnx_form, onnx_form

__all__ = [
    "FORMATS",
    "ExportCheck",
    "export",
    "export_model",
    "model_metadata",
    "read_metadata",
    "require_onnx",
    "write_detector_onnx",
    "write_onnx",
]

FORMATS = ("onnx", "torchscript", "exported-program")
DETECTOR_FORMATS = ("onnx", "torchscript")  # torch.export does not take torchvision's detectors
DETECTOR_CHECK_SIZES = ((480, 640), (640, 480))  # height, width: real-sized images, both orientations
OPSET = 18  # a classifier's, and the lowest torch's exporter writes
DETECTOR_OPSET = 17  # the highest torchvision's detection ops are exported at by the TorchScript-based exporter
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
CHECK_BATCH_SIZES = (1, 3)


@dataclass
class ExportCheck:
    """What `export_model` measured: the largest absolute difference from PyTorch's outputs, held against
    ``tolerance`` relative to the outputs' scale (float32 rounding grows with the logits' size)."""

    path: Path
    max_abs_diff: float
    tolerance: float
    batch_sizes: Tuple[int, ...]
    img_size: int = 0
    scale: float = 1.0  # the largest |output| of PyTorch, at least 1
    detections: Optional[int] = None  # a detector's: how many detections were compared (both images)

    @property
    def allowed(self) -> float:
        """The largest difference that passes: ``tolerance * max(1, largest |output|)``."""
        return self.tolerance * self.scale

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.allowed


def model_metadata(model: torch.nn.Module) -> Dict[str, str]:
    """What a deployed file needs to be used: architecture, kernel code, input size, crop, mean and std, classes."""
    cfg = model.pretrained_cfg
    meta = {
        "architecture": cfg.get("architecture", type(model).__name__),
        "kernel_code": getattr(model, "kernel_code", ""),
        "num_classes": model.num_classes,
        "input_size": list(cfg.get("input_size", ())),
        "crop_pct": cfg.get("crop_pct"),
        "interpolation": cfg.get("interpolation"),
        "mean": list(cfg.get("mean", ())),
        "std": list(cfg.get("std", ())),
    }
    if cfg.get("label_names"):
        meta["label_names"] = list(cfg["label_names"])
    return {k: json.dumps(v) for k, v in meta.items()}  # ONNX metadata holds strings: every value as JSON


def write_onnx(
    model, x, path: Path, opset: int = OPSET, meta: Optional[Dict[str, str]] = None, form: str = "blocked"
) -> Callable:
    """Export ``model`` to ONNX at ``path`` (dynamic batch, input ``images``; height and width as ``x``'s) and open it
    in ONNX Runtime's CPU provider; returns a function from a tensor to the output tensor.

    ``form``: ``'blocked'`` writes ECA layers as ONNX Runtime runs them fastest (`eca_models.layers.onnx_form`) and
    every spatial mean as a GlobalAveragePool, which runs in its blocked layout where a ReduceMean does not;
    ``'plain'`` writes the graph as the exporter gives it.
    """
    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings(), onnx_form(form), _unfused(model), _quiet("onnxscript.version_converter"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=opset, dynamic_shapes=({0: batch},),
            input_names=["images"], output_names=["output"], verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    written = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if written != opset:  # where torch's exporter cannot convert its graph, it keeps its own opset and only logs it
        raise UsageError(
            f"opset={opset}: torch's ONNX exporter could not write it (it wrote {written}); choose another"
        )
    if form == "blocked":
        _global_pools(proto.graph)
    session = _save_and_open(proto, path, {**(meta or {}), "onnx_form": json.dumps(form)})
    return lambda t: torch.from_numpy(session.run(None, {"images": t.numpy()})[0])


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    """The logger ``logger_name`` says only errors for the ``with`` block (its warnings, tracebacks included, are of
    what the caller checks and reports itself)."""
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def _unfused(model: torch.nn.Module) -> Iterator[None]:
    """``model``'s ECA blocks in plain operations for the ``with`` block, as timm's ``set_exportable(True)`` builds
    them: their fused autograd functions cannot be traced by an exporter."""
    fused = {m: m.fused for m in model.modules() if hasattr(m, "fused")}
    for module in fused:
        module.fused = False
    try:
        yield
    finally:
        for module, value in fused.items():
            module.fused = value


def _global_pools(graph: Any) -> None:
    """Rewrite, in place, every ReduceMean over the height and width of a 4-D tensor (a spatial mean) as
    GlobalAveragePool (and Flatten, where the mean drops those axes): the same values, in an operation ONNX Runtime
    runs in its blocked layout."""
    from onnx import helper, numpy_helper

    constants = {n.output[0]: n.attribute[0].t for n in graph.node if n.op_type == "Constant" and n.attribute}
    constants.update({t.name: t for t in graph.initializer})
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.input, *graph.value_info]}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute} if node.op_type == "ReduceMean" else {}
        axes = attrs.get("axes")
        if node.op_type == "ReduceMean" and axes is None and node.input[1:] and node.input[1] in constants:
            axes = numpy_helper.to_array(constants[node.input[1]]).tolist()
        if ranks.get(node.input[0]) != 4 or sorted(a % 4 for a in axes or []) != [2, 3]:
            nodes.append(node)
            continue
        pooled = node.output[0] if attrs.get("keepdims", 1) else f"{node.output[0]}_pooled"
        nodes.append(helper.make_node("GlobalAveragePool", [node.input[0]], [pooled], name=f"{node.name}_pool"))
        if pooled != node.output[0]:
            nodes.append(helper.make_node("Flatten", [pooled], [node.output[0]], axis=1, name=f"{node.name}_flat"))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    unused = [t for t in graph.initializer if t.name not in used]  # the means' axes, now read by no node
    for tensor in unused:
        graph.initializer.remove(tensor)


def _save_and_open(proto: Any, path: Path, meta: Dict[str, str]) -> Any:
    """Write an ONNX model with ``meta`` as its metadata and open it in ONNX Runtime's CPU provider."""
    import onnx
    import onnxruntime

    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    options = onnxruntime.SessionOptions()
    # no busy-waiting between runs: it would take the cores from whatever runs next (a benchmark's other models)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _torchscript(model, x, path: Path, opset: int, meta: Dict[str, str]) -> Callable[[torch.Tensor], torch.Tensor]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated, still what many runtimes load
        scripted = torch.jit.script(model)
        torch.jit.save(scripted, str(path), _extra_files={"config.json": json.dumps(meta)})
        loaded = torch.jit.load(str(path))
    return loaded


def _exported_program(model, x, path: Path, opset: int, meta: Dict[str, str]) -> Callable[[torch.Tensor], torch.Tensor]:
    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path), extra_files={"config.json": json.dumps(meta)})
    return torch.export.load(str(path)).module()


_WRITERS = {"onnx": write_onnx, "torchscript": _torchscript, "exported-program": _exported_program}


def export_model(
    model: torch.nn.Module,
    fmt: str,
    out: Union[str, Path],
    img_size: int,
    opset: int = OPSET,
    tolerance: float = 1e-4,
    onnx_form: str = "blocked",
) -> ExportCheck:
    """Export ``model`` (in eval mode, on the CPU) to ``out`` and check the file against it.

    Args:
        model: A model built exportable (``timm.layers.set_layer_config(exportable=True)``).
        fmt: One of `FORMATS`.
        out: The file to write; it appears only once the check has passed.
        img_size: Height and width of the example and check inputs.
        opset: ONNX opset version.
        tolerance: Largest difference from PyTorch's outputs that passes, relative to their scale: the allowed
            difference is ``tolerance * max(1, largest |output|)``.
        onnx_form: How ECA layers are written to ONNX (`write_onnx`'s ``form``).

    Returns:
        The check; where it failed, ``out`` was not written.
    """
    out = Path(out)
    model = model.eval().cpu()
    chans = model.pretrained_cfg.get("input_size", (3,))[0]
    gen = torch.Generator().manual_seed(0)
    example = torch.randn(2, chans, img_size, img_size, generator=gen)
    checks = [torch.randn(n, chans, img_size, img_size, generator=gen) for n in CHECK_BATCH_SIZES]
    suffix = ".tmp.pt2" if fmt == "exported-program" else ".tmp"  # torch.export.save wants a .pt2 name
    with atomic_path(out, suffix) as tmp, torch.no_grad():
        write = partial(write_onnx, form=onnx_form) if fmt == "onnx" else _WRITERS[fmt]
        run = write(model, example, tmp, opset, model_metadata(model))
        pairs = [(run(x).float(), model(x).float()) for x in checks]
        diff = max(float((got - want).abs().max()) for got, want in pairs)
        scale = max([1.0] + [float(want.abs().max()) for _, want in pairs])
        check = ExportCheck(out, diff, tolerance, CHECK_BATCH_SIZES, img_size, scale)
        if not check.passed:
            del run  # a runtime holding the file would keep it on Windows
            tmp.unlink()  # nothing is written
    return check


def detector_metadata(model: torch.nn.Module) -> Dict[str, str]:
    """A deployed detector's facts: architecture, kernel code, resize, mean and std, and its categories in head
    order (``background``: whether label 0 is background)."""
    meta = {k: list(v) if isinstance(v, tuple) else v for k, v in model.detector_cfg.items()}
    meta["label_map"] = model.label_map.to_json()
    return {k: json.dumps(v) for k, v in meta.items()}


def export_detector(
    model: torch.nn.Module,
    fmt: str,
    out: Union[str, Path],
    tolerance: float = 1e-4,
    images: Sequence[torch.Tensor] = (),
) -> ExportCheck:
    """Export a torchvision detector (one image of any size per call) to ``out`` and check the file: on each
    check image, the same number of detections, the same labels, and boxes, scores (and masks) within ``tolerance``
    times the largest of each output (at least 1). ONNX: inputs ``image`` (3, H, W), outputs as the model names
    them (``boxes``, ``labels``, ``scores``, ``masks``); TorchScript: ``model([image])[1][0]``, torchvision's form.
    ``images``: the check images as `read_check_images` gives them (default: two random ones at real size).
    """
    out, model = Path(out), model.eval().cpu()
    gen = torch.Generator().manual_seed(0)
    tensors = list(images) or [torch.rand(3, h, w, generator=gen) for h, w in DETECTOR_CHECK_SIZES]
    with atomic_path(out, ".tmp") as tmp, torch.no_grad():
        expected = [model([t])[0] for t in tensors]
        write = write_detector_onnx if fmt == "onnx" else _detector_torchscript
        run = write(model, tensors[0], list(expected[0]), tmp, detector_metadata(model))
        diff, scale = _compare_detections([run(t) for t in tensors], expected)
        check = ExportCheck(out, diff, tolerance, (1,), max(tensors[0].shape[1:]), scale)
        check.detections = sum(len(e["boxes"]) for e in expected)
        if not check.passed:
            del run
            tmp.unlink()
    return check


def read_check_images(paths: Sequence[Union[str, Path]]) -> List[torch.Tensor]:
    """A detector's check images as float tensors in [0, 1] (what torchvision's detectors take).

    Raises:
        UsageError: An image that cannot be read, named.
    """
    tensors = []
    for path in paths:
        try:
            tensors.append(read_rgb(path).float().div(255))
        except IMAGE_ERRORS as e:
            raise UsageError(f"check image {path} cannot be read ({first_line(e)})") from None
    return tensors


def write_detector_onnx(model, image, names: List[str], path: Path, meta: Optional[Dict[str, str]] = None) -> Callable:
    """Export a torchvision detector to ONNX at ``path`` (input ``image``, one (3, H, W) image of any size; outputs
    ``names``) and open it in ONNX Runtime's CPU provider; returns a function from an image to the outputs."""
    import onnx  # the optional 'export' extra: imported only to export

    axes = {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in names}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, ([image],), str(path), dynamo=False, opset_version=DETECTOR_OPSET, input_names=["image"],
            output_names=names, dynamic_axes=axes,
        )  # fmt: skip
    session = _save_and_open(onnx.load(str(path)), path, meta or {})
    return lambda t: {n: torch.from_numpy(v) for n, v in zip(names, session.run(None, {"image": t.numpy()}))}


def _detector_torchscript(model, image, names: List[str], path: Path, meta: Dict[str, str]) -> Callable:
    loaded = _torchscript(model, image, path, 0, meta)
    return lambda t: loaded([t])[1][0]


def _compare_detections(got: List[Dict[str, torch.Tensor]], expected: List[Dict[str, torch.Tensor]]):
    """The worst difference of any output relative to its scale, as (difference, scale), each expected detection
    paired with the runtime's of the same label and nearest box (near-equal scores may come in another order);
    another number of detections, or a detection with no partner, is an infinite difference."""
    worst = (0.0, 1.0)
    for g, e in zip(got, expected):
        if len(g["boxes"]) != len(e["boxes"]):
            return float("inf"), 1.0
        order = _pair_detections(g, e)
        if order is None:
            return float("inf"), 1.0
        for name in (n for n in e if n != "labels" and len(e[n])):
            diff = float((g[name][order].float() - e[name].float()).abs().max())
            scale = max(1.0, float(e[name].abs().max()))
            worst = max(worst, (diff, scale), key=lambda pair: pair[0] / pair[1])
    return worst


def _pair_detections(got: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor]) -> Optional[torch.Tensor]:
    """For each expected detection, the index of the runtime's detection of the same label with the nearest box
    (each used once); None where a label has no partner left."""
    distance = torch.cdist(expected["boxes"].float(), got["boxes"].float())
    distance[expected["labels"].long()[:, None] != got["labels"].long()[None, :]] = float("inf")
    order = []
    for row in distance:
        j = int(row.argmin())
        if not torch.isfinite(row[j]):
            return None
        order.append(j)
        distance[:, j] = float("inf")
    return torch.tensor(order, dtype=torch.long)


def read_metadata(path: Union[str, Path], fmt: str) -> Dict[str, Any]:
    """The metadata `export_model` stored in a file, decoded."""
    if fmt == "onnx":
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    else:
        files = {"config.json": ""}
        if fmt == "torchscript":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                torch.jit.load(str(path), _extra_files=files)
        else:
            torch.export.load(str(path), extra_files=files)
        props = json.loads(files["config.json"])
    return {k: json.loads(v) for k, v in props.items()}


def require_onnx() -> None:
    """Refuse in one line, naming the extra to install, where ONNX export's packages are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise UsageError(f"ONNX export needs {e.name}: pip install 'eca-models[export]'") from None


def export(
    model: Union[str, Path],
    format: str,
    out: Union[str, Path],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    num_classes: Optional[int] = None,
    pretrained: bool = True,
    img_size: Optional[int] = None,
    opset: Optional[int] = None,
    tolerance: float = 1e-4,
    images: Sequence[Union[str, Path]] = (),
    onnx_form: str = "blocked",
) -> ExportCheck:
    """Load a classifier or a detector in its exportable form and export it to ``out``, checked against PyTorch.

    Args:
        model: A registered name or a model folder.
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        out: The file to write; it is written only if the check passes.
        checkpoint: Weights for a registered name.
        num_classes: Classes of ``checkpoint``'s classifier, when not 1000.
        pretrained: False: random weights (to try the export path).
        img_size: Input height and width (default: the model's).
        opset: ONNX opset version: a classifier's 18 (the default) or newer; a detector's is 17.
        tolerance: Largest difference allowed, relative to the outputs' scale (``tolerance * max(1, largest
            |output|)``).
        images: A detector's check images (default: two synthetic ones at real size); pass photos with objects
            in them so that detections are compared.
        onnx_form: A classifier's ECA layers in ONNX: ``'blocked'``, the form ONNX Runtime runs fastest (its height
            and width fixed), or ``'plain'``, the graph as PyTorch runs it (`eca_models.layers.ONNX_FORMS`). A
            detector's are plain: its image size is free.

    Returns:
        The check: ``passed``, ``max_abs_diff`` (and for a detector, ``detections`` compared).

    Raises:
        UsageError: A folder or unwritable path as ``out``, a format the model cannot take, ONNX's packages
            missing.
    """
    if format not in FORMATS:
        raise UsageError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
    require_number("tolerance", tolerance, lambda v: v >= 0, "a number of at least 0")
    require_whole_number("img_size", img_size, 1)
    out = _check_out(Path(out), format)
    if not pretrained and checkpoint:
        raise UsageError("no_weights=True and checkpoint= exclude each other")
    detector = is_detector_source(str(model))
    _check_for_kind(detector, format, opset, images)
    check_onnx_form(onnx_form)
    if format == "onnx":
        require_onnx()
    checks = read_check_images(images)  # before the model: a bad path costs no load
    with set_layer_config(exportable=True):  # plain operations: exporters cannot write autograd functions
        if detector:
            net = load_detector(model, checkpoint=checkpoint, pretrained=pretrained)
            return export_detector(net, format, out, tolerance=tolerance, images=checks)
        net = load(model, checkpoint=checkpoint, pretrained=pretrained, num_classes=num_classes)
    img_size = img_size or net.pretrained_cfg["input_size"][-1]
    return export_model(net, format, out, img_size, opset or OPSET, tolerance, onnx_form)


def _check_for_kind(detector: bool, format: str, opset: Optional[int], images: Sequence[Any]) -> None:
    """A one-line `UsageError` for what the model's kind does not take: a format, check images (a detector's), an
    opset its exporter does not write (a classifier's, torch's exporter: 18 and newer; a detector's, the
    TorchScript-based one for any image size: `DETECTOR_OPSET` only)."""
    if detector and format not in DETECTOR_FORMATS:
        raise UsageError(f"format={format!r}: a detector exports to {' or '.join(DETECTOR_FORMATS)}")
    if images and not detector:
        raise UsageError("check images are a detector's: a classifier is checked on random batches")
    require_whole_number("opset", opset, 1)
    if detector and opset not in (None, DETECTOR_OPSET):
        raise UsageError(f"opset={opset}: a detector's ONNX is written at opset {DETECTOR_OPSET}; leave opset= out")
    if not detector and opset is not None and opset < OPSET:
        raise UsageError(f"opset={opset}: a classifier's ONNX is written at opset {OPSET} or newer")


def _check_out(out: Path, format: str) -> Path:
    if out.is_dir():
        raise UsageError(f"out={out} is a folder; name the file to write (e.g. {out / 'model'}{SUFFIXES[format]})")
    if not out.parent.is_dir():
        check_output_file(out, "out")  # names a parent that is a file or cannot be written
        raise UsageError(f"out={out}: folder {out.parent} does not exist")
    return check_output_file(out, "out")
