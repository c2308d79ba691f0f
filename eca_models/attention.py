"""What ECA learns: the channel weights of every attention layer, by block, for a batch of images.

The weights are read with forward hooks on each ECA layer's 1D convolution (and, for the side-by-
side view of the paper's Figure 6, on each timm SE module's second FC), so the model computes
exactly what it computes without them.
"""

import dataclasses
import io
import json
import re
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from timm.data import create_transform, resolve_data_config
from timm.layers import SEModule

from .data.imagenet import ground_truth_file, imagenet_class_names, imagenet_samples, imagenet_wnids
from .data.images import ImageListDataset, unreadable
from .errors import UsageError, require_suffix, require_whole_number
from .factory import class_labels, load
from .files import check_output_file, write_bytes_atomic, write_text_atomic
from .layers import EcaLayer
from .runtime import check_device, default_device

__all__ = [
    "AttentionFigure",
    "attention_figure",
    "attention_layers",
    "attention_weights",
    "capture_attention",
    "class_averages",
]


def _block_name(layer_name: str) -> str:
    """``layer2.1.eca`` -> ``layer2.1``; ``features.7.conv.4`` -> ``features.7``; ``layer3.0.se`` -> ``layer3.0``."""
    name = re.sub(r"\.(eca|se)$", "", layer_name)
    return re.sub(r"\.conv\.\d+$", "", name)


