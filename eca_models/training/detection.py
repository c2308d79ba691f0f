"""Fine-tuning a detector on any COCO-format dataset, with the release's recipe by default.

The train and val annotation files come from a COCO-layout root (their ``instances_*.json`` names) or are named
one by one; the model starts from the release's COCO detector (torchvision's, for torchvision's detectors, which
take ECA by ``add_eca``), a detector folder, an ImageNet trunk (``weights_backbone``) or scratch, with heads rebuilt for the dataset's own categories (any number, any ids, names
from the file). The recipe is mmdetection v1's: SGD, lr 0.02 per 16 images scaled to the batch, 500 warm-up
iterations from a third of it, x0.1 after epochs 8 and 11 of 12, horizontal flips, crowd boxes out of the loss,
images without objects kept. Box AP on val after each epoch; the shared runner checkpoints, resumes, exports the
best as a detector folder and draws the curves.
"""

import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from timm.scheduler import MultiStepLRScheduler

from .. import distributed
from ..detection import create_detector, load_detector
from ..detection.architectures import get_architecture, is_torchvision_detector
from ..detection.coco import CocoData, CocoDataset, collate, find_coco_splits, read_coco
from ..detection.labels import LabelMap
from ..detection.model_card import render_detector_card
from ..detection.weights import write_detector_files
from ..errors import DataError, UsageError
from ..evaluation.detection import coco_evaluate, predict_coco
from ..plots import plot_curves
from ..weights import WeightsError, find_checkpoint
from ..weights.folders import read_model_config
from ..zoo import AVAILABLE, weights_state
from .options import FinetuneOptions
from .runner import Progress, StepResult, Task, run_task, seed_everything, unreadable_recorder

__all__ = ["finetune_detector", "read_splits", "release_schedule", "start_detector"]

SPLIT_OPTIONS = ("train_annotations", "train_images", "val_annotations", "val_images")


def read_splits(options: FinetuneOptions) -> Tuple[CocoData, CocoData]:
    """The train and val annotation files the options name, checked."""
    if any(getattr(options, f) for f in SPLIT_OPTIONS):
        missing = [f for f in SPLIT_OPTIONS if not getattr(options, f)]
        if missing:
            raise DataError(
                f"explicit splits need all of train_annotations=, train_images=, val_annotations=, val_images= (missing {missing[0]}=)"
            )
        return (
            read_coco(Path(options.train_annotations), Path(options.train_images)),
            read_coco(Path(options.val_annotations), Path(options.val_images)),
        )
    if not options.data:
        raise DataError(
            "data=ROOT (COCO layout) or train_annotations=, train_images=, val_annotations= and val_images= are needed"
        )
    splits = find_coco_splits(Path(options.data))
    train = [s for s in splits if s.startswith("train")]
    val = [s for s in splits if s.startswith("val")]
    if not train or not val:
        raise DataError(f"{options.data} has splits {', '.join(splits)}: fine-tuning needs a train* and a val* split")
    return read_coco(*splits[train[0]]), read_coco(*splits[val[0]])


def _architecture(options: FinetuneOptions) -> Tuple[str, Optional[str]]:
    """(architecture, detector folder to start from, if any)."""
    if Path(options.model).is_dir():
        if options.checkpoint:
            raise UsageError(f"model={options.model} is a folder of weights already: drop checkpoint=")
        return read_model_config(options.model, detector=True)["architecture"], options.model
    return options.model, options.checkpoint


def start_detector(options: FinetuneOptions, label_map: LabelMap) -> torch.nn.Module:
    """The model to fine-tune, with heads for the dataset's categories (new where its weights have others)."""
    arch, folder = _architecture(options)
    kwargs = dict(
        min_size=options.min_size,
        max_size=options.max_size,
        trainable_backbone_layers=options.trainable_backbone_layers,
        **({"add_eca": options.add_eca} if options.add_eca else {}),
    )
    categories = label_map.to_json()["categories"]
    if folder is not None:
        return load_detector(arch, checkpoint=folder, categories=categories, **kwargs)
    elif options.weights_backbone:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        return create_detector(arch, categories=categories, weights_backbone=options.weights_backbone, **kwargs)
    elif options.no_pretrained:
        print(
            f"eca-models finetune: warning: training {arch} from scratch: expect far lower AP than fine-tuning (the "
            "release started from ImageNet trunks and trained 12 epochs on 118k COCO images)",
            file=sys.stderr,
        )
        return load_detector(arch, pretrained=False, categories=categories, **kwargs)
    else:
        advice = (
            "pass checkpoint=DIR (a folder from `eca-models convert`), weights_backbone=FILE (the authors' "
            "ImageNet .pth.tar; for torchvision's detectors its weights' name, e.g. DEFAULT), or no_pretrained=True "
            "to train from scratch"
        )
        published = is_torchvision_detector(arch) or weights_state(find_checkpoint(arch)) in AVAILABLE
        if not (options.pretrained or published):
            raise UsageError(f"no COCO weights for {arch} here (not published on the Hub yet): {advice}")
        try:
            return load_detector(arch, categories=categories, **kwargs)  # fetched and cached on first use
        except WeightsError as e:
            raise UsageError(f"no COCO weights for {arch} here ({e}); {advice}") from None


