"""The release's detector files (mmdetection v1 ``save_checkpoint``) to torchvision's detectors and Hub folders.

Four steps, each a function: `read_mmdet_checkpoint` (``weights_only=True``), `remap_state_dict`
(every key consumed or named in a one-line error), `write_detector_files` (``model.safetensors``,
``config.json``, ``README.md``, written atomically) and `verify_detector_folder` (the folder reloads to the
same outputs). `convert_mmdet_checkpoint` runs them in order.
"""

import dataclasses
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
from torch import nn

from ..detection import get_builder
from ..detection.architectures import find_architecture
from ..detection.labels import LabelMap, coco_categories
from ..detection.legacy import use_legacy_coordinates
from ..detection.model_card import render_detector_card
from ..detection.weights import released_checkpoint, state_dict_mismatch, write_detector_files
from ..errors import local_path
from ..files import sha256_file
from ..layers.kernel_codes import format_kernel_code, parse_kernel_code, stage_kernel_sizes
from ..models import describe_state_dict
from ..weights import WeightsError
from ..weights.folders import CONFIG_FILE, check_out_dir, new_model_folder
from ..weights.loading import WEIGHTS_FILE, read_weights_file, unwrap_checkpoint

__all__ = [
    "MmdetCheckpoint",
    "convert_mmdet_checkpoint",
    "read_mmdet_checkpoint",
    "remap_state_dict",
    "verify_detector_folder",
]

DEPTHS = {6: 50, 23: 101}  # blocks in layer3 -> ResNet depth


@dataclasses.dataclass
class MmdetCheckpoint:
    """What an mmdetection v1 file holds, read and recognised.

    Attributes:
        state_dict: Its ``state_dict`` (``module.`` prefixes stripped).
        classes: ``meta['CLASSES']``, or None where the file has none.
        kind: ``fasterrcnn``, ``maskrcnn`` or ``retinanet``, told from its heads.
        depth: The trunk's depth (50 or 101), told from its blocks.
        kernel_sizes: Each stage's ECA kernel size, read from its ECA tensors.
        source: The file's path.
    """

    state_dict: Dict[str, torch.Tensor]
    classes: Optional[List[str]]
    kind: str
    depth: int
    kernel_sizes: Tuple[int, ...]
    source: str

    @property
    def kernel_code(self) -> str:
        """The file's kernel code, e.g. ``k3377``."""
        return format_kernel_code(self.kernel_sizes)

    @property
    def architecture(self) -> str:
        """The builder that fits the file, e.g. ``maskrcnn_eca_resnet50_fpn``."""
        found = find_architecture(self.kind, self.depth)
        if found is None:
            raise WeightsError(f"{self.source}: no registered detector is a {self.kind} on a ResNet-{self.depth}")
        return found.name


