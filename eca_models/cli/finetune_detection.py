"""``eca-models finetune`` for detectors: any COCO-format dataset, the release's recipe by default.

Steps: find the train and val annotation files (``--data ROOT`` by their ``instances_*.json`` names, or the
explicit ``--train-annotations`` ... flags) and check them; start from the release's COCO detector (default where
its weights are here or on the Hub), a converted or fine-tuned folder (``--checkpoint``), the ImageNet trunk
(``--weights-backbone``, e.g. the authors' classification file) or scratch, with heads rebuilt for the dataset's
own categories (any number, any ids, names from the file); then train with mmdetection v1's recipe: SGD, lr 0.02
per 16 images scaled to the batch, 500 warm-up iterations from a third of it, x0.1 after epochs 8 and 11 of 12,
horizontal flips, crowd boxes out of the loss, images without objects kept. Box AP on val after each epoch; the
shared runner (:mod:`eca_models.training.runner`) checkpoints, resumes, exports the best as a detector folder
and draws the curves.
"""

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import MultiStepLRScheduler
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.models.detection.retinanet import RetinaNetClassificationHead

from .. import distributed
from ..data.imagenet import DataError
from ..detection import create_detector
from ..detection.coco import CocoData, CocoDataset, collate, find_coco_splits, read_coco
from ..detection.evaluation import coco_evaluate, predict_coco
from ..detection.labels import LabelMap
from ..detection.mmdet_v1 import write_detector_files
from ..detection.model_card import render_detector_card
from ..detection.weights import read_detector_folder
from ..training.loop import StepResult, train_one_epoch
from ..training.plots import plot_curves
from ..training.runner import Task, run_task, seed_everything, unreadable_recorder
from ..training.sampler import epoch_loader
from ..weights import find_checkpoint
from ..zoo import AVAILABLE, weights_state
from .common import (
    ModelUnavailable,
    UsageError,
    load_detector_model,
    non_negative_int,
    positive_int,
    weights_usage_errors,
)
from .predict_detection import detector_kwargs

DETECTION_ONLY = ("train_annotations", "train_images", "val_annotations", "val_images", "backbone_checkpoint")
DETECTION_ONLY += ("min_size", "max_size", "warmup_iters", "lr_steps", "trainable_backbone_layers")
RELEASE_EPOCHS, RELEASE_STEPS, RELEASE_LR, RELEASE_BATCH = 12, (8, 11), 0.02, 16


def add_detection_args(parser: argparse.ArgumentParser) -> None:
    """The flags only detectors take (the rest are the classification command's)."""
    group = parser.add_argument_group("detectors only (maskrcnn_eca_resnet50_fpn, ...; refused for classifiers)")
    group.add_argument("--train-annotations", help="the training split's COCO instances JSON (instead of --data)")
    group.add_argument("--train-images", help="its image folder")
    group.add_argument("--val-annotations", help="the validation split's COCO instances JSON")
    group.add_argument("--val-images", help="its image folder")
    group.add_argument(
        "--weights-backbone",
        "--backbone-checkpoint",  # its first name, kept
        dest="backbone_checkpoint",
        metavar="FILE",
        help="start the trunk from ImageNet weights (the authors' .pth.tar); torchvision's name (formerly --backbone-checkpoint)",
    )
    group.add_argument(
        "--min-size", type=positive_int, help="resize the shorter side to this (default 800, as released)"
    )
    group.add_argument("--max-size", type=positive_int, help="and the longer side to at most this (default 1333)")
    group.add_argument(
        "--warmup-iters", type=non_negative_int, default=500, help="linear warm-up from lr/3 (default 500)"
    )
    group.add_argument(
        "--trainable-backbone-layers", type=int, choices=range(6), default=3,
        help="trunk stages trained, from layer4 (default 3: stem and layer1 frozen, as released)",
    )  # fmt: skip
    group.add_argument(
        "--lr-steps",
        type=positive_int,
        nargs="+",
        help="epochs after which lr x0.1 (default 8 11 of 12, scaled to --epochs)",
    )


