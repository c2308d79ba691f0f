"""Validation as one call: `validate` measures each model (classifiers on ImageNet val, detectors on
COCO-format data), compares it with the reported figures and returns a `Validation` per model, with its
results row and verdict; the rows can be written as JSON or CSV and a full-set measurement kept in the manifest.
"""

import csv
import dataclasses
import fnmatch
import io
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from timm.data.transforms import str_to_interp_mode

from .. import distributed
from ..data.imagenet import ground_truth_file
from ..detection import list_detectors
from ..detection.weights import is_detector_source
from ..errors import (
    DataError,
    ModelUnavailable,
    UsageError,
    local_path,
    require_folder,
    require_number,
    require_suffix,
    require_whole_number,
)
from ..files import check_output_file, write_text_atomic
from ..runtime import check_device, default_device, default_workers
from ..weights import WeightsError
from ..zoo import list_models
from .classification import NOT_SCORED, validate_classifier
from .detection import validate_detector

__all__ = ["ValidateOptions", "Validation", "ValidationRun", "expand_models", "validate", "write_results"]


@dataclasses.dataclass
class ValidateOptions:
    """How to validate (the command line's flags as keywords: ``--batch-size`` is ``batch_size``). None: the model's own
    protocol (its pretrained cfg), the default tolerance (0.3 Top-1/Top-5 points; detectors 0.5 AP points)."""

    checkpoint: Optional[str] = None
    labels: Optional[str] = None
    annotations: Optional[str] = None
    predictions: Optional[str] = None
    min_size: Optional[int] = None
    max_size: Optional[int] = None
    batch_size: int = 64
    workers: int = dataclasses.field(default_factory=default_workers)
    device: str = dataclasses.field(default_factory=default_device)
    amp: bool = False
    channels_last: bool = False
    num_classes: Optional[int] = None
    limit: Optional[int] = None
    img_size: Optional[int] = None
    crop_pct: Optional[float] = None
    interpolation: Optional[str] = None
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    tolerance: Optional[float] = None
    on_error: str = "skip"
    results_file: Optional[str] = None
    record: bool = False

    def __post_init__(self) -> None:
        check_device(self.device)
        for name in ("batch_size", "limit", "img_size", "min_size", "max_size", "num_classes"):
            require_whole_number(name, getattr(self, name), 1)
        require_whole_number("workers", self.workers, 0)
        require_number("crop_pct", self.crop_pct, lambda v: 0 < v <= 1, "a fraction above 0, at most 1")
        require_number("tolerance", self.tolerance, lambda v: v >= 0, "a number of points, at least 0")
        for name, least in (("mean", -math.inf), ("std", 0)):
            value = getattr(self, name)
            numbers = list(value) if isinstance(value, (tuple, list)) else []
            real = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers)
            if value is not None and not (len(numbers) == 3 and real and min(numbers) > least):
                above = " above 0" if least == 0 else ""
                raise UsageError(f"{name}={value!r}: expected three numbers{above}, one per channel (R, G, B)")
        if self.interpolation:
            try:
                str_to_interp_mode(self.interpolation)
            except KeyError:
                raise UsageError(
                    f"interpolation={self.interpolation!r}: choose one of nearest, bilinear, bicubic, box, hamming, "
                    "lanczos"
                ) from None
        if self.on_error not in ("skip", "fail"):
            raise UsageError(f"on_error={self.on_error!r}: choose skip or fail")
        require_suffix("results_file", self.results_file, (".json", ".csv"), "the rows are written as JSON or CSV")


@dataclasses.dataclass
class Validation:
    """One model's validation.

    Attributes:
        row: Its results row: timm's ``validate.py`` columns (``model``, ``top1``, ...) and ours (the reported
            figures, the 95% interval, complexity, ``verdict``); a detector's has COCO's metrics instead.
        notes: What ``record`` did (kept in the manifest, or why not).
    """

    row: Dict[str, Any]
    notes: List[str] = dataclasses.field(default_factory=list)

    @property
    def verdict(self) -> str:
        """``PASS``, ``FAIL``, ``MEASURED`` (nothing to judge against) or ``NOT SCORED`` (no image scored)."""
        return self.row["verdict"]

    @property
    def reason(self) -> str:
        """Why that verdict: the rule applied and, on FAIL, which figure is off and by how much."""
        return self.row["verdict_reason"]

    @property
    def is_detector(self) -> bool:
        return "metrics" in self.row


