"""Fine-tune an ECA model on your own class folders, resumable, on one machine or many.

Steps: check the run folder, read the class folders, build the model from its pretrained
weights (or a checkpoint, or from scratch) with a new classifier, build timm's transforms,
optimizer and scheduler, then train epoch by epoch: a checkpoint written atomically after every
epoch (and every N steps if asked, and on Ctrl-C), the validation accuracy measured, the best
model exported as a Hub-format folder (model.safetensors, config.json, README.md) into the run
folder, the metrics logged, and the curves drawn at the end. Under torchrun every process trains
its share (DistributedDataParallel) and only rank 0 writes.
"""

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from .. import distributed
from ..complexity import count_macs, count_params
from ..data.folders import find_class_folders
from ..data.images import ImageListDataset, ShardSampler, unreadable
from ..detection.weights import is_detector_source
from ..evaluation import evaluate
from ..training.loop import StepResult, train_one_epoch
from ..training.plots import plot_curves
from ..training.runner import Task, run_in_folder, run_task, seed_everything, unreadable_recorder
from ..training.sampler import epoch_loader
from ..training.state import CHECKPOINT
from ..weights import find_checkpoint
from ..weights.convert import write_hub_files
from ..weights.model_card import render_model_card
from ..zoo import AVAILABLE, weights_state
from .common import ModelUnavailable, UsageError, add_runtime_args, load_model, non_negative_int, positive_int
from .finetune_detection import (
    add_detection_args,
    check_no_detection_args,
    finetune_detector,
    resolve_detection_defaults,
)

HELP = "fine-tune a classifier on your class folders (train/ and val/), or a detector on COCO-format data"
RUN_FILES = (
    CHECKPOINT,
    "metrics.jsonl",
    "args.json",
    "curves.png",
    "skipped_images.txt",
    "model.safetensors",
    "config.json",
    "README.md",
)


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="architecture (eca_resnet50, maskrcnn_eca_resnet50_fpn, ...) or a fine-tuned / converted folder",
    )
    parser.add_argument(
        "--data",
        help="folder with train/ and val/ class folders (or class folders + --val-split); detectors: a COCO-layout "
        "root (annotations/instances_<split>.json beside <split>/)",
    )
    parser.add_argument(
        "--output", required=True, help="run folder: checkpoints, metrics, curves and the exported model"
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained", action="store_true", help="start from the ImageNet weights (default where they exist)"
    )
    weights.add_argument("--checkpoint", help="start from this weights file or folder (e.g. the authors' .pth.tar)")
    weights.add_argument("--no-pretrained", action="store_true", help="train from scratch")
    parser.add_argument("--epochs", type=positive_int, help="default 10; detectors 12, as released")
    add_runtime_args(parser, batch_size=None)
    parser.add_argument("--opt", default="sgd", help="timm optimizer name (sgd, adamw, ...)")
    parser.add_argument("--lr", type=float, help="default 0.01; detectors 0.02 per 16 images, scaled to the batch")
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--hflip", type=float, default=0.5, help="horizontal flip probability (default 0.5)")
    parser.add_argument("--save-every-steps", type=non_negative_int, default=0, help="also checkpoint every N steps")
    parser.add_argument("--seed", type=int, default=0)
    classifiers = parser.add_argument_group(
        "classifiers only (eca_resnet50, eca_mobilenetv2, ...; refused for detectors)"
    )
    classifiers.add_argument(
        "--val-split", type=float, help="hold out this fraction of each class when there is no val/"
    )
    classifiers.add_argument("--sched", default="cosine", help="timm scheduler name (default cosine; step, ...)")
    classifiers.add_argument("--warmup-epochs", type=non_negative_int, default=0, help="(default 0)")
    classifiers.add_argument("--img-size", type=positive_int, default=224, help="(default 224)")
    classifiers.add_argument(
        "--scale", type=float, nargs=2, default=(0.08, 1.0), help="random-resized-crop area range (default 0.08 1)"
    )
    classifiers.add_argument("--smoothing", type=float, default=0.0, help="label smoothing (default 0)")
    classifiers.add_argument("--mixup", type=float, default=0.0, help="mixup alpha (default 0: off)")
    classifiers.add_argument("--cutmix", type=float, default=0.0, help="cutmix alpha (default 0: off)")
    classifiers.add_argument("--drop-rate", type=float, help="dropout before the classifier (default: the model's)")
    classifiers.add_argument("--drop-path-rate", type=float, default=0.0, help="(default 0)")
    classifiers.add_argument("--freeze-backbone", action="store_true", help="train the classifier only")
    add_detection_args(parser)
    run_dir = parser.add_mutually_exclusive_group()
    run_dir.add_argument("--resume", action="store_true", help="continue the run in --output where it stopped")
    run_dir.add_argument("--overwrite", action="store_true", help="start over in an existing --output")


