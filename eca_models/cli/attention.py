"""Draw what ECA learns, as in the paper's Figure 6: for chosen blocks, the average channel weight
of each chosen class and of all images, one panel per block; with --compare, the SE-ResNet's
weights in the same layout beside them. The averaged arrays are saved next to the figure (.npz)."""

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from timm.data import create_transform, resolve_data_config

from ..attention import attention_layers, capture_attention
from ..data.imagenet import imagenet_class_names, imagenet_samples, imagenet_wnids
from ..data.images import ImageListDataset, unreadable
from ..factory import class_labels
from ..files import check_output_file, write_bytes_atomic, write_text_atomic
from ..training.plots import plot_attention
from .common import UsageError, add_num_classes_arg, load_model, positive_int

HELP = "plot per-class channel weights of ECA blocks (the paper's Figure 6)"


def add_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="a registered name or a fine-tuned / converted folder")
    parser.add_argument("--checkpoint", help="weights file or folder for --model")
    parser.add_argument("--data", required=True, help="images in class folders (WordNet ids for ImageNet models)")
    parser.add_argument(
        "--classes", nargs="+", help="classes to plot: folder names or class indices (default: the first 4 present)"
    )
    parser.add_argument(
        "--blocks", nargs="+", help="blocks to plot, e.g. layer2.1 layer4.2 (default: the last block of each stage)"
    )
    parser.add_argument("--out", required=True, help="figure file (.png); the arrays go beside it as .npz and .json")
    parser.add_argument("--compare", help="a timm SE model to show beside, e.g. seresnet50")
    parser.add_argument("--compare-checkpoint", help="weights for --compare")
    parser.add_argument("--img-size", type=positive_int, help="input size (default: the model's)")
    parser.add_argument("--batch-size", type=positive_int, default=32)
    add_num_classes_arg(parser)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def run(args: argparse.Namespace) -> int:
    out = check_output_file(args.out, "--out")
    model = load_model(args.model, args.checkpoint, num_classes=args.num_classes)
    if not attention_layers(model):
        raise UsageError(
            f"{args.model} has no ECA or SE blocks to read: attention takes an ECA model (eca_resnet50, a fine-tuned "
            "or converted ECA folder)"
        )
    labels = class_labels(model)
    imagenet = labels is None and _wnid_folders(Path(args.data))
    if labels is None and not imagenet:  # any class folders: per-class averages need no ImageNet label space
        labels = sorted(p.name for p in Path(args.data).iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(labels or imagenet_wnids())
    samples = imagenet_samples(Path(args.data), None, labels)
    present = sorted({label for _, label in samples})
    classes = _choose_classes(args.classes, names, present)
    blocks = args.blocks or _default_blocks(model)
    unknown = [b for b in blocks if b not in attention_layers(model)]
    if unknown:
        raise UsageError(
            f"{unknown[0]} is not an ECA block of {args.model}; blocks are e.g. {', '.join(list(attention_layers(model))[:4])}"
        )
    failed: List[str] = []
    panels = {"ECA": _averages(model, samples, classes, blocks, args, failed)}
    if args.compare:
        other = load_model(args.compare, args.compare_checkpoint)
        missing = [b for b in blocks if b not in attention_layers(other)]
        if missing:
            raise UsageError(
                f"{args.compare} has no attention layer at {missing[0]}; --compare takes an SE model of the same layout"
            )
        panels["SE"] = _averages(other, samples, classes, blocks, args, [])
    display = [_display_name(names, c, imagenet) for c in classes]
    if len(failed) == len(samples):
        raise UsageError(f"none of the {len(samples)} images of {args.data} could be read (named above)")
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_arrays(out, panels, blocks, display)
    plot_attention(out, panels, blocks, display, f"{args.model}" + (f" vs {args.compare}" if args.compare else ""))
    print(f"wrote {out}, {out.with_suffix('.npz')} and {out.with_suffix('.json')}")
    if failed:
        print(
            f"eca-models attention: {len(failed)} of {len(samples)} images could not be read and were left out "
            "(named above)",
            file=sys.stderr,
        )
    return 0


def _wnid_folders(data: Path) -> bool:
    """Whether ``data`` is laid out as ImageNet is: no class folders (a flat folder and its ground truth), or
    class folders named by WordNet ids."""
    if not data.is_dir():
        return True  # imagenet_samples says what is wrong
    folders = [p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return not folders or set(folders) <= set(imagenet_wnids())


def _choose_classes(requested: Optional[List[str]], names: List[str], present: List[int]) -> List[int]:
    if not requested:
        return present[:4]
    chosen = []
    for item in requested:
        index = int(item) if item.isdigit() else names.index(item) if item in names else -1
        if index not in present:
            raise UsageError(f"class {item!r} has no images in --data")
        chosen.append(index)
    return chosen


def _default_blocks(model: torch.nn.Module) -> List[str]:
    """The last attention block under each feature stage: layer1.2, layer2.3, ... or features.1, features.3, ..."""
    layers = list(attention_layers(model))
    chosen = []
    for info in model.feature_info:
        inside = [b for b in layers if b == info["module"] or b.startswith(info["module"] + ".")]
        if inside:
            chosen.append(inside[-1])
    return chosen


def _display_name(names: List[str], index: int, imagenet: bool) -> str:
    return f"{names[index]} ({imagenet_class_names()[index]})" if imagenet else names[index]


def _averages(model, samples, classes, blocks, args, failed: List[str]) -> Dict[str, np.ndarray]:
    """block -> array (len(classes) + 1, C): the mean weight per channel for each class, then for all images; the
    images that could not be read are warned of and added to ``failed``."""
    overrides = {"input_size": (3, args.img_size, args.img_size)} if args.img_size else {}
    config = resolve_data_config(overrides, model=model)
    dataset = ImageListDataset(samples, create_transform(**config, is_training=False), config["input_size"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size)
    model = model.to(args.device).eval()
    sums: Dict[str, torch.Tensor] = {}
    counts = torch.zeros(len(classes) + 1)
    with capture_attention(model) as captured, torch.no_grad():
        for x, y, index, ok in loader:
            captured.clear()
            for path in unreadable(ok, index, samples):
                print(f"eca-models attention: warning: skipping unreadable image {path}", file=sys.stderr)
                failed.append(path)
            if not ok.any():
                continue
            x, y = x[ok].to(args.device), y[ok]
            model(x)
            onehot = torch.stack([y == c for c in classes] + [torch.ones_like(y, dtype=torch.bool)]).float()  # (K+1, N)
            counts += onehot.sum(1)
            for block in blocks:
                weights = torch.cat(captured[block]).cpu()  # (N, C)
                sums[block] = sums.get(block, 0) + onehot @ weights
    return {block: (sums[block] / counts.clamp(min=1)[:, None]).numpy() for block in blocks}


def _save_arrays(out: Path, panels, blocks, display) -> None:
    arrays = {f"{kind}/{block}": panels[kind][block] for kind in panels for block in blocks}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(out.with_suffix(".npz"), buffer.getvalue())
    meta = {"rows": display + ["all images"], "blocks": blocks, "arrays": sorted(arrays), "shape": "rows x channels"}
    write_text_atomic(out.with_suffix(".json"), json.dumps(meta, indent=2) + "\n")