def finetune_detector(options: FinetuneOptions, run_dir: Path, device: torch.device) -> Progress:
    """Fine-tune the detector ``options.model`` on COCO-format data in ``run_dir`` (prepared by the runner)."""
    train, val = read_splits(options)
    unknown = {c["id"] for c in val.classes} - {c["id"] for c in train.classes}
    if unknown:
        raise UsageError(f"{val.annotations.name} has categories {sorted(unknown)} that {train.annotations.name} lacks")
    if len(train.image_ids) // distributed.world_size() < options.batch_size:
        raise UsageError(
            f"{len(train.image_ids)} training images is fewer than one batch per process: lower batch_size="
        )
    seed_everything(options.seed)  # before the new heads: a fresh run's initialisation is reproducible
    arch, _ = _architecture(options)
    label_map = LabelMap.from_categories(train.classes, background=get_architecture(arch).background)
    model = start_detector(options, label_map).to(device)
    for data in (train, val):
        if data.dropped and distributed.is_main():
            print(f"eca-models finetune: {data.dropped} boxes with no area in {data.annotations.name} dropped")
    return run_task(_task(model, arch, label_map, train, val, options, run_dir, device), run_dir, options)


def _task(model, arch: str, label_map: LabelMap, train: CocoData, val: CocoData, options, run_dir, device) -> Task:
    """The runner's task: the release's optimizer and schedule, the steps, the export, the lines and the curves."""
    masks = hasattr(model, "roi_heads") and model.roi_heads.has_mask()
    steps_per_epoch = len(train.image_ids) // distributed.world_size() // options.batch_size
    optimizer, scheduler = release_schedule(model, options, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda") if options.amp and device.type == "cuda" else None
    note_unreadable = unreadable_recorder(run_dir, "finetune")
    train_set = CocoDataset(train, label_map, masks=masks, hflip=options.hflip, skip_crowd=True)
    loss, train_mode = _loss(model, train_set, device)
    dataset = Path(options.data).name if options.data else train.annotations.stem

    def validate(epoch: int) -> Dict[str, float]:
        predictions = predict_coco(
            model, val, val.image_ids, device, options.batch_size, options.workers, options.amp, desc="validate",
            on_unreadable=note_unreadable,
        )  # fmt: skip
        scores = coco_evaluate(
            val, predictions.results, predictions.image_ids, ("bbox", "segm") if masks else ("bbox",)
        )
        return {f"val_{k}": v for k, v in scores.flat().items() if k.endswith(("map", "map_50", "map_75"))}

    def export(best: Dict[str, Any]) -> None:
        measured = {k[len("val_") :]: round(v, 2) for k, v in best.items() if k.startswith("val_")}
        card = render_detector_card(model, measured=measured, dataset=dataset)
        metadata = {"architecture": arch, "kernel_code": model.detector_cfg["kernel_code"], "finetuned_on": dataset}
        write_detector_files(model, run_dir, card, metadata, finetuned_on=dataset, best_epoch=best["epoch"])

    return Task(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        device=device,
        identity={"model_name": arch, "classes": list(label_map.names), "category_ids": list(label_map.category_ids)},
        epochs=options.epochs,
        train_set=train_set,
        train_mode=train_mode,
        loss=loss,
        unreadable=note_unreadable,
        collate=collate,
        validate=validate,
        best_key="val_box_map",
        export=export,
        describe=_describe,
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


def release_schedule(model: torch.nn.Module, options: FinetuneOptions, steps_per_epoch: int):
    """mmdetection v1's optimizer and schedule: SGD on the trainable parameters, a linear warm-up from a third of
    the rate over ``warmup_iters`` updates, x0.1 after each of ``lr_steps`` epochs."""
    optimizer = options.optimizer([p for p in model.parameters() if p.requires_grad])
    scheduler = MultiStepLRScheduler(
        optimizer,
        decay_t=[s * steps_per_epoch for s in options.lr_steps],
        decay_rate=0.1,
        warmup_t=options.warmup_iters,
        warmup_lr_init=options.lr / 3,
        t_in_epochs=False,
    )
    return optimizer, scheduler


def _describe(h: Dict[str, Any], best: Dict[str, Any]) -> str:
    mask = f", mask AP {h['val_mask_map']:.2f}" if "val_mask_map" in h else ""
    return (
        f"epoch {h['epoch']}: train loss {h['train_loss']:.4f}, val box AP {h['val_box_map']:.2f} "
        f"(AP50 {h['val_box_map_50']:.2f}){mask}; best box AP {best['val_box_map']:.2f} at epoch {best['epoch']}"
    )


def _loss(model, train_set: CocoDataset, device) -> Tuple[Callable[[Any], StepResult], Callable]:
    """The task's loss on a batch (the sum of torchvision's losses; DDP under torchrun) and its training mode."""
    # some heads get no gradient in a step (no positive proposal for the mask head): DDP must not wait for them
    ddp = distributed.world_size() > 1
    net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True) if ddp else model

    def loss(batch) -> StepResult:
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
        return sum(net(images, targets).values()), len(images), bad

    return loss, net.train
