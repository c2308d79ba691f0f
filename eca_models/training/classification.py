"""Fine-tuning a classifier on class folders: the model with a new classifier, timm's transforms, optimizer,
scheduler, mixup and losses, and the `Task` the shared runner trains.

The best model is written into the run folder as a Hub-format folder (model.safetensors, config.json, README.md)
whenever the validation Top-1 improves.
"""

import dataclasses
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import timm
import torch
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from .. import distributed
from ..complexity import count_macs, count_params
from ..data.folders import ClassFolders, find_class_folders
from ..data.images import ImageListDataset, ShardSampler, unreadable
from ..errors import UsageError
from ..evaluation.classification import evaluate
from ..factory import load
from ..insertion import add_eca
from ..plots import plot_curves
from ..runtime import loader_workers
from ..weights import WeightsError, find_checkpoint
from ..weights.folders import write_hub_files
from ..weights.model_card import render_model_card
from ..zoo import AVAILABLE, weights_state
from .options import FinetuneOptions
from .runner import Progress, StepResult, Task, run_task, seed_everything, unreadable_recorder

__all__ = ["Recipe", "finetune_classifier", "start_classifier"]


def start_classifier(options: FinetuneOptions, num_classes: int) -> torch.nn.Module:
    """The model to fine-tune (pretrained, ``checkpoint`` or scratch) with a new classifier of ``num_classes``."""
    kwargs: Dict[str, Any] = dict(drop_path_rate=options.drop_path_rate)
    if options.drop_rate is not None:
        kwargs["drop_rate"] = options.drop_rate
    if options.checkpoint:
        model = load(options.model, checkpoint=options.checkpoint, **kwargs)
    elif options.no_pretrained:
        if distributed.is_main():
            print(
                f"eca-models finetune: warning: training {options.model} from scratch: expect far lower accuracy than "
                "fine-tuning and many more epochs (the released weights took 100 epochs on 1.28M ImageNet images)",
                file=sys.stderr,
            )
        model = load(options.model, pretrained=False, **kwargs)
    else:
        ckpt = find_checkpoint(options.model)
        available = Path(options.model).is_dir() or weights_state(ckpt) in AVAILABLE
        available = available or (ckpt is None and _timm_has_weights(options.model))
        advice = "pass checkpoint= with the authors' .pth.tar or a converted folder, or no_pretrained=True to train from scratch"
        if not (options.pretrained or available):
            raise UsageError(f"no pretrained weights for {options.model} here (not published on the Hub yet): {advice}")
        try:
            model = load(options.model, **kwargs)  # the release's weights, fetched and cached on first use
        except WeightsError as e:
            raise UsageError(f"no pretrained weights for {options.model} here ({e}); {advice}") from None
    if options.add_eca:
        add_eca(model, options.add_eca)
    model.reset_classifier(num_classes)
    return model


def _timm_has_weights(name: str) -> bool:
    """Whether timm itself names pretrained weights for ``name`` (a timm model that is not one of ours)."""
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg is not None and bool(cfg.hf_hub_id or cfg.url or cfg.file)


def freeze_backbone(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    """Freeze all but the classifier; returns the parameters left to train."""
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]


@dataclasses.dataclass
class Recipe:
    """timm's parts of a classification run: data configuration, datasets, optimizer, scheduler, mixup, loss."""

    data_config: Dict[str, Any]
    train_set: ImageListDataset
    val_set: ImageListDataset
    optimizer: torch.optim.Optimizer
    scheduler: Any
    mixup: Optional[Mixup]
    loss: torch.nn.Module

    @classmethod
    def build(cls, model: torch.nn.Module, data: ClassFolders, options: FinetuneOptions) -> "Recipe":
        """The recipe ``options`` ask for, for ``model`` on ``data``."""
        params = (
            freeze_backbone(model) if options.freeze_backbone else [p for p in model.parameters() if p.requires_grad]
        )
        data_config = resolve_data_config({"input_size": (3, options.img_size, options.img_size)}, model=model)
        train_tf = create_transform(**data_config, is_training=True, scale=tuple(options.scale), hflip=options.hflip)
        eval_tf = create_transform(**data_config, is_training=False)
        optimizer = options.optimizer(params)
        scheduler = options.schedule(optimizer)
        mixup, loss = None, torch.nn.CrossEntropyLoss()
        if options.mixup > 0 or options.cutmix > 0:
            mixup = Mixup(
                mixup_alpha=options.mixup,
                cutmix_alpha=options.cutmix,
                label_smoothing=options.smoothing,
                num_classes=len(data.classes),
            )
            loss = SoftTargetCrossEntropy()
        elif options.smoothing > 0:
            loss = LabelSmoothingCrossEntropy(options.smoothing)
        return cls(
            data_config=data_config,
            train_set=ImageListDataset(data.train, train_tf, data_config["input_size"]),
            val_set=ImageListDataset(data.val, eval_tf, data_config["input_size"]),
            optimizer=optimizer,
            scheduler=scheduler,
            mixup=mixup,
            loss=loss,
        )


def finetune_classifier(options: FinetuneOptions, run_dir: Path, device: torch.device) -> Progress:
    """Fine-tune ``options.model`` on the class folders ``options.data`` in ``run_dir`` (prepared by the runner)."""
    data = find_class_folders(Path(options.data), options.val_split, options.seed)
    if len(data.train) // distributed.world_size() < options.batch_size:
        raise UsageError(f"{len(data.train)} training images is fewer than one batch per process: lower batch_size=")
    seed_everything(options.seed)  # before the new classifier: a fresh run's initialisation is reproducible
    model = start_classifier(options, len(data.classes))
    recipe = Recipe.build(model, data, options)
    model = model.to(device)
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return run_task(_task(model, recipe, data, options, run_dir, device), run_dir, options)


