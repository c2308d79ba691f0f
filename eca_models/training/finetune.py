"""Fine-tuning as one call, for classifiers and detectors alike: `finetune`."""

import dataclasses
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import timm

from ..detection.weights import is_detector_source
from ..errors import UsageError
from ..factory import require_model
from ..zoo import list_models
from .classification import finetune_classifier
from .detection import finetune_detector
from .options import FinetuneOptions
from .runner import RunInterrupted, run_in_folder
from .state import CHECKPOINT

__all__ = ["FinetuneResult", "RUN_FILES", "RunInterrupted", "finetune"]

RUN_FILES = (
    CHECKPOINT,
    "metrics.jsonl",
    "args.json",
    "curves.png",
    "skipped_images.txt",
    "model.safetensors",
    "config.json",
    "README.md",
)  # what a run writes in its folder: all that overwrite=True removes


@dataclasses.dataclass
class FinetuneResult:
    """A finished run: its folder (a model folder: ``eca_models.load(run_dir)``), the best epoch's validation
    metrics, and every epoch's entry (``metrics.jsonl``)."""

    run_dir: Path
    best: Dict[str, Any]
    history: List[Dict[str, Any]]


def finetune(
    model: str, data: Optional[Union[str, Path]] = None, *, output: Union[str, Path], **options: Any
) -> FinetuneResult:
    """Fine-tune a classifier on class folders, or a detector on COCO-format data, resumable.

    Example:
        ```python
        result = eca_models.finetune("eca_resnet50", "flowers/", output="runs/flowers", epochs=5, batch_size=16)
        model = eca_models.load(result.run_dir)
        ```

    Args:
        model: An architecture (``eca_resnet50``, ``maskrcnn_eca_resnet50_fpn``, ...) or a model folder.
        data: A folder with ``train/`` and ``val/`` class folders (or class folders and ``val_split``); for a
            detector, a COCO-layout root (or the ``train_annotations`` ... options).
        output: The run folder: checkpoints, metrics, curves and the best model.
        **options: `FinetuneOptions` fields (``epochs``, ``batch_size``,
            ``lr``, ``resume``, ...); a field of the other task is refused.

    Returns:
        The run's folder, best metrics and history.

    Raises:
        UsageError: Options that do not go with the model or each other, or out of their range; too little data.
        UnknownModel: ``model`` is neither a registered name nor a model folder.
        RunDirError: ``output`` holds another run (pass ``resume=True`` or ``overwrite=True``).
        RunInterrupted: Ctrl-C, after the position was saved (``resume=True`` continues it).
    """
    opts = FinetuneOptions(model=str(model), output=str(output), data=None if data is None else str(data), **options)
    if is_detector_source(opts.model):
        opts.use_detector_defaults()
        task = finetune_detector
    else:
        opts.use_classifier_defaults()
        require_model(opts.model)  # before the run folder, the weights or a word about training from scratch
        ours = opts.model.split(".")[0] in list_models()
        if opts.add_eca is None and timm.is_model(opts.model) and not ours:
            raise UsageError(
                f"{opts.model} is not one of the package's ECA models: add_eca= puts the paper's layers into it (a "
                "kernel code such as 'k3557', or 'adaptive'), or choose one of `eca-models list`"
            )
        if opts.add_eca is not None and ours:
            raise UsageError(f"{opts.model} has ECA already: add_eca= is for other timm models (resnet50, ...)")
        task = finetune_classifier
    progress = run_in_folder(opts, RUN_FILES, lambda run_dir, device: task(opts, run_dir, device))
    return FinetuneResult(Path(opts.output), progress.best, progress.history)