def attention_layers(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The channel-attention layers of ``model`` (ECA, or timm's SE), keyed by block name, in order."""
    return {_block_name(n): m for n, m in model.named_modules() if isinstance(m, (EcaLayer, SEModule))}


@contextmanager
def capture_attention(model: torch.nn.Module) -> Iterator[Dict[str, List[torch.Tensor]]]:
    """Record the channel weights of every forward inside the ``with`` block.

    Yields a dict that fills as the model runs: block name -> list of (N, C) tensors, one per
    forward, detached and in float32. The hooks are removed on exit.
    """
    captured: Dict[str, List[torch.Tensor]] = {}
    handles = []
    for block, layer in attention_layers(model).items():
        source = layer.conv if isinstance(layer, EcaLayer) else layer.fc2

        def hook(_module, _inputs, output, block=block):
            captured.setdefault(block, []).append(output.detach().float().sigmoid().flatten(1))

        handles.append(source.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def attention_weights(model: torch.nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Channel weights of every attention layer for ``images``: block name -> (N, C) tensor.

    The model runs in eval mode (restored afterwards), without gradients.

    Args:
        model: Any eca-models model (fine-tuned ones included), or a timm SE-ResNet.
        images: A batch, already transformed for the model.
    """
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as captured, torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
    return {block: torch.cat(parts) for block, parts in captured.items()}


@dataclasses.dataclass
class AttentionFigure:
    """What `attention_figure` wrote and measured.

    Attributes:
        figure: The PNG; ``.npz`` (the arrays) and ``.json`` (their rows and blocks) lie beside it.
        panels: Kind (``ECA``, ``SE``) -> block -> array (classes + 1, channels): the mean weight per channel
            for each class, then for all images.
        blocks: The blocks drawn.
        rows: The rows' names: the classes, then ``all images``.
        images: How many images were read; ``unreadable``: the paths that could not be.
    """

    figure: Path
    panels: Dict[str, Dict[str, np.ndarray]]
    blocks: List[str]
    rows: List[str]
    images: int
    unreadable: List[str]


def attention_figure(
    model: Union[str, Path],
    data: Union[str, Path],
    out: Union[str, Path],
    *,
    checkpoint: Optional[Union[str, Path]] = None,
    num_classes: Optional[int] = None,
    classes: Optional[Sequence[str]] = None,
    blocks: Optional[Sequence[str]] = None,
    compare: Optional[str] = None,
    compare_checkpoint: Optional[Union[str, Path]] = None,
    img_size: Optional[int] = None,
    batch_size: int = 32,
    device: Optional[str] = None,
) -> AttentionFigure:
    """The paper's Figure 6 for ``model``: per block, the average channel weight of each chosen class and of all
    images; with ``compare`` (a timm SE model), its weights in the same layout beside them.

    Args:
        model: A registered name or a model folder with ECA blocks.
        data: Images in class folders (WordNet ids for ImageNet models).
        out: The figure (.png); the arrays are written beside it as .npz and .json.
        checkpoint: Weights for ``model``.
        num_classes: Classes of ``checkpoint``'s classifier, when not 1000.
        classes: Folder names or class indices (default: the first four present).
        blocks: Blocks such as ``layer2.1`` (default: the last of each stage).
        compare: A timm SE model, e.g. ``seresnet50``; ``compare_checkpoint`` its weights.
        img_size: Input size (default: the model's).
        batch_size: Images per forward.
        device: Where to run (default: ``cuda`` where torch sees a GPU, else ``cpu``).
    """
    require_whole_number("img_size", img_size, 1)
    require_whole_number("batch_size", batch_size, 1)
    device = str(check_device(device or default_device()))
    require_suffix("out", out, (".png",), "the figure is a PNG")
    out = check_output_file(out, "out")
    ground_truth_file(data, hint="give it one sub-folder of images per class")
    net = _with_attention(load(model, checkpoint=checkpoint, num_classes=num_classes), model)
    samples, names, imagenet = _labelled_images(net, Path(data))
    chosen = _choose_classes(classes, names, sorted({label for _, label in samples}))
    blocks = _check_blocks(net, str(model), list(blocks or _default_blocks(net)))
    failed: List[str] = []
    panels = {"ECA": class_averages(net, samples, chosen, blocks, img_size, batch_size, device, failed)}
    if compare:
        other = _comparable(compare, compare_checkpoint, blocks)
        panels["SE"] = class_averages(other, samples, chosen, blocks, img_size, batch_size, device, [])
    if len(failed) == len(samples):
        raise UsageError(f"none of the {len(samples)} images of {data} could be read (named above)")
    rows = [f"{names[c]} ({imagenet_class_names()[c]})" if imagenet else names[c] for c in chosen]
    out.parent.mkdir(parents=True, exist_ok=True)
    _save_arrays(out, panels, blocks, rows)
    from .plots import plot_attention  # matplotlib: loaded only when a figure is drawn (start-up time)

    plot_attention(out, panels, blocks, rows, f"{model}" + (f" vs {compare}" if compare else ""))
    return AttentionFigure(out, panels, blocks, rows + ["all images"], len(samples), failed)


def _with_attention(net: torch.nn.Module, model: Union[str, Path]) -> torch.nn.Module:
    """``net``, refused unless it has ECA or SE blocks to read."""
    if not attention_layers(net):
        raise UsageError(
            f"{model} has no ECA or SE blocks to read: attention takes an ECA model (eca_resnet50, a fine-tuned "
            "or converted ECA folder)"
        )
    return net


def _comparable(compare: str, checkpoint: Optional[Union[str, Path]], blocks: List[str]) -> torch.nn.Module:
    """The model to compare with, refused unless it has an attention layer at each of ``blocks``."""
    other = load(compare, checkpoint=checkpoint)
    missing = [b for b in blocks if b not in attention_layers(other)]
    if missing:
        raise UsageError(
            f"{compare} has no attention layer at {missing[0]}; compare= takes an SE model of the same layout"
        )
    return other


def _labelled_images(model: torch.nn.Module, data: Path) -> Tuple[List[Tuple[Path, int]], List[str], bool]:
    """The images of ``data`` with labels in the model's class space, the class names, and whether they are
    ImageNet's (WordNet-id folders for an ImageNet model)."""
    labels = class_labels(model)
    imagenet = labels is None and _wnid_folders(data)
    if labels is None and not imagenet:  # any class folders: per-class averages need no ImageNet label space
        labels = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    return imagenet_samples(data, None, labels), list(labels or imagenet_wnids()), imagenet


def _wnid_folders(data: Path) -> bool:
    """Whether ``data`` is laid out as ImageNet is: no class folders (a flat folder and its ground truth), or
    class folders named by WordNet ids."""
    if not data.is_dir():
        return True  # imagenet_samples says what is wrong
    folders = [p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return not folders or set(folders) <= set(imagenet_wnids())


def _choose_classes(requested: Optional[Sequence[str]], names: List[str], present: List[int]) -> List[int]:
    if not requested:
        return present[:4]
    chosen = []
    for item in map(str, requested):
        index = int(item) if item.isdigit() else names.index(item) if item in names else -1
        if not 0 <= index < len(names):
            shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
            raise UsageError(
                f"class {item!r} is not one of the model's {len(names)} classes ({shown}, or 0 to {len(names) - 1})"
            )
        if index not in present:
            raise UsageError(f"class {item!r} has no images in data=")
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


def _check_blocks(model: torch.nn.Module, name: str, blocks: List[str]) -> List[str]:
    unknown = [b for b in blocks if b not in attention_layers(model)]
    if unknown:
        raise UsageError(
            f"{unknown[0]} is not an ECA block of {name}; blocks are e.g. {', '.join(list(attention_layers(model))[:4])}"
        )
    return blocks


def class_averages(
    model, samples, classes, blocks, img_size, batch_size, device, failed: List[str]
) -> Dict[str, np.ndarray]:
    """block -> array (len(classes) + 1, C): the mean weight per channel for each class, then for all images; the
    images that could not be read are warned of and added to ``failed``."""
    config = resolve_data_config({"input_size": (3, img_size, img_size)} if img_size else {}, model=model)
    dataset = ImageListDataset(samples, create_transform(**config, is_training=False), config["input_size"])
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    model = model.to(device).eval()
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
            x, y = x[ok].to(device), y[ok]
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