def check_no_detection_args(args: argparse.Namespace) -> None:
    """A classifier's run refuses the detector-only flags instead of ignoring them."""
    defaults = {"warmup_iters": 500, "trainable_backbone_layers": 3}
    given = [
        f"--{k.replace('_', '-')}" for k in DETECTION_ONLY if getattr(args, k, None) not in (None, defaults.get(k))
    ]
    if given:
        raise UsageError(f"{', '.join(given)} are for detectors (e.g. maskrcnn_eca_resnet50_fpn), not {args.model}")


def resolve_detection_defaults(args: argparse.Namespace) -> None:
    """The release's recipe where the flags leave it open (recorded in args.json as the values used)."""
    args.epochs = RELEASE_EPOCHS if args.epochs is None else args.epochs
    args.batch_size = 2 if args.batch_size is None else args.batch_size
    if args.lr is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # torchrun's, known before the process group exists
        args.lr = RELEASE_LR * args.batch_size * max(1, processes) / RELEASE_BATCH
    if args.lr_steps is None:
        args.lr_steps = [max(1, round(s * args.epochs / RELEASE_EPOCHS)) for s in RELEASE_STEPS]
    unused = {"freeze_backbone": False, "mixup": 0.0, "cutmix": 0.0, "smoothing": 0.0, "val_split": None}
    unused.update(sched="cosine", warmup_epochs=0, img_size=224, scale=[0.08, 1.0], drop_rate=None, drop_path_rate=0.0)

    def given_value(key: str):
        value = getattr(args, key)
        return list(value) if isinstance(value, tuple) else value

    given = [f"--{k.replace('_', '-')}" for k, v in unused.items() if given_value(k) != v]
    if given:
        raise UsageError(f"{', '.join(given)} are for classifiers; a detector's fine-tuning does not take them")


def read_splits(args: argparse.Namespace) -> Tuple[CocoData, CocoData]:
    """The train and val annotation files the flags name, checked."""
    if args.train_annotations or args.val_annotations:
        missing = [f for f in DETECTION_ONLY[:4] if not getattr(args, f)]
        if missing:
            raise DataError(
                f"explicit splits need all of --train-annotations, --train-images, --val-annotations, --val-images (missing --{missing[0].replace('_', '-')})"
            )
        return (
            read_coco(Path(args.train_annotations), Path(args.train_images)),
            read_coco(Path(args.val_annotations), Path(args.val_images)),
        )
    if not args.data:
        raise DataError("--data ROOT (COCO layout) or the four --train-/--val- annotation and image flags are needed")
    splits = find_coco_splits(Path(args.data))
    train = [s for s in splits if s.startswith("train")]
    val = [s for s in splits if s.startswith("val")]
    if not train or not val:
        raise DataError(
            f"{args.data} has splits {', '.join(splits)}: fine-tuning needs instances_train*.json and instances_val*.json"
        )
    return read_coco(*splits[train[0]]), read_coco(*splits[val[0]])


def _architecture(args: argparse.Namespace) -> Tuple[str, Optional[str]]:
    """(architecture, detector folder to start from, if any)."""
    if Path(args.model).is_dir():
        if args.checkpoint:
            raise UsageError(f"--model {args.model} is a folder of weights already: drop --checkpoint")
        return read_detector_folder(args.model)["architecture"], args.model
    return args.model, args.checkpoint


