"""What the detection tests build: mmdetection v1 checkpoint files with random weights, written key by key as
mmdetection v1 names them (not by inverting our converter), and tiny COCO-format datasets."""

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import timm
import torch
from PIL import Image

import eca_models  # noqa: F401


def coco_names() -> List[str]:
    from eca_models.detection import coco_categories

    return [c["name"] for c in coco_categories()]


def _conv(out: int, inp: int, k: int, g: torch.Generator, scale: float = 0.05) -> Dict[str, torch.Tensor]:
    return {
        "weight": torch.randn(out, inp, k, k, generator=g) * scale / k,
        "bias": torch.randn(out, generator=g) * 0.01,
    }


def _linear(out: int, inp: int, g: torch.Generator) -> Dict[str, torch.Tensor]:
    return {"weight": torch.randn(out, inp, generator=g) * inp**-0.5, "bias": torch.randn(out, generator=g) * 0.01}


def mmdet_state_dict(
    kind: str,
    depth: int = 50,
    kernel_sizes: Sequence[int] = (3, 3, 7, 7),
    num_classes: int = 80,
    seed: int = 0,
    eca_name: str = "eca.conv.weight",
    confident_class: Optional[int] = None,
) -> Dict[str, torch.Tensor]:
    """An mmdetection v1 ``state_dict`` of ``kind`` (fasterrcnn, maskrcnn, retinanet) with random weights;
    ``confident_class`` (0-based) gets a large classifier bias, so the model detects it everywhere."""
    g = torch.Generator().manual_seed(seed)
    trunk = timm.create_model(f"eca_resnet{depth}", kernel_sizes=tuple(kernel_sizes), num_classes=0)
    state: Dict[str, torch.Tensor] = {}
    for key, value in trunk.state_dict().items():
        if key.endswith("running_var"):
            value = torch.rand(value.shape, generator=g) + 0.5
        elif key.endswith("running_mean") or key.endswith("bn1.bias") or ".bn" in key and key.endswith("bias"):
            value = torch.randn(value.shape, generator=g) * 0.1
        elif value.is_floating_point():
            value = value.clone()
        key = key.replace("eca.conv.weight", eca_name)
        state[f"backbone.{key}"] = value
    stage_channels = [256, 512, 1024, 2048]
    inputs = stage_channels[1:] if kind == "retinanet" else stage_channels

    def put(prefix: str, tensors: Dict[str, torch.Tensor]) -> None:
        for name, t in tensors.items():
            state[f"{prefix}.{name}"] = t

    for i, c in enumerate(inputs):
        put(f"neck.lateral_convs.{i}.conv", _conv(256, c, 1, g))
        put(f"neck.fpn_convs.{i}.conv", _conv(256, 256, 3, g))
    if kind == "retinanet":
        put("neck.fpn_convs.3.conv", _conv(256, 2048, 3, g))
        put("neck.fpn_convs.4.conv", _conv(256, 256, 3, g))
        for branch in ("cls", "reg"):
            for i in range(4):
                put(f"bbox_head.{branch}_convs.{i}.conv", _conv(256, 256, 3, g, 0.08))
        put("bbox_head.retina_cls", _conv(9 * num_classes, 256, 3, g, 0.08))
        put("bbox_head.retina_reg", _conv(9 * 4, 256, 3, g, 0.01))
        if confident_class is not None:
            state["bbox_head.retina_cls.bias"].view(9, num_classes)[:, confident_class] = 4.0
        return state
    put("rpn_head.rpn_conv", _conv(256, 256, 3, g, 0.08))
    put("rpn_head.rpn_cls", _conv(3, 256, 1, g, 0.08))
    put("rpn_head.rpn_reg", _conv(12, 256, 1, g, 0.01))
    put("bbox_head.shared_fcs.0", _linear(1024, 256 * 7 * 7, g))
    put("bbox_head.shared_fcs.1", _linear(1024, 1024, g))
    put("bbox_head.fc_cls", _linear(num_classes + 1, 1024, g))
    put("bbox_head.fc_reg", {k: v * 0.05 for k, v in _linear(4 * (num_classes + 1), 1024, g).items()})
    if confident_class is not None:
        state["bbox_head.fc_cls.bias"][1 + confident_class] = 8.0
    if kind == "maskrcnn":
        for i in range(4):
            put(f"mask_head.convs.{i}.conv", _conv(256, 256, 3, g, 0.08))
        state["mask_head.upsample.weight"] = torch.randn(256, 256, 2, 2, generator=g) * 0.05
        state["mask_head.upsample.bias"] = torch.randn(256, generator=g) * 0.01
        put("mask_head.conv_logits", _conv(num_classes + 1, 256, 1, g, 0.08))
    return state


def write_mmdet_checkpoint(
    path: Path, kind: str, classes: Optional[List[str]] = None, optimizer: bool = True, **kwargs
) -> Tuple[Path, Dict[str, torch.Tensor]]:
    """Write the file as mmdetection v1's ``save_checkpoint`` does: meta (with CLASSES), state_dict, optimizer."""
    classes = coco_names() if classes is None else classes
    state = mmdet_state_dict(kind, num_classes=len(classes), **kwargs)
    obj = {
        "meta": {
            "mmdet_version": "1.0rc0+d3ca926",
            "config": "model = dict(type='MaskRCNN')",
            "CLASSES": tuple(classes),
        },
        "state_dict": state,
    }
    if optimizer:
        obj["optimizer"] = {"state": {}, "param_groups": [{"lr": 0.01, "momentum": 0.9, "params": [0, 1]}]}
    torch.save(obj, path)
    return path, state


def write_coco_dataset(
    root: Path,
    split: str = "val2017",
    n_images: int = 4,
    categories: Sequence[Tuple[int, str]] = ((3, "car"), (18, "dog")),
    size: Tuple[int, int] = (160, 128),
    seed: int = 0,
    empty_images: int = 1,
) -> Path:
    """A tiny COCO-layout dataset: ``root/annotations/instances_<split>.json`` and ``root/<split>/*.jpg``, each image
    a flat background with one or two coloured rectangles annotated with boxes and polygons."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    w, h = size
    for i in range(n_images):
        pixels = np.full((h, w, 3), 40, np.uint8)
        image_id = 100 + i
        if i >= n_images - empty_images:
            pass  # an image with no objects
        else:
            for j, (cat_id, _) in enumerate(categories[: 1 + i % len(categories)]):
                x0, y0 = int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2))
                bw, bh = int(rng.integers(20, w // 2 - 5)), int(rng.integers(20, h // 2 - 5))
                pixels[y0 : y0 + bh, x0 : x0 + bw] = (200, 60 + 100 * j, 30)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": cat_id,
                        "bbox": [x0, y0, bw, bh],
                        "area": bw * bh,
                        "iscrowd": 0,
                        "segmentation": [[x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]],
                    }
                )
        name = f"{image_id:012d}.jpg"
        Image.fromarray(pixels).save(root / split / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    data = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n, "supercategory": "thing"} for c, n in categories],
    }
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))
    return root