def read_mmdet_checkpoint(path: Union[str, Path]) -> MmdetCheckpoint:
    """Read an mmdetection v1 detector file (``weights_only=True``) and recognise what it holds.

    Raises:
        WeightsError: Unreadable or unsafe; a classification checkpoint; no ECA trunk; an unknown head.
    """
    path = local_path(path, "weights file")
    obj = read_weights_file(path)
    state = obj.get("state_dict", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state dict of tensors (expected mmdetection's checkpoint dict)")
    state = unwrap_checkpoint(obj)
    if not any(k.startswith("neck.") for k in state):
        if any(re.match(r"(backbone\.)?layer\d\.", k) for k in state):
            trunk = describe_state_dict({k.removeprefix("backbone."): v for k, v in state.items()})
            raise WeightsError(
                f"{path} is a classification checkpoint (a trunk, no FPN or heads), not a detector ({trunk}): "
                "convert it as a classifier, or give it to finetune as weights_backbone="
            )
        raise WeightsError(f"{path} is not an mmdetection detector checkpoint (no neck.* or backbone.* tensors)")
    if any(k.startswith("mask_head.") for k in state):
        kind = "maskrcnn"
    elif any(k.startswith("bbox_head.retina_cls.") for k in state):
        kind = "retinanet"
    elif any(k.startswith("rpn_head.") for k in state):
        kind = "fasterrcnn"
    else:
        raise WeightsError(
            f"{path} has neither rpn_head.* nor bbox_head.retina_cls.*: not one of the release's detectors"
        )
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    depth = DEPTHS.get(len(blocks))
    if depth is None:
        raise WeightsError(f"{path}: its trunk's layer3 has {len(blocks)} blocks; ECA-ResNet-50 has 6, -101 has 23")
    meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
    classes = meta.get("CLASSES")
    return MmdetCheckpoint(
        state, list(classes) if classes else None, kind, depth, _file_kernel_sizes(state, path), str(path)
    )


def _eca_keys(state: Dict[str, torch.Tensor]) -> Dict[str, str]:
    """Each block's ECA tensor, matched by structure (a (1, 1, k) tensor inside ``backbone.layerS.B.``), whatever
    the fork called it -> our name for it (``layerS.B.eca.conv.weight``)."""
    found: Dict[str, str] = {}
    for key, value in state.items():
        m = re.match(r"backbone\.(layer\d\.\d+)\.", key)
        if m and value.dim() == 3 and tuple(value.shape[:2]) == (1, 1):
            found[key] = f"{m.group(1)}.eca.conv.weight"
    return found


def _file_kernel_sizes(state: Dict[str, torch.Tensor], path: Path) -> Tuple[int, ...]:
    sizes = stage_kernel_sizes(state, prefix="backbone.")
    if sorted(sizes) != ["layer1", "layer2", "layer3", "layer4"]:
        raise WeightsError(
            f"{path} has no ECA layers in {'every stage' if sizes else 'its trunk'} (a plain ResNet detector?); "
            "load it with torchvision's own detectors"
        )
    if any(len(s) != 1 for s in sizes.values()):
        raise WeightsError(f"{path}: its ECA kernel sizes vary within a stage ({sizes}); they follow no kernel code")
    return tuple(sizes[f"layer{i}"].pop() for i in (1, 2, 3, 4))


def _head_map(kind: str) -> List[Tuple[str, str]]:
    """(mmdetection prefix, torchvision prefix) for the FPN and heads; each maps ``.weight`` and ``.bias``."""
    n_fpn = 3 if kind == "retinanet" else 4
    pairs = [(f"neck.lateral_convs.{i}.conv", f"backbone.fpn.inner_blocks.{i}.0") for i in range(n_fpn)]
    pairs += [(f"neck.fpn_convs.{i}.conv", f"backbone.fpn.layer_blocks.{i}.0") for i in range(n_fpn)]
    if kind == "retinanet":
        pairs += [("neck.fpn_convs.3.conv", "backbone.fpn.extra_blocks.p6")]
        pairs += [("neck.fpn_convs.4.conv", "backbone.fpn.extra_blocks.p7")]
        for branch, ours in (("cls", "classification_head"), ("reg", "regression_head")):
            pairs += [(f"bbox_head.{branch}_convs.{i}.conv", f"head.{ours}.conv.{i}.0") for i in range(4)]
        pairs += [("bbox_head.retina_cls", "head.classification_head.cls_logits")]
        pairs += [("bbox_head.retina_reg", "head.regression_head.bbox_reg")]
        return pairs
    pairs += [("rpn_head.rpn_conv", "rpn.head.conv.0.0"), ("rpn_head.rpn_cls", "rpn.head.cls_logits")]
    pairs += [("rpn_head.rpn_reg", "rpn.head.bbox_pred")]
    pairs += [
        ("bbox_head.shared_fcs.0", "roi_heads.box_head.fc6"),
        ("bbox_head.shared_fcs.1", "roi_heads.box_head.fc7"),
    ]
    pairs += [("bbox_head.fc_cls", "roi_heads.box_predictor.cls_score")]
    pairs += [("bbox_head.fc_reg", "roi_heads.box_predictor.bbox_pred")]
    if kind == "maskrcnn":
        pairs += [(f"mask_head.convs.{i}.conv", f"roi_heads.mask_head.{i}.0") for i in range(4)]
        pairs += [("mask_head.upsample", "roi_heads.mask_predictor.conv5_mask")]
        pairs += [("mask_head.conv_logits", "roi_heads.mask_predictor.mask_fcn_logits")]
    return pairs


def remap_state_dict(ckpt: MmdetCheckpoint, model: nn.Module) -> Dict[str, torch.Tensor]:
    """The file's tensors under ``model``'s names, every key of the file consumed and every key of the model filled.

    Raises:
        WeightsError: Keys left over or missing, or tensors of another shape, named.
    """
    state = ckpt.state_dict
    out: Dict[str, torch.Tensor] = {}
    used = set()
    eca = _eca_keys(state)
    for key, value in state.items():
        if key.startswith("backbone.") and not key.startswith("backbone.fpn."):
            if key.endswith("num_batches_tracked"):
                used.add(key)  # BatchNorm's step counter: frozen BatchNorm has none
                continue
            name = eca.get(key, key[len("backbone.") :])
            out[f"backbone.body.{name}"] = value
            used.add(key)
    for theirs, ours in _head_map(ckpt.kind):
        for suffix in ("weight", "bias"):
            key = f"{theirs}.{suffix}"
            if key in state:
                out[f"{ours}.{suffix}"] = state[key]
                used.add(key)
    left = sorted(set(state) - used)
    missing, unknown, shapes = state_dict_mismatch(model.state_dict(), out)
    missing, unknown = sorted(missing), sorted(unknown)
    problems = []
    if left or unknown:
        problems.append(f"{len(left) + len(unknown)} tensors of the file not used ({', '.join((left + unknown)[:3])})")
    if missing:
        problems.append(f"{len(missing)} tensors of {ckpt.architecture} not in the file ({', '.join(missing[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} of another shape ({'; '.join(shapes[:2])})")
    if problems:
        raise WeightsError(f"{ckpt.source} does not convert to {ckpt.architecture}: " + "; ".join(problems))
    return out


def label_map_for(ckpt: MmdetCheckpoint, head_width: int) -> Tuple[LabelMap, List[str]]:
    """The label map of the file's head, from ``meta['CLASSES']`` (COCO's names get COCO's ids), and notes."""
    background = ckpt.kind != "retinanet"
    notes = []
    classes = ckpt.classes
    if classes is None:
        classes = [c["name"] for c in coco_categories()]
        notes.append("the file has no meta['CLASSES']; taking COCO's 80 classes, as the release trained on")
    if len(classes) + int(background) != head_width:
        raise WeightsError(
            f"{ckpt.source}: its head has {head_width} outputs but meta['CLASSES'] names {len(classes)} classes"
            + (" (+1 for background)" if background else "")
        )
    coco = {c["name"]: c["id"] for c in coco_categories()}
    if all(name in coco for name in classes):
        ids = [coco[name] for name in classes]
    else:
        ids = list(range(1, len(classes) + 1))
        notes.append(f"its classes are not COCO's; numbered 1-{len(classes)} in meta['CLASSES'] order")
    return LabelMap(tuple(ids), tuple(classes), background), notes


def _check_input(size: int) -> List[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(3, size, size + size // 4, generator=g), torch.rand(3, size - size // 4, size, generator=g)]


def _outputs(model: nn.Module, images: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Every head's raw output on ``images``: the FPN levels, the dense head(s), the RoI heads' logits."""
    with torch.no_grad():
        batch, _ = model.transform(images)
        features = model.backbone(batch.tensors)
        out = {f"fpn.{k}": v for k, v in features.items()}
        levels = list(features.values())
        if hasattr(model, "rpn"):
            objectness, deltas = model.rpn.head(levels)
            out.update({f"rpn.cls.{i}": t for i, t in enumerate(objectness)})
            out.update({f"rpn.reg.{i}": t for i, t in enumerate(deltas)})
            detections = model(images)
            for i, d in enumerate(detections):
                out.update({f"det{i}.{k}": v for k, v in d.items()})
        else:
            head = model.head(levels)
            out.update({f"head.{k}": v for k, v in head.items()})
    return out


def verify_detector_folder(model: nn.Module, folder: Union[str, Path], size: int = 192) -> float:
    """Reload ``folder`` and compare every head's outputs with ``model``'s on two fixed images of about ``size``
    pixels (resized to ``size``, not to the model's 800: the weights are what is checked); returns the largest
    difference.

    Raises:
        WeightsError: The outputs differ (the folder is not usable).
    """
    reloaded = get_builder(model.detector_cfg["architecture"])(checkpoint=str(folder))
    images = _check_input(size)
    sizes = model.transform.min_size, model.transform.max_size
    try:
        for m in (model, reloaded):
            m.transform.min_size, m.transform.max_size = (size,), 2 * size
        expected, got = _outputs(model.eval(), images), _outputs(reloaded.eval(), images)
    finally:
        model.transform.min_size, model.transform.max_size = sizes
    if expected.keys() != got.keys():
        raise WeightsError(f"{folder} reloads to a model with other outputs ({sorted(set(expected) ^ set(got))[:3]})")
    diff = max(((expected[k] - got[k]).abs().max().item() if expected[k].numel() else 0.0) for k in expected)
    if diff != 0.0:
        raise WeightsError(f"{folder} reloads to other outputs than the converted model (max abs diff {diff:.3g})")
    return diff


@dataclasses.dataclass
class DetectorConversion:
    """What `convert_mmdet_checkpoint` did and found."""

    out_dir: Path
    architecture: str
    kernel_code: str
    source_sha256: str
    max_abs_diff: float
    notes: List[str]


def convert_mmdet_checkpoint(
    src: Union[str, Path],
    architecture: str,
    out_dir: Union[str, Path],
    kernel_code: Optional[str] = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> DetectorConversion:
    """Convert one of the release's mmdetection v1 files into a detector folder and check it reloads the same.

    Args:
        src: The ``.pth`` file.
        architecture: The detector it holds, e.g. ``maskrcnn_eca_resnet50_fpn``.
        out_dir: The folder to write.
        kernel_code: The kernel code you expect; the file's own ECA tensors decide, and a different one is an error.
        overwrite: Replace ``out_dir``.
        log: Where progress lines go.
    """
    builder = get_builder(architecture)
    check_out_dir(out_dir, overwrite)
    ckpt = read_mmdet_checkpoint(src)
    if ckpt.architecture != architecture:
        raise WeightsError(f"{src} holds a {ckpt.architecture}, not a {architecture}: pass model={ckpt.architecture}")
    notes = [
        f"kernel code {ckpt.kernel_code} (read from the file's ECA tensors: {'/'.join(map(str, ckpt.kernel_sizes))})"
    ]
    if kernel_code is not None and parse_kernel_code(kernel_code, 4) != ckpt.kernel_sizes:
        raise WeightsError(
            f"{src} was trained with kernel code {ckpt.kernel_code}, not {kernel_code}: "
            f"drop kernel_code= or pass kernel_code={ckpt.kernel_code}"
        )
    named = re.search(r"_k?(\d{1,4})_", Path(src).name)
    if named and parse_kernel_code(named.group(1), 4) != ckpt.kernel_sizes:
        notes.append(f"the file name says {named.group(1)}, but its ECA tensors are {ckpt.kernel_code}")
    width_key = "bbox_head.retina_cls.weight" if ckpt.kind == "retinanet" else "bbox_head.fc_cls.weight"
    if width_key not in ckpt.state_dict:
        raise WeightsError(f"{src} has no {width_key}: its head is not the release's")
    width = ckpt.state_dict[width_key].shape[0]
    if ckpt.kind == "retinanet":
        width //= 9
    label_map, label_notes = label_map_for(ckpt, width)
    notes += label_notes
    model = builder(kernel_sizes=ckpt.kernel_code, categories=label_map.to_json()["categories"])
    model.label_map = label_map  # the file's own head order
    model.load_state_dict(remap_state_dict(ckpt, model))
    use_legacy_coordinates(model).eval()  # v1 trained these weights with its box conventions
    for note in notes:
        log(note)
    source_sha = sha256_file(src)
    card = render_detector_card(model, Path(src).name, source_sha)
    metadata = {"architecture": architecture, "kernel_code": ckpt.kernel_code, "source_file": Path(src).name}
    released = released_checkpoint(architecture, ckpt.kernel_code, label_map)
    if released is not None:
        metadata["checkpoint"] = released.name  # what `eca-models publish` records the upload in
    with new_model_folder(out_dir, overwrite) as tmp:  # renamed into place only once it checks out
        write_detector_files(model, tmp, card, metadata, source_file=Path(src).name, source_sha256=source_sha)
        diff = verify_detector_folder(model, tmp)
    log(f"wrote {out_dir}: {WEIGHTS_FILE}, {CONFIG_FILE}, README.md")
    log(f"checked: it reloads to the same FPN, head and detection outputs (max abs diff {diff:g})")
    return DetectorConversion(Path(out_dir), architecture, ckpt.kernel_code, source_sha, diff, notes)
