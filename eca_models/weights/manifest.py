"""The weights manifest: every released checkpoint and the evidence that goes with it.

``manifest.json`` (``eca_models/weights/manifest.json``, a plain file: no other copy exists) is the one
place where a checkpoint's figures are written: hub id and pinned revision, sha256 and size, kernel
code, exact parameters, GMACs, the reported Top-1/Top-5, and where the authors' own file lies. Pretrained cfgs, model cards, ``eca-models list``, the docs and the
validation targets are all read from it. ``tests/test_manifest.py`` holds each entry against
the model it names, the way torchvision's tests check their Weights meta.
"""

import dataclasses
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from ..errors import UnknownModel, UsageError, first_line
from ..files import write_text_atomic

__all__ = [
    "CLASSIFICATION",
    "Checkpoint",
    "SCHEMA",
    "binary_units",
    "find_checkpoint",
    "get_checkpoint",
    "list_checkpoints",
    "load_manifest",
]

MANIFEST_NAME = "manifest.json"
SCHEMA = 3  # 2: each entry has a task, and metrics keyed by dataset for any task; 3: and its release source
RELEASE_KEYS = ("drive_id", "file_name", "sha256", "size", "baidu_url", "baidu_code")
# the Hub's task names: the one vocabulary of manifest entries, model folders and the detectors' facts
CLASSIFICATION = "image-classification"
DETECTION_TASKS = ("object-detection", "instance-segmentation")
TASKS = (CLASSIFICATION, *DETECTION_TASKS)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One released checkpoint, as recorded in the manifest.

    Attributes:
        name: ``architecture_kernelcode.tag``, e.g. ``eca_resnet50_k3557.in1k``: timm's name.tag; a detector's
            is ``architecture.coco`` (``maskrcnn_eca_resnet50_fpn.coco``).
        architecture: The architecture entrypoint, e.g. ``eca_resnet50``.
        kernel_code: The per-stage ECA kernel code the weights need, e.g. ``k3557``.
        source_file: The authors' file name the weights come from.
        hf_hub_id: The Hugging Face Hub repo that holds (or will hold) the safetensors file.
        revision: The pinned Hub commit; None until published.
        sha256: sha256 of ``model.safetensors``; None until published.
        file_size: Size in bytes of ``model.safetensors``; None until published.
        num_params: Exact parameter count (``nn.Parameter`` elements, torchvision's ``num_params``).
        gmacs: Multiply-accumulates in units of 1e9 (torch.utils.flop_counter): at 224x224 for classifiers, at
            1280x800 with the release's dummy proposals for detectors (``complexity.detector_macs``).
        published: The release README's complexity figures as printed (see the manifest's ``units_note``).
        metrics: The reported figures keyed by dataset, torchvision's ``_metrics`` shape:
            ``{"ImageNet-1K": {"acc@1", "acc@5"}}`` or ``{"COCO-val2017": {"box_map", ..., "mask_map", ...}}``.
        paper_metrics: The paper's row where it differs from the release README, else None.
        measured_metrics: What ``eca-models validate`` measured on the full val set, in the same shape.
        task: ``image-classification``, ``object-detection`` or ``instance-segmentation``.
        release: The authors' own file, the source until the Hub has the checkpoint: ``drive_id`` (Google Drive),
            ``file_name``, the original's ``sha256`` and ``size`` once recorded (None before), and the Baidu copy
            (``baidu_url``, ``baidu_code``), never fetched, shown when nothing else works.
    """

    name: str
    architecture: str
    kernel_code: str
    source_file: str
    hf_hub_id: str
    revision: Optional[str]
    sha256: Optional[str]
    file_size: Optional[int]
    num_params: int
    gmacs: Optional[float]
    published: Dict[str, str]
    metrics: Dict[str, Dict[str, float]]
    paper_metrics: Optional[Dict[str, Dict[str, float]]] = None
    measured_metrics: Optional[Dict[str, Dict[str, float]]] = None
    task: str = CLASSIFICATION
    release: Optional[Dict[str, Any]] = None

    @property
    def dataset(self) -> str:
        """The dataset the reported metrics are on: ``ImageNet-1K`` or ``COCO-val2017``."""
        return next(iter(self.metrics))

    @property
    def is_classifier(self) -> bool:
        """True for an ImageNet classifier (a timm model), False for a detector."""
        return self.task == CLASSIFICATION

    @property
    def model_name(self) -> str:
        """The entrypoint named after the checkpoint, e.g. ``eca_resnet50_k3557``."""
        return self.name.split(".", 1)[0]

    @property
    def tag(self) -> str:
        """The pretrained tag, e.g. ``in1k``."""
        return self.name.split(".", 1)[1]

    @property
    def is_published(self) -> bool:
        """True once the Hub revision and checksum are recorded."""
        return bool(self.revision and self.sha256)

    @property
    def meta(self) -> Dict[str, Any]:
        """torchvision-style meta: ``num_params``, ``_metrics``, ``_ops`` (GFLOPS), ``_file_size`` (MB)."""
        return {
            "num_params": self.num_params,
            "_metrics": self.metrics,
            "_ops": None if self.gmacs is None else round(2 * self.gmacs, 3),
            "_file_size": None if self.file_size is None else round(self.file_size / 2**20, 3),
            "kernel_code": self.kernel_code,
            "hf_hub_id": self.hf_hub_id,
        }


MANIFEST_ENV = "ECA_MODELS_MANIFEST"


def _manifest_path() -> Path:
    """The manifest in use: ``ECA_MODELS_MANIFEST`` (a maintainer's draft, a test's stand-in), else the package's
    (in a checkout, the file maintainers edit)."""
    return Path(os.environ.get(MANIFEST_ENV) or str(resources.files(__package__).joinpath(MANIFEST_NAME))).resolve()


def load_manifest(path: Optional[Union[str, Path]] = None) -> Dict[str, Checkpoint]:
    """Read the manifest into ``{name: Checkpoint}``.

    Args:
        path: A manifest file; defaults to the one shipped in the package.
    """
    path = Path(path or _manifest_path())
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:  # a draft named by ECA_MODELS_MANIFEST that is missing or not JSON
        source = f" ({MANIFEST_ENV})" if os.environ.get(MANIFEST_ENV) else ""
        raise UsageError(f"the manifest {path}{source} cannot be read: {first_line(e)}") from None
    schema = raw.get("schema") if isinstance(raw, dict) else None
    if schema != SCHEMA:
        raise UsageError(
            f"{path} has manifest schema {schema!r}; this eca-models reads schema {SCHEMA}: "
            "use the eca-models release that wrote it, or update the manifest"
        )
    entries = {name: Checkpoint(name=name, **entry) for name, entry in raw["checkpoints"].items()}
    for ckpt in entries.values():
        if ckpt.task not in TASKS or len(ckpt.metrics) != 1:
            raise UsageError(f"{path}: {ckpt.name} needs a task of {', '.join(TASKS)} and metrics for one dataset")
        if ckpt.release is not None and (not isinstance(ckpt.release, dict) or set(ckpt.release) != set(RELEASE_KEYS)):
            raise UsageError(f"{path}: {ckpt.name}'s release source needs exactly {', '.join(RELEASE_KEYS)}")
    return entries


_CACHE: Dict[str, Checkpoint] = {}


def _manifest() -> Dict[str, Checkpoint]:
    if not _CACHE:
        _CACHE.update(load_manifest())
    return _CACHE


def list_checkpoints(task: Optional[str] = None) -> List[Checkpoint]:
    """The checkpoints of the shipped manifest, in manifest order.

    Args:
        task: Only those of this task (``image-classification``, ...); None: all.
    """
    return [c for c in _manifest().values() if task is None or c.task == task]


def get_checkpoint(name: str) -> Checkpoint:
    """The checkpoint called ``name`` (``eca_resnet50_k3557.in1k``).

    Raises:
        UnknownModel: No such checkpoint (a ``KeyError``); the message lists the known ones.
    """
    try:
        return _manifest()[name]
    except KeyError:
        raise UnknownModel(f"no checkpoint {name!r} in the manifest; known: {', '.join(_manifest())}") from None


def find_checkpoint(model_name: str = "", hf_hub_id: str = "") -> Optional[Checkpoint]:
    """The checkpoint for an entrypoint (``eca_resnet50``, ``eca_resnet50_k3557``) or hub id, if any."""
    base = model_name.split(".", 1)[0]
    for ckpt in _manifest().values():
        if hf_hub_id and ckpt.hf_hub_id == hf_hub_id.split("@", 1)[0]:
            return ckpt
        if base and base in (ckpt.architecture, ckpt.model_name):
            return ckpt
    return None


def binary_units(figure: str) -> float:
    """The count behind a published figure: ``'24.37M'`` -> 24.37 * 2**20, ``'3.86G'`` -> 3.86 * 2**30."""
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}
    return float(figure[:-1]) * scale[figure[-1].upper()]


def update_manifest(name: str, path: Optional[Union[str, Path]] = None, **fields: Any) -> None:
    """Set ``fields`` of checkpoint ``name`` in the manifest file, written atomically.

    Args:
        name: The checkpoint to update.
        path: The manifest file; defaults to the one shipped in the package.
        **fields: Field names of `Checkpoint` and their new values.
    """
    path = Path(path or _manifest_path())
    raw = json.loads(path.read_text(encoding="utf-8"))
    if name not in raw["checkpoints"]:
        raise KeyError(f"no checkpoint {name!r} in {path}")
    known = {f.name for f in dataclasses.fields(Checkpoint)} - {"name"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"unknown manifest fields: {', '.join(sorted(unknown))}")
    raw["checkpoints"][name].update(fields)
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")
    _CACHE.clear()
