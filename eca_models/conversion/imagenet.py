"""Turn an authors' ``.pth.tar`` into a Hub-ready folder, and prove the result loads to the same logits.

The folder holds ``model.safetensors`` (metadata: architecture, kernel code, source file and its
sha256), ``config.json`` in timm's Hub format, and a ``README.md`` model card. It is written
beside the target under a temporary name and renamed into place, so a failed or interrupted run
leaves nothing half-written.
"""

import dataclasses
import re
from pathlib import Path
from typing import Callable, Dict, List, Tuple, Union

import timm
import torch

from ..complexity import count_macs, count_params
from ..errors import UnknownModel, local_path, require_whole_number
from ..files import sha256_file
from ..weights.folders import check_out_dir, new_model_folder, write_hub_files
from ..weights.loading import WEIGHTS_FILE, WeightsError, read_weights_file
from ..weights.manifest import find_checkpoint
from ..weights.model_card import render_model_card
from ..zoo import list_models

__all__ = [
    "ConversionReport",
    "convert_checkpoint",
    "describe_kernels",
    "remap_checkpoint",
    "verify_hub_folder",
]


@dataclasses.dataclass
class ConversionReport:
    """What ``convert_checkpoint`` did and found."""

    out_dir: Path
    model_name: str
    kernel_code: str
    source_sha256: str
    max_abs_diff: float
    notes: List[str]


def describe_kernels(model: torch.nn.Module) -> str:
    """One line per kernel-code digit: which layers it sets and to what size."""
    parts = []
    own = model.state_dict()
    for group, names in model.eca_kernel_groups().items():
        sizes = sorted({own[n].shape[-1] for n in names})
        parts.append(f"{group}: k={'/'.join(map(str, sizes))} ({len(names)} ECA layers)")
    return f"kernel code {model.kernel_code}: " + "; ".join(parts)


def _fixed_input(size: int) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def remap_checkpoint(checkpoint: Dict, model_name: str, source_name: str = "") -> Tuple[torch.nn.Module, List[str]]:
    """The authors' checkpoint dict in ``model_name``'s model (its filter strips prefixes and checks every key and
    ECA kernel), in eval mode, and notes on what the file said of itself."""
    notes = []
    if "arch" in checkpoint:
        notes.append(
            f"the file's 'arch' field says {checkpoint['arch']!r}; ignored (the architecture comes from model=)"
        )
    try:
        model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=checkpoint))
    except WeightsError as e:
        raise WeightsError(f"{source_name}: {e}" if source_name else str(e)) from None
    model.eval()
    named = re.search(r"_(k\d+)", source_name)
    if named and named.group(1) != model.kernel_code:
        notes.append(f"the file name says {named.group(1)}, but its weights fit {model.kernel_code}")
    notes.append(describe_kernels(model))
    return model, notes


def verify_hub_folder(model_name: str, folder: Union[str, Path], x: torch.Tensor, expected: torch.Tensor) -> float:
    """Reload ``folder`` as ``model_name`` and compare its logits on ``x`` with ``expected``.

    Raises:
        WeightsError: They differ (the folder is not usable).
    """
    reloaded = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(file=str(folder))).eval()
    with torch.no_grad():
        diff = (reloaded(x) - expected).abs().max().item()
    if diff != 0.0:
        raise WeightsError(f"the converted weights give other logits than the source (max abs diff {diff:.3g})")
    return diff


def convert_checkpoint(
    src: Union[str, Path],
    model_name: str,
    out_dir: Union[str, Path],
    overwrite: bool = False,
    check_size: int = 224,
    log: Callable[[str], None] = print,
) -> ConversionReport:
    """Convert an authors'-format checkpoint to a Hub folder and check it reloads to identical logits.

    Four steps: read (``weights_only=True``), remap (`remap_checkpoint`), save (`write_hub_files`, into
    a folder beside ``out_dir``) and verify (`verify_hub_folder`); the folder is renamed into place only once
    it reloads to the source's logits.

    Args:
        src: The authors' ``.pth.tar`` (read with ``weights_only=True``) or any state-dict file.
        model_name: The eca-models entrypoint the weights belong to (``eca_resnet50_k3557``).
        out_dir: The folder to write.
        overwrite: Replace ``out_dir`` if it exists.
        check_size: Image size of the fixed input used for the logits check.
        log: Where progress lines go.
    """
    src = local_path(src, "weights file")
    if model_name not in list_models():
        raise UnknownModel(f"unknown model {model_name!r}; choose one of: {', '.join(list_models())}")
    require_whole_number("check_size", check_size, 1)
    check_out_dir(out_dir, overwrite)
    source_sha = sha256_file(src) if src.is_file() else ""
    model, notes = remap_checkpoint(read_weights_file(src), model_name, src.name)
    for note in notes:
        log(note)

    card, metadata = _card_and_metadata(model, model_name, src.name, source_sha)
    x = _fixed_input(check_size)
    with torch.no_grad():
        expected = model(x)
    with new_model_folder(out_dir, overwrite) as tmp:  # renamed into place only once it reloads the same
        write_hub_files(model, tmp, card, metadata)
        diff = verify_hub_folder(model_name, tmp, x, expected)
    log(f"wrote {out_dir}: {WEIGHTS_FILE}, config.json, README.md")
    log(
        f"reloaded it: logits identical to the source file's on a fixed "
        f"{check_size}x{check_size} input (max abs diff 0)"
    )
    return ConversionReport(Path(out_dir), model_name, model.kernel_code, source_sha, diff, notes)


def _card_and_metadata(
    model: torch.nn.Module, model_name: str, source: str, source_sha: str
) -> Tuple[str, Dict[str, str]]:
    """The converted folder's model card and the weights file's metadata (the release's figures where the file's
    kernel code is the released one)."""
    ckpt = find_checkpoint(model_name)
    released = ckpt if ckpt and ckpt.kernel_code == model.kernel_code else None
    hf_hub_id = released.hf_hub_id if released else f"ORG/{model_name}"
    card = render_model_card(
        repo_name=hf_hub_id.split("/")[-1],
        model_name=model_name,
        kernel_code=model.kernel_code,
        num_params=count_params(model),
        gmacs=count_macs(model) / 1e9,
        hf_hub_id=hf_hub_id,
        checkpoint=released,
        source_file=source,
        source_sha256=source_sha,
    )
    metadata = {"architecture": model_name, "kernel_code": model.kernel_code, "source_file": source}
    metadata["source_sha256"] = source_sha
    if ckpt is not None:
        metadata["checkpoint"] = ckpt.name
    return card, metadata
