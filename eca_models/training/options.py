"""Every choice of a fine-tuning run, in one table: its name (the command line's flag, with dashes), its default,
and which task takes it. The command line's flags, ``args.json`` and `eca_models.finetune`'s keywords are
this table."""

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..detection.backbone import check_trainable_layers
from ..errors import UsageError, first_line, local_path, require_number, require_whole_number
from ..layers import parse_kernel_code
from ..runtime import check_device, default_device, default_workers

__all__ = ["CLASSIFIER", "DETECTOR", "FinetuneOptions"]

CLASSIFIER, DETECTOR = "classifier", "detector"
_FRACTION = (lambda v: 0 <= v < 1, "a number from 0 up to (not including) 1")
RANGES = {  # every real-valued option and the numbers it takes: one check for keywords and flags alike
    "lr": (lambda v: v > 0, "a number above 0"),
    "momentum": _FRACTION,
    "weight_decay": (lambda v: v >= 0, "a number of at least 0"),
    "hflip": (lambda v: 0 <= v <= 1, "a probability, from 0 to 1"),
    "val_split": (lambda v: 0 < v < 1, "a fraction between 0 and 1"),
    "smoothing": _FRACTION,
    "mixup": (lambda v: v >= 0, "a number of at least 0 (mixup's alpha; 0: off)"),
    "cutmix": (lambda v: v >= 0, "a number of at least 0 (cutmix's alpha; 0: off)"),
    "drop_rate": _FRACTION,
    "drop_path_rate": _FRACTION,
}
SCHEDULES = ("cosine", "tanh", "step", "multistep", "plateau", "poly")  # timm's create_scheduler_v2 makes these
RELEASE_EPOCHS, RELEASE_STEPS, RELEASE_LR, RELEASE_BATCH = 12, (8, 11), 0.02, 16  # mmdetection v1's 1x schedule


def _only(task: str, default: Any = None) -> Any:
    return dataclasses.field(default=default, metadata={"task": task})