def rebuild_heads(model: torch.nn.Module, label_map: LabelMap) -> torch.nn.Module:
    """Give ``model`` classification heads for ``label_map``'s classes (kept as they are when it already has them)."""
    if (
        tuple(model.label_map.category_ids) == tuple(label_map.category_ids)
        and model.label_map.names == label_map.names
    ):
        return model
    if hasattr(model, "roi_heads"):
        box = model.roi_heads.box_predictor
        model.roi_heads.box_predictor = FastRCNNPredictor(box.cls_score.in_features, label_map.num_classes)
        if model.roi_heads.has_mask():
            mask = model.roi_heads.mask_predictor
            model.roi_heads.mask_predictor = MaskRCNNPredictor(
                mask.conv5_mask.in_channels, mask.conv5_mask.out_channels, label_map.num_classes
            )
    else:
        old = model.head.classification_head
        anchors = old.num_anchors
        model.head.classification_head = RetinaNetClassificationHead(
            old.cls_logits.in_channels, anchors, label_map.num_classes
        )
    model.label_map = label_map
    return model


def start_detector(args: argparse.Namespace, label_map: LabelMap) -> torch.nn.Module:
    """The model to fine-tune, with heads for the dataset's categories."""
    arch, folder = _architecture(args)
    kwargs = {**detector_kwargs(args), "trainable_backbone_layers": args.trainable_backbone_layers}
    categories = label_map.to_json()["categories"]
    if folder is not None:
        model = load_detector_model(arch, folder, **kwargs)
    elif args.backbone_checkpoint:
        with weights_usage_errors(arch):
            return create_detector(arch, categories=categories, weights_backbone=args.backbone_checkpoint, **kwargs)
    elif args.no_pretrained:
        print(
            f"eca-models finetune: warning: training {arch} from scratch: expect far lower AP than fine-tuning (the "
            "release started from ImageNet trunks and trained 12 epochs on 118k COCO images)",
            file=sys.stderr,
        )
        return load_detector_model(arch, pretrained=False, categories=categories, **kwargs)
    else:
        advice = (
            "pass --checkpoint DIR (a folder from `eca-models convert`), --weights-backbone FILE (formerly --backbone-checkpoint: the authors' "
            "ImageNet .pth.tar), or --no-pretrained to train from scratch"
        )
        if not (args.pretrained or weights_state(find_checkpoint(arch)) in AVAILABLE):
            raise UsageError(f"no COCO weights for {arch} here (not published on the Hub yet): {advice}")
        try:
            model = load_detector_model(arch, pretrained=True, **kwargs)  # fetched and cached on first use
        except ModelUnavailable as e:
            raise UsageError(f"no COCO weights for {arch} here ({e}); {advice}") from None
    return rebuild_heads(model, label_map)


