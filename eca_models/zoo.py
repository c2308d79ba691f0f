"""The model zoo as rows: every registered ECA model with its measured and published figures.

``eca-models list`` prints these rows and the docs' zoo table is generated from them; the
figures come from the weights manifest and from measuring the models, never typed here.
"""

import dataclasses
import os
from typing import List, Optional

import timm
from huggingface_hub import try_to_load_from_cache

from .complexity import measure
from .weights import WEIGHTS_DIR_ENV, Checkpoint, find_checkpoint, weights_location
from .weights.loading import WEIGHTS_FILE

__all__ = ["DetectorRow", "ZooRow", "detector_rows", "list_models", "zoo_rows", "weights_state"]

MODULES = ("eca_resnet", "eca_mobilenetv2")


def list_models(pattern: str = "") -> List[str]:
    """Every model name eca-models registers with timm (optionally filtered by a wildcard pattern)."""
    names = timm.list_models(pattern or "*", module=list(MODULES))
    return sorted(names, key=lambda n: (not n.startswith("eca_resnet"), len(n.split("_k")[0]), n))


@dataclasses.dataclass
class ZooRow:
    """One model of the zoo, its figures measured and (where released) published."""

    model: str
    kernel_code: str
    params: int
    gmacs: float
    checkpoint: Optional[str]
    published_params: Optional[str]
    published_flops: Optional[str]
    top1: Optional[float]
    top5: Optional[float]
    weights: str

    @property
    def params_binary(self) -> str:
        """The exact parameter count in the published unit (2**20): 25,557,112 -> '24.37M'."""
        return f"{self.params / 2**20:.2f}M"


def weights_state(ckpt: Optional[Checkpoint]) -> str:
    """'cached', 'local' (under ECA_MODELS_WEIGHTS_DIR), 'on the Hub', 'not published' or 'none'."""
    if ckpt is None:
        return "none"
    if os.environ.get(WEIGHTS_DIR_ENV) and weights_location(ckpt.hf_hub_id):
        return "local"
    cached = try_to_load_from_cache(ckpt.hf_hub_id, WEIGHTS_FILE, revision=ckpt.revision or None)
    if isinstance(cached, str):
        return "cached"
    return "on the Hub" if ckpt.is_published else "not published"


def zoo_rows(pattern: str = "") -> List[ZooRow]:
    """The zoo, one row per registered model, GMACs measured at 224x224."""
    rows = []
    for name in list_models(pattern):
        params, macs = measure(name)
        ckpt = find_checkpoint(name)
        model_code = (
            timm.create_model(name, pretrained=False, num_classes=0).kernel_code if ckpt is None else ckpt.kernel_code
        )
        metrics = ckpt.metrics[ckpt.dataset] if ckpt else {}
        rows.append(
            ZooRow(
                model=name,
                kernel_code=model_code,
                params=params,
                gmacs=macs / 1e9,
                checkpoint=ckpt.name if ckpt else None,
                published_params=ckpt.published["params"] if ckpt else None,
                published_flops=ckpt.published["flops"] if ckpt else None,
                top1=metrics.get("acc@1"),
                top5=metrics.get("acc@5"),
                weights=weights_state(ckpt),
            )
        )
    return rows


@dataclasses.dataclass
class DetectorRow:
    """One detector of the zoo: the release's counts and AP, the MACs measured at 1280x800."""

    model: str
    task: str
    kernel_code: str
    params: int
    release_params: int
    gmacs: float
    checkpoint: str
    published_params: str
    published_flops: str
    box_map: float
    mask_map: Optional[float]
    weights: str


def detector_rows(pattern: str = "") -> List[DetectorRow]:
    """The released detectors (optionally filtered by a wildcard pattern), from the manifest and the builders
    (built on the meta device: no memory, no weights)."""
    import fnmatch

    import torch

    from .detection import create_detector, release_param_count
    from .weights import list_checkpoints

    rows = []
    for ckpt in list_checkpoints():
        if ckpt.is_classifier or (pattern and not fnmatch.fnmatch(ckpt.architecture, pattern)):
            continue
        with torch.device("meta"):
            model = create_detector(ckpt.architecture)
        m = ckpt.metrics["COCO-val2017"]
        rows.append(
            DetectorRow(
                model=ckpt.architecture,
                task=ckpt.task,
                kernel_code=ckpt.kernel_code,
                params=ckpt.num_params,
                release_params=release_param_count(model),
                gmacs=ckpt.gmacs,
                checkpoint=ckpt.name,
                published_params=ckpt.published["params"],
                published_flops=ckpt.published["flops"],
                box_map=m["box_map"],
                mask_map=m.get("mask_map"),
                weights=weights_state(ckpt),
            )
        )
    return rows
