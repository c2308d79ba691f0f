"""Export a model to ONNX, TorchScript or a ``torch.export`` program, and check the file against PyTorch.

The model is built under timm's ``set_exportable(True)``, so its blocks take plain operations (the fused
training functions are autograd functions no exporter can write). The file has a dynamic batch dimension,
is written beside its target and renamed into place only once it has been loaded back (ONNX Runtime for
ONNX) and its outputs at two batch sizes matched PyTorch's within the tolerance.
"""

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple, Union

import torch
from timm.layers import set_layer_config

from .detection.weights import is_detector_source
from .errors import UsageError
from .factory import load
from .files import atomic_path, check_output_file

__all__ = [
    "FORMATS",
    "ExportCheck",
    "export",
    "export_model",
    "model_metadata",
    "read_metadata",
    "require_onnx",
    "write_onnx",
]

FORMATS = ("onnx", "torchscript", "exported-program")
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


def write_onnx(model, x, path: Path, opset: int = 18, meta: Optional[Dict[str, str]] = None) -> Callable:
    """Export ``model`` to ONNX at ``path`` (dynamic batch, input ``images``) and open it in ONNX Runtime's CPU
    provider; returns a function from a tensor to the output tensor."""
    import onnx  # the optional 'export' extra: imported only to export
    import onnxruntime

    batch = torch.export.Dim("batch", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            model, (x,), dynamo=True, opset_version=opset, dynamic_shapes=({0: batch},),
            input_names=["images"], output_names=["output"], verbose=False,
        )  # fmt: skip
    proto = program.model_proto
    for key, value in (meta or {}).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    options = onnxruntime.SessionOptions()
    # no busy-waiting between runs: it would take the cores from whatever runs next (a benchmark's other models)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda t: torch.from_numpy(session.run(None, {"images": t.numpy()})[0])


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
    opset: int = 18,
    tolerance: float = 1e-4,
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
        run = _WRITERS[fmt](model, example, tmp, opset, model_metadata(model))
        pairs = [(run(x).float(), model(x).float()) for x in checks]
        diff = max(float((got - want).abs().max()) for got, want in pairs)
        scale = max([1.0] + [float(want.abs().max()) for _, want in pairs])
        check = ExportCheck(out, diff, tolerance, CHECK_BATCH_SIZES, img_size, scale)
        if not check.passed:
            del run  # a runtime holding the file would keep it on Windows
            tmp.unlink()  # nothing is written
    return check


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
    opset: int = 18,
    tolerance: float = 1e-4,
) -> ExportCheck:
    """Load a classifier in its exportable form and export it to ``out``, checked against PyTorch.

    Args:
        model: A registered name or a model folder.
        format: ``onnx``, ``torchscript`` or ``exported-program``.
        out: The file to write; it is written only if the check passes.
        checkpoint: Weights for a registered name.
        num_classes: Classes of ``checkpoint``'s classifier, when not 1000.
        pretrained: False: random weights (to try the export path).
        img_size: Input height and width (default: the model's).
        opset: ONNX opset version.
        tolerance: Largest difference allowed, relative to the outputs' scale (``tolerance * max(1, largest
            |output|)``).

    Returns:
        The check: ``passed``, ``max_abs_diff``.

    Raises:
        UsageError: A folder or unwritable path as ``out``, a detector, ONNX's packages missing.
    """
    if format not in FORMATS:
        raise UsageError(f"format={format!r}: choose one of {', '.join(FORMATS)}")
    out = _check_out(Path(out), format)
    if not pretrained and checkpoint:
        raise UsageError("no_weights=True and checkpoint= exclude each other")
    if is_detector_source(str(model)):
        raise UsageError(
            f"{model} is a detector: export takes classifiers only for now (torchvision's detectors need their "
            "own ONNX path, not built yet); in Python, torch.export or TorchScript of the detector may serve"
        )
    if format == "onnx":
        require_onnx()
    with set_layer_config(exportable=True):  # plain operations: exporters cannot write autograd functions
        net = load(model, checkpoint=checkpoint, pretrained=pretrained, num_classes=num_classes)
    img_size = img_size or net.pretrained_cfg["input_size"][-1]
    return export_model(net, format, out, img_size, opset=opset, tolerance=tolerance)


def _check_out(out: Path, format: str) -> Path:
    if out.is_dir():
        raise UsageError(f"out={out} is a folder; name the file to write (e.g. {out / 'model'}{SUFFIXES[format]})")
    if not out.parent.is_dir():
        check_output_file(out, "out")  # names a parent that is a file or cannot be written
        raise UsageError(f"out={out}: folder {out.parent} does not exist")
    return check_output_file(out, "out")