def run(args: argparse.Namespace) -> int:
    if is_detector_source(args.model):
        resolve_detection_defaults(args)
        return run_in_folder(args, RUN_FILES, lambda run_dir, device: finetune_detector(args, run_dir, device))
    if args.data is None:
        raise UsageError("--data is required: a folder with train/ and val/ class folders")
    check_no_detection_args(args)
    args.epochs = 10 if args.epochs is None else args.epochs
    args.batch_size = 32 if args.batch_size is None else args.batch_size
    args.lr = 0.01 if args.lr is None else args.lr
    return run_in_folder(args, RUN_FILES, lambda run_dir, device: _finetune(args, run_dir, device))


def _warn(message: str) -> None:
    if distributed.is_main():
        print(f"eca-models finetune: warning: {message}", file=sys.stderr)


def _start_model(args: argparse.Namespace, num_classes: int) -> torch.nn.Module:
    kwargs: Dict[str, Any] = dict(drop_path_rate=args.drop_path_rate)
    if args.drop_rate is not None:
        kwargs["drop_rate"] = args.drop_rate
    if args.checkpoint:
        model = load_model(args.model, args.checkpoint, **kwargs)
    elif args.no_pretrained:
        _warn(
            f"training {args.model} from scratch: expect far lower accuracy than fine-tuning and many more "
            "epochs (the released weights took 100 epochs on 1.28M ImageNet images)"
        )
        model = load_model(args.model, pretrained=False, **kwargs)
    else:
        available = Path(args.model).is_dir() or weights_state(find_checkpoint(args.model)) in AVAILABLE
        advice = "pass --checkpoint with the authors' .pth.tar or a converted folder, or --no-pretrained to train from scratch"
        if not (args.pretrained or available):
            raise UsageError(f"no pretrained weights for {args.model} here (not published on the Hub yet): {advice}")
        try:
            model = load_model(args.model, **kwargs)  # the release's weights, fetched and cached on first use
        except ModelUnavailable as e:
            raise UsageError(f"no pretrained weights for {args.model} here ({e}); {advice}") from None
    model.reset_classifier(num_classes)
    return model