def _task(
    model: torch.nn.Module,
    recipe: Recipe,
    data: ClassFolders,
    options: FinetuneOptions,
    run_dir: Path,
    device: torch.device,
) -> Task:
    """The runner's task: training and validation steps, the export, the lines and the curves."""
    arch = model.pretrained_cfg.get("architecture", options.model)
    dataset = Path(options.data).name
    top5 = len(data.classes) > 5  # Top-5 of five classes or fewer is 100% by definition: not shown
    scaler = torch.amp.GradScaler("cuda") if options.amp and device.type == "cuda" else None
    note_unreadable = unreadable_recorder(run_dir, "finetune")
    loss, train_mode = _loss(model, recipe, options, device)

    def validate(epoch: int) -> Dict[str, float]:
        val = validate_classifier_run(model, recipe.val_set, options, device)
        note_unreadable(val.failed)
        metrics = dict(val_loss=val.loss, val_top1=val.top1)
        return {**metrics, "val_top5": val.top5} if top5 else metrics  # not recorded where it means nothing

    def describe(h: Dict[str, Any], best: Dict[str, Any]) -> str:
        return (
            f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, val loss {h['val_loss']:.4f}, "
            f"val Top-1 {h['val_top1']:.2f}"
            + (f", Top-5 {h['val_top5']:.2f}" if top5 else "")
            + f" (best {best['val_top1']:.2f} at epoch {best['epoch']})"
        )

    return Task(
        model=model,
        optimizer=recipe.optimizer,
        scheduler=recipe.scheduler,
        scaler=scaler,
        device=device,
        identity={"model_name": arch, "classes": data.classes},
        epochs=options.epochs,
        train_set=recipe.train_set,
        train_mode=train_mode,
        loss=loss,
        unreadable=note_unreadable,
        validate=validate,
        best_key="val_top1",
        export=lambda best: export_classifier(model, run_dir, arch, data.classes, recipe.data_config, best, dataset),
        describe=describe,
        curves=lambda history: plot_curves(
            history,
            run_dir / "curves.png",
            f"{arch} on {dataset}",
            metrics=(("val_top1", "val Top-1"), ("val_top5", "val Top-5"))[: 2 if top5 else 1],
        ),
        finished=lambda best: (
            f"done: best val Top-1 {best['val_top1']:.2f} at epoch {best['epoch']}; model in {run_dir} "
            "(model.safetensors, config.json, README.md)"
        ),
    )


def _loss(model, recipe: Recipe, options: FinetuneOptions, device) -> Tuple[Callable[[Any], StepResult], Callable]:
    """The task's loss on a batch (DDP under torchrun) and its training mode (a frozen backbone keeps its BN
    statistics as loaded)."""
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed.world_size() > 1 else model

    def loss(batch) -> StepResult:
        x, y, index, ok = batch
        bad = unreadable(ok, index, recipe.train_set.samples)
        x, y = x[ok].to(device, non_blocking=True), y[ok].to(device, non_blocking=True)
        if recipe.mixup is not None and len(y) % 2:  # mixup pairs images: drop one to keep the batch even
            x, y = x[:-1], y[:-1]
        if len(y) < 2:
            return None, 0, bad
        if recipe.mixup is not None:
            x, y = recipe.mixup(x, y)
        if options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return recipe.loss(net(x), y), len(y), bad

    def train_mode() -> None:
        net.train()
        if options.freeze_backbone:
            model.eval()
            model.get_classifier().train()

    return loss, train_mode


def validate_classifier_run(
    model: torch.nn.Module, val_set: ImageListDataset, options: FinetuneOptions, device: torch.device
):
    """The run's validation: loss, Top-1 and Top-5 on ``val_set`` (each process its share under torchrun)."""
    sampler = ShardSampler(range(len(val_set)), distributed.rank(), distributed.world_size())
    loader = torch.utils.data.DataLoader(
        val_set, batch_size=options.batch_size, sampler=sampler, num_workers=loader_workers(options.workers)
    )
    model.eval()
    return evaluate(
        model,
        loader,
        device,
        options.amp,
        options.channels_last,
        "skip",
        desc="validate",
        loss_fn=torch.nn.functional.cross_entropy,
    )


def export_classifier(
    model, run_dir: Path, arch: str, classes: List[str], data_config, best: Dict[str, float], dataset: str
) -> None:
    """The best model so far as a Hub-format folder: the run folder itself."""
    measured = {"acc@1": round(best["val_top1"], 2)}
    if len(classes) > 5:
        measured["acc@5"] = round(best["val_top5"], 2)
    card = render_model_card(
        repo_name=run_dir.name,
        model_name=arch,
        kernel_code=model.kernel_code,
        num_params=count_params(model),
        gmacs=count_macs(model, tuple(data_config["input_size"])) / 1e9,
        hf_hub_id=f"ORG/{run_dir.name}",
        measured=measured,
        dataset=dataset,
        class_names=classes,
        input_size=tuple(data_config["input_size"]),
    )
    metadata = {
        "architecture": arch,
        "kernel_code": model.kernel_code,
        "finetuned_on": dataset,
        "best_epoch": str(best["epoch"]),
    }
    model_config = {"label_names": classes, "pretrained_cfg": {"tag": "finetuned"}}
    write_hub_files(model, run_dir, card, metadata, model_config=model_config, data_config=dict(data_config))