def finetune_detector(args: argparse.Namespace, run_dir: Path, device: torch.device) -> int:
    # 1. the data: the train file's categories are the model's classes
    train, val = read_splits(args)
    unknown = {c["id"] for c in val.categories} - {c["id"] for c in train.categories}
    if unknown:
        raise UsageError(f"{val.annotations.name} has categories {sorted(unknown)} that {train.annotations.name} lacks")
    if len(train.image_ids) // distributed.world_size() < args.batch_size:
        raise UsageError(
            f"{len(train.image_ids)} training images is fewer than one batch per process: lower --batch-size"
        )

    # 2. the model (seeded: a fresh run's new heads are reproducible)
    seed_everything(args.seed)
    arch, _ = _architecture(args)
    background = not arch.startswith("retinanet")
    label_map = LabelMap.from_categories(train.categories, background)
    model = start_detector(args, label_map).to(device)
    masks = hasattr(model, "roi_heads") and model.roi_heads.has_mask()
    for dropped, data in ((train.dropped, train), (val.dropped, val)):
        if dropped and distributed.is_main():
            print(f"eca-models finetune: {dropped} boxes with no area in {data.annotations.name} dropped")

    # 3. the release's recipe: SGD, warm-up, steps
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = create_optimizer_v2(
        params, opt=args.opt, lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum
    )
    train_set = CocoDataset(train, label_map, masks=masks, hflip=args.hflip, skip_crowd=True)
    steps_per_epoch = len(train.image_ids) // distributed.world_size() // args.batch_size
    scheduler = MultiStepLRScheduler(
        optimizer,
        decay_t=[s * steps_per_epoch for s in args.lr_steps],
        decay_rate=0.1,
        warmup_t=args.warmup_iters,
        warmup_lr_init=args.lr / 3,
        t_in_epochs=False,
    )
    scaler = torch.amp.GradScaler("cuda") if args.amp and device.type == "cuda" else None
    # some heads get no gradient in a step (no positive proposal for the mask head): DDP must not wait for them
    ddp = distributed.world_size() > 1
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if ddp else model
    note_unreadable = unreadable_recorder(run_dir, "finetune")

    def forward(batch) -> StepResult:
        images, targets, ok = batch
        bad = [train_set.samples[int(t["index"])] for t, good in zip(targets, ok) if not good]
        images = [img.to(device, non_blocking=True) for img, good in zip(images, ok) if good]
        targets = [
            {k: v.to(device, non_blocking=True) for k, v in t.items() if k in ("boxes", "labels", "masks")}
            for t, good in zip(targets, ok)
            if good
        ]
        if not images:
            return None, 0, bad
        losses = net(images, targets)
        return sum(losses.values()), len(images), bad

    def train_epoch(epoch: int, step: int, carried, on_step) -> float:
        net.train()
        loader = epoch_loader(
            train_set, args.batch_size, args.seed, epoch, step, distributed.rank(), distributed.world_size(),
            args.workers, pin_memory=device.type == "cuda", collate_fn=collate,
        )  # fmt: skip
        return train_one_epoch(
            loader, forward, optimizer, device, scaler, args.amp, on_step, note_unreadable, step, carried,
            desc=f"epoch {epoch + 1}/{args.epochs}", scheduler=scheduler, first_update=epoch * steps_per_epoch + step,
        )  # fmt: skip

    def validate(epoch: int) -> Dict[str, float]:
        predictions = predict_coco(
            model, val, val.image_ids, device, args.batch_size, args.workers, args.amp, desc="validate",
            on_unreadable=note_unreadable,
        )  # fmt: skip
        scores = coco_evaluate(
            val, predictions.results, predictions.image_ids, ("bbox", "segm") if masks else ("bbox",)
        )
        return {f"val_{k}": v for k, v in scores.flat().items() if k.endswith(("map", "map_50", "map_75"))}

    def describe(h: Dict[str, Any], best: Dict[str, Any]) -> str:
        mask = f", mask AP {h['val_mask_map']:.2f}" if "val_mask_map" in h else ""
        return (
            f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, val box AP {h['val_box_map']:.2f} "
            f"(AP50 {h['val_box_map_50']:.2f}){mask}; best box AP {best['val_box_map']:.2f} at epoch {best['epoch']}"
        )

    dataset = Path(args.data).name if args.data else train.annotations.stem
    identity = {"model_name": arch, "classes": list(label_map.names), "category_ids": list(label_map.category_ids)}

    def export(best: Dict[str, Any]) -> None:
        measured = {k[len("val_") :]: round(v, 2) for k, v in best.items() if k.startswith("val_")}
        card = render_detector_card(model, measured=measured, dataset=dataset)
        metadata = {"architecture": arch, "kernel_code": model.detector_cfg["kernel_code"], "finetuned_on": dataset}
        write_detector_files(model, run_dir, card, metadata, finetuned_on=dataset, best_epoch=best["epoch"])

    task = Task(
        command="finetune",
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        identity=identity,
        epochs=args.epochs,
        train_epoch=train_epoch,
        validate=validate,
        best_key="val_box_map",
        export=export,
        describe=describe,
        curves=lambda history: plot_curves(
            history,
            run_dir / "curves.png",
            f"{arch} on {dataset}",
            metrics=(("val_box_map", "val box AP"), ("val_box_map_50", "val box AP50")),
            ylabel="AP",
        ),  # fmt: skip
        finished=lambda best: (
            f"done: best val box AP {best['val_box_map']:.2f} at epoch {best['epoch']}; model in {run_dir} "
            "(model.safetensors, config.json, README.md)"
        ),
    )
    return run_task(task, run_dir, args, args.save_every_steps)