def _freeze_backbone(model: torch.nn.Module) -> List[torch.nn.Parameter]:
    head = {id(p) for p in model.get_classifier().parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    return [p for p in model.parameters() if p.requires_grad]


def _finetune(args: argparse.Namespace, run_dir: Path, device: torch.device) -> int:
    # 1. the data
    data = find_class_folders(Path(args.data), args.val_split, args.seed)
    if len(data.train) // distributed.world_size() < args.batch_size:
        raise UsageError(f"{len(data.train)} training images is fewer than one batch per process: lower --batch-size")

    # 2. the model, with a classifier for these classes (seeded first: a fresh run's init is reproducible)
    seed_everything(args.seed)
    model = _start_model(args, len(data.classes))
    arch = model.pretrained_cfg.get("architecture", args.model)
    params = _freeze_backbone(model) if args.freeze_backbone else [p for p in model.parameters() if p.requires_grad]

    # 3. timm's transforms, optimizer, scheduler, mixup and losses
    data_config = resolve_data_config({"input_size": (3, args.img_size, args.img_size)}, model=model)
    train_tf = create_transform(**data_config, is_training=True, scale=tuple(args.scale), hflip=args.hflip)
    eval_tf = create_transform(**data_config, is_training=False)
    train_set = ImageListDataset(data.train, train_tf, data_config["input_size"])
    val_set = ImageListDataset(data.val, eval_tf, data_config["input_size"])
    optimizer = create_optimizer_v2(
        params, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    scheduler, _ = create_scheduler_v2(
        optimizer, sched=args.sched, num_epochs=args.epochs, warmup_epochs=args.warmup_epochs
    )
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    mixup = None
    if args.mixup > 0 or args.cutmix > 0:
        mixup = Mixup(
            mixup_alpha=args.mixup,
            cutmix_alpha=args.cutmix,
            label_smoothing=args.smoothing,
            num_classes=len(data.classes),
        )
        train_loss = SoftTargetCrossEntropy()
    else:
        train_loss = LabelSmoothingCrossEntropy(args.smoothing) if args.smoothing > 0 else torch.nn.CrossEntropyLoss()

    model = model.to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model) if distributed.world_size() > 1 else model
    note_unreadable = unreadable_recorder(run_dir, "finetune")

    def forward(batch) -> StepResult:
        x, y, index, ok = batch
        bad = unreadable(ok, index, train_set.samples)
        x, y = x[ok].to(device, non_blocking=True), y[ok].to(device, non_blocking=True)
        if mixup is not None and len(y) % 2:  # mixup pairs images: drop one to keep the batch even
            x, y = x[:-1], y[:-1]
        if len(y) < 2:
            return None, 0, bad
        if mixup is not None:
            x, y = mixup(x, y)
        if args.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return train_loss(net(x), y), len(y), bad

    def train_epoch(epoch: int, step: int, carried, on_step) -> float:
        net.train()
        if args.freeze_backbone:
            model.eval()  # keep the backbone's BN statistics as loaded
            model.get_classifier().train()
        loader = epoch_loader(
            train_set, args.batch_size, args.seed, epoch, step, distributed.rank(), distributed.world_size(),
            args.workers, pin_memory=device.type == "cuda",
        )  # fmt: skip
        return train_one_epoch(
            loader, forward, optimizer, device, scaler, args.amp, on_step, note_unreadable, step, carried,
            desc=f"epoch {epoch + 1}/{args.epochs}",
        )  # fmt: skip

    def validate(epoch: int) -> Dict[str, float]:
        val = _validate(model, val_set, args, device)
        note_unreadable(val.failed)
        return dict(val_loss=val.loss, val_top1=val.top1, val_top5=val.top5)

    top5 = len(data.classes) > 5  # Top-5 of five classes or fewer is 100% by definition: not shown

    def describe(h: Dict[str, Any], best: Dict[str, Any]) -> str:
        return (
            f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, val loss {h['val_loss']:.4f}, "
            f"val Top-1 {h['val_top1']:.2f}"
            + (f", Top-5 {h['val_top5']:.2f}" if top5 else "")
            + f" (best {best['val_top1']:.2f} at epoch {best['epoch']})"
        )

    task = Task(
        command="finetune",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        identity={"model_name": arch, "classes": data.classes},
        epochs=args.epochs,
        train_epoch=train_epoch,
        validate=validate,
        best_key="val_top1",
        export=lambda best: _export(model, run_dir, arch, data.classes, data_config, best, Path(args.data).name),
        describe=describe,
        curves=lambda history: plot_curves(
            history,
            run_dir / "curves.png",
            f"{arch} on {Path(args.data).name}",
            metrics=(("val_top1", "val Top-1"), ("val_top5", "val Top-5"))[: 2 if top5 else 1],
        ),
        finished=lambda best: (
            f"done: best val Top-1 {best['val_top1']:.2f} at epoch {best['epoch']}; model in {run_dir} "
            "(model.safetensors, config.json, README.md)"
        ),
    )
    return run_task(task, run_dir, args, args.save_every_steps)


def _validate(model: torch.nn.Module, val_set: ImageListDataset, args: argparse.Namespace, device: torch.device):
    sampler = ShardSampler(range(len(val_set)), distributed.rank(), distributed.world_size())
    loader = torch.utils.data.DataLoader(val_set, batch_size=args.batch_size, sampler=sampler, num_workers=args.workers)
    model.eval()
    return evaluate(
        model,
        loader,
        device,
        args.amp,
        args.channels_last,
        "skip",
        desc="validate",
        loss_fn=torch.nn.functional.cross_entropy,
    )


def _export(
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
        gmacs=count_macs(model) / 1e9,
        hf_hub_id=f"ORG/{run_dir.name}",
        measured=measured,
        dataset=dataset,
        class_names=classes,
    )
    metadata = {
        "architecture": arch,
        "kernel_code": model.kernel_code,
        "finetuned_on": dataset,
        "best_epoch": str(best["epoch"]),
    }
    model_config = {"label_names": classes, "pretrained_cfg": {"tag": "finetuned"}}
    write_hub_files(model, run_dir, card, metadata, model_config=model_config, data_config=dict(data_config))