@dataclasses.dataclass
class ValidationRun:
    """Every model's `Validation`, and the names that could not be loaded (skipped)."""

    validations: List[Validation]
    skipped: List[str]
    names: List[str]

    @property
    def status(self) -> int:
        """The command's exit status: 2 where a model scored no image, 1 where one FAILs, else 0."""
        verdicts = [v.verdict for v in self.validations]
        return 2 if NOT_SCORED in verdicts else 1 if "FAIL" in verdicts else 0


def expand_models(patterns: Sequence[str]) -> List[str]:
    """Names and folders as given, and the registered names each pattern (``'eca_resnet*'``) matches."""
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


def validate(
    models: Union[str, Sequence[str]],
    data: Union[str, Path],
    on_result: Optional[Callable[[Validation], None]] = None,
    **options: Any,
) -> ValidationRun:
    """Measure each model on ``data`` and judge it against its reported figures.

    Args:
        models: Names, patterns (``'eca_resnet*'``) or model folders: all classifiers or all detectors.
        data: ImageNet val (class folders, or flat images with ``labels``); detectors: a COCO-layout root, or an
            image folder with ``annotations``.
        on_result: Called with each model's `Validation` as soon as it is measured (on rank 0).
        **options: `ValidateOptions` fields; ``results_file`` is written again after each model, so an interrupted
            run keeps the rows it measured.

    Returns:
        The validations, in order; with several models, one that cannot be loaded is skipped (named on stderr).

    Raises:
        UsageError: Options that do not go together; every model skipped.
        ModelUnavailable: The one model asked for is unknown.
        WeightsError: Its weights are missing or unusable.
    """
    opts = ValidateOptions(**options)
    names = expand_models([models] if isinstance(models, (str, Path)) else [str(m) for m in models])
    detectors = _check(names, local_path(data, "data folder"), opts)
    validate_one = validate_detector if detectors else validate_classifier
    device = distributed.setup(opts.device)
    run = ValidationRun([], [], names)
    try:
        for name in names:
            try:
                result = Validation(*validate_one(name, str(data), opts, device))
            except (ModelUnavailable, WeightsError) as e:
                if len(names) == 1:
                    raise
                run.skipped.append(name)
                if distributed.is_main():
                    print(f"eca-models validate: skipping {name}: {e}", file=sys.stderr)
                continue
            run.validations.append(result)
            if on_result is not None and distributed.is_main():
                on_result(result)
            if opts.results_file and distributed.is_main():  # the rows so far: an interrupted run keeps them
                write_results(Path(opts.results_file), [v.row for v in run.validations])
    finally:
        distributed.cleanup()
    if not run.validations:
        raise UsageError(f"none of the {len(names)} models could be loaded (see the lines above)")
    return run


def _check(names: List[str], data: Path, opts: ValidateOptions) -> bool:
    """Whether the models are detectors; missing inputs, options that do not go with them and unwritable outputs
    refused (before any model or weights are loaded)."""
    require_folder(data)
    for name in ("labels", "annotations"):
        if getattr(opts, name) and not Path(getattr(opts, name)).is_file():
            raise DataError(f"{name}={getattr(opts, name)}: no such file")
    if opts.checkpoint and len(names) > 1:
        raise UsageError(
            "checkpoint= goes with one model; for several, set ECA_MODELS_WEIGHTS_DIR to converted folders"
        )
    for name in ("results_file", "predictions"):
        if getattr(opts, name):
            check_output_file(getattr(opts, name), name)
    detectors = [is_detector_source(name) for name in names]
    if any(detectors) and not all(detectors):
        raise UsageError("validate classifiers and detectors in separate runs: they need other data")
    if not any(detectors) and (opts.annotations or opts.predictions):
        raise UsageError("annotations= and predictions= are for detectors (e.g. maskrcnn_eca_resnet50_fpn)")
    if opts.predictions and len(names) > 1:
        raise UsageError("predictions= goes with one model")
    if not any(detectors):
        ground_truth_file(data, opts.labels)
    return all(detectors)


def write_results(path: Path, rows: List[Dict[str, Any]]) -> None:
    """The rows as JSON (a list) or CSV (one line per model; lists joined by ``;``, detectors' metrics as
    columns, every row's columns, empty where a row has none: a box-only detector beside a Mask R-CNN), written
    atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        write_text_atomic(path, json.dumps(rows, indent=2) + "\n")
        return
    rows = [_flat_row(row) for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
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