@dataclasses.dataclass
class FinetuneOptions:
    """A fine-tuning run's options; ``None`` leaves a value to the task (classifiers: 10 epochs, batch 32, lr 0.01;
    detectors: the release's 12 epochs, batch 2, lr 0.02 per 16 images, steps after epochs 8 and 11).

    The fields are the command line's flags (``batch_size`` is ``--batch-size``); see ``eca-models finetune --help``
    for each. Fields marked for one task are refused, in one line, by the other.
    """

    model: str
    output: str
    data: Optional[str] = None
    pretrained: bool = False
    checkpoint: Optional[str] = None
    no_pretrained: bool = False
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    workers: int = dataclasses.field(default_factory=default_workers)
    device: str = dataclasses.field(default_factory=default_device)
    amp: bool = False
    channels_last: bool = False
    opt: str = "sgd"
    lr: Optional[float] = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    hflip: float = 0.5
    save_every_steps: int = 0
    seed: int = 0
    val_split: Optional[float] = _only(CLASSIFIER)
    sched: str = _only(CLASSIFIER, "cosine")
    warmup_epochs: int = _only(CLASSIFIER, 0)
    img_size: int = _only(CLASSIFIER, 224)
    scale: Tuple[float, float] = _only(CLASSIFIER, (0.08, 1.0))
    smoothing: float = _only(CLASSIFIER, 0.0)
    mixup: float = _only(CLASSIFIER, 0.0)
    cutmix: float = _only(CLASSIFIER, 0.0)
    drop_rate: Optional[float] = _only(CLASSIFIER)
    drop_path_rate: float = _only(CLASSIFIER, 0.0)
    freeze_backbone: bool = _only(CLASSIFIER, False)
    add_eca: Optional[str] = None
    train_annotations: Optional[str] = _only(DETECTOR)
    train_images: Optional[str] = _only(DETECTOR)
    val_annotations: Optional[str] = _only(DETECTOR)
    val_images: Optional[str] = _only(DETECTOR)
    weights_backbone: Optional[str] = _only(DETECTOR)
    min_size: Optional[int] = _only(DETECTOR)
    max_size: Optional[int] = _only(DETECTOR)
    warmup_iters: int = _only(DETECTOR, 500)
    trainable_backbone_layers: int = _only(DETECTOR, 3)
    lr_steps: Optional[List[int]] = _only(DETECTOR)
    resume: bool = False
    overwrite: bool = False

    def __post_init__(self) -> None:
        check_device(self.device)
        self.model, self.output = str(self.model), str(local_path(self.output, "output"))
        self.data = None if self.data is None else str(local_path(self.data, "data folder"))
        self.img_size = 224 if self.img_size is None else self.img_size  # None: the default, as for the others
        for name in ("epochs", "batch_size", "img_size", "min_size", "max_size"):
            require_whole_number(name, getattr(self, name), 1)
        for name in ("workers", "save_every_steps", "warmup_epochs", "warmup_iters"):
            require_whole_number(name, getattr(self, name), 0)
        require_whole_number("seed", self.seed, 0, 2**32 - 1)  # what NumPy's generator takes
        if self.lr_steps is not None:
            steps = list(self.lr_steps) if isinstance(self.lr_steps, (list, tuple)) else [self.lr_steps]
            for step in steps:
                require_whole_number("lr_steps", step, 1)
            if steps != sorted(steps):  # timm's multi-step schedule looks them up in order
                raise UsageError(f"lr_steps={steps}: expected epochs in order, earliest first")
            self.lr_steps = steps
        check_trainable_layers(self.trainable_backbone_layers)
        for name, (allowed, expected) in RANGES.items():
            require_number(name, getattr(self, name), allowed, expected)
        self.scale = _scale(self.scale)
        if self.add_eca is not None:
            self.add_eca = str(self.add_eca)
            parse_kernel_code(self.add_eca, len(self.add_eca.lstrip("k")))  # its form; its length with the model
        if sum((self.pretrained, self.checkpoint is not None, self.no_pretrained)) > 1:
            raise UsageError("pretrained=True, checkpoint= and no_pretrained=True exclude each other")
        if self.resume and self.overwrite:
            raise UsageError("resume=True and overwrite=True exclude each other")

    def given(self, task: str) -> List[str]:
        """The flags of ``task``'s options set to other than their defaults."""
        return [
            f"{f.name}="
            for f in dataclasses.fields(self)
            if f.metadata.get("task") == task and _comparable(getattr(self, f.name)) != _comparable(f.default)
        ]

    def use_classifier_defaults(self) -> None:
        """Fill what is left open with the classifiers' defaults; refuse the detectors' options."""
        if self.data is None:
            raise UsageError("data= is required: a folder with train/ and val/ class folders")
        given = self.given(DETECTOR)
        if given:
            raise UsageError(f"{', '.join(given)} are for detectors (e.g. maskrcnn_eca_resnet50_fpn), not {self.model}")
        self.epochs = 10 if self.epochs is None else self.epochs
        self.batch_size = 32 if self.batch_size is None else self.batch_size
        self.lr = 0.01 if self.lr is None else self.lr
        optimizer = self.check_optimizer()
        try:  # timm raises for a name it does not know, or (older timm, 1.0.20 among them) returns None, as for "none"
            scheduler = self.schedule(optimizer)
        except ValueError:
            scheduler = None
        if scheduler is None:
            raise UsageError(f"sched={self.sched!r}: expected one of timm's schedules: {', '.join(SCHEDULES)}")

    def use_detector_defaults(self) -> None:
        """Fill what is left open with the release's recipe (scaled to the batch and epochs); refuse the
        classifiers' options."""
        given = self.given(CLASSIFIER)
        if given:
            raise UsageError(f"{', '.join(given)} are for classifiers; a detector's fine-tuning does not take them")
        self.epochs = RELEASE_EPOCHS if self.epochs is None else self.epochs
        self.batch_size = 2 if self.batch_size is None else self.batch_size
        if self.lr is None:
            processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's, known before the process group exists
            self.lr = RELEASE_LR * self.batch_size * max(1, processes) / RELEASE_BATCH
        if self.lr_steps is None:
            self.lr_steps = [max(1, round(s * self.epochs / RELEASE_EPOCHS)) for s in RELEASE_STEPS]
        self.check_optimizer()

    def optimizer(self, params: List[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """timm's optimizer for ``params`` as the options ask (``opt``, ``lr``, ``weight_decay``, ``momentum``)."""
        return create_optimizer_v2(
            params, opt=self.opt, lr=self.lr, weight_decay=self.weight_decay, momentum=self.momentum
        )

    def schedule(self, optimizer: torch.optim.Optimizer) -> Any:
        """A classifier's timm schedule as the options ask (``sched``, ``epochs``, ``warmup_epochs``)."""
        return create_scheduler_v2(
            optimizer, sched=self.sched, num_epochs=self.epochs, warmup_epochs=self.warmup_epochs
        )[0]

    def check_optimizer(self) -> torch.optim.Optimizer:
        """`optimizer` made for one stand-in parameter: an unknown ``opt`` or a ``momentum`` it cannot take is one
        line before any folder, data or model."""
        try:
            return self.optimizer([torch.nn.Parameter(torch.zeros(1))])
        except ValueError as e:
            raise UsageError(
                f"opt={self.opt!r} with momentum={self.momentum}: timm cannot make it ({first_line(e)}); its "
                "optimizers: timm.optim.list_optimizers()"
            ) from None

    def to_json(self) -> Dict[str, Any]:
        """What ``args.json`` holds: every option, as the run used it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _scale(value: Any) -> Tuple[float, float]:
    """``--scale MIN MAX``: the crop's share of the image, 0 < MIN <= MAX <= 1."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
    if len(pair) != 2 or not numbers or not 0 < pair[0] <= pair[1] <= 1:
        raise UsageError(f"scale={pair or value!r}: expected two numbers MIN MAX with 0 < MIN <= MAX <= 1")
    return (float(pair[0]), float(pair[1]))


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
