"""The model zoo as rows: every registered ECA model with its measured and published figures.

``eca-models list`` prints these rows and the docs' zoo table is generated from them; the
figures come from the weights manifest and from measuring the models, never typed here.
"""

import dataclasses
import fnmatch
import pkgutil
from typing import List, Optional

import timm
import torch

from . import models
from .complexity import measure
from .weights import Checkpoint, find_checkpoint, list_checkpoints
from .weights.fetch import locate
from .weights.release import cached_conversion

__all__ = [
    "AVAILABLE",
    "DetectorRow",
    "ZooRow",
    "detector_rows",
    "list_models",
    "weights_detail",
    "weights_state",
    "zoo_rows",
]

# the model families: every module of eca_models.models (timm registers a model under its module's name)
MODULES = tuple(m.name for m in pkgutil.iter_modules(models.__path__) if not m.name.startswith("_"))


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
    weights_source: Optional[str] = None

    @property
    def params_binary(self) -> str:
        """The exact parameter count in the published unit (2**20): 25,557,112 -> '24.37M'."""
        return f"{self.params / 2**20:.2f}M"


WEIGHTS_STATES = ("local", "cached", "on the Hub", "authors' file", "not published", "none")
AVAILABLE = ("local", "cached", "on the Hub", "authors' file")  # states pretrained=True can load from


def weights_state(ckpt: Optional[Checkpoint]) -> str:
    """`locate` in the zoo's words: ``local``, ``cached`` (a converted release file,
    or the Hub file, in the cache), ``on the Hub``, ``authors' file`` (fetched on first use), ``not published``
    (none of these, or left out by ECA_MODELS_SOURCES), or ``none`` (no checkpoint)."""
    if ckpt is None:
        return "none"
    where, found = locate(ckpt)
    if where == "hub":
        return "cached" if found is not None else "on the Hub"
    return {"release": "authors' file", "missing": "not published"}.get(where, where)


def weights_detail(ckpt: Optional[Checkpoint]) -> Optional[str]:
    """Where a cached conversion came from and when (``google-drive, 2026-12-06``), else None."""
    cached = cached_conversion(ckpt) if ckpt is not None else None
    if cached is None:
        return None
    return f"{cached.provenance.get('source', '?')}, {str(cached.provenance.get('fetched', '?'))[:10]}"


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
                weights_source=weights_detail(ckpt),
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
    weights_source: Optional[str] = None


def detector_rows(pattern: str = "") -> List[DetectorRow]:
    """The released detectors (optionally filtered by a wildcard pattern), from the manifest and the builders
    (built on the meta device: no memory, no weights)."""
    # torchvision's detection stack, loaded only for the detectors' rows (`import eca_models` does not need it)
    from .detection import create_detector, release_param_count

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
                weights_source=weights_detail(ckpt),
            )
        )
    return rows
