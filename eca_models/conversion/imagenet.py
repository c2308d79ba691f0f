"""Turn an authors' ``.pth.tar`` into a Hub-ready folder, and prove the result loads to the same logits.

The folder holds ``model.safetensors`` (metadata: architecture, kernel code, source file and its
sha256), ``config.json`` in timm's Hub format, and a ``README.md`` model card. It is written
beside the target under a temporary name and renamed into place, so a failed or interrupted run
leaves nothing half-written.
"""

import dataclasses
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import timm
import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from ..complexity import count_macs, count_params
from ..files import OutputPathError, atomic_folder, atomic_path, check_new_folder, sha256_file, write_text_atomic
from ..weights.loading import WEIGHTS_FILE, WeightsError, read_weights_file
from ..weights.manifest import find_checkpoint
from ..weights.model_card import render_model_card
from ..zoo import list_models

__all__ = [
    "ConversionReport",
    "check_out_dir",
    "convert_checkpoint",
    "describe_kernels",
    "remap_checkpoint",
    "save_hub_folder",
    "verify_hub_folder",
    "write_hub_files",
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


def write_hub_files(
    model: torch.nn.Module,
    folder: Union[str, Path],
    card: str,
    metadata: Dict[str, str],
    model_config: Optional[Dict] = None,
    data_config: Optional[Dict] = None,
) -> None:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``folder``, each atomically.

    Args:
        model: The model whose weights and config to save.
        folder: An existing folder.
        card: The model card text.
        metadata: String metadata stored in the safetensors header.
        model_config: Extra timm config entries (``label_names``, ``pretrained_cfg`` overrides).
        data_config: The preprocessing the weights expect, when not the model's pretrained cfg's.
    """
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:  # safetensors would create its file 0600
        save_file(state, str(tmp), metadata={"format": "pt", **metadata})
    model_args = {"kernel_sizes": model.kernel_code}
    with atomic_path(folder / "config.json") as tmp:
        save_config_for_hf(model, str(tmp), model_config=model_config, model_args=model_args, data_config=data_config)
    write_text_atomic(folder / "README.md", card)


def save_hub_folder(
    model: torch.nn.Module,
    out_dir: Union[str, Path],
    card: str,
    metadata: Dict[str, str],
    overwrite: bool = False,
) -> Path:
    """:func:`write_hub_files` into a new folder, made whole beside the target and renamed into place.

    Args:
        model: The model whose weights and config to save.
        out_dir: Target folder; it must not exist (or be empty) unless ``overwrite``.
        card: The model card text.
        metadata: String metadata stored in the safetensors header.
        overwrite: Replace an existing folder.
    """
    out_dir = Path(out_dir)
    try:
        with atomic_folder(out_dir, overwrite) as tmp:
            write_hub_files(model, tmp, card, metadata)
    except FileExistsError as e:
        raise WeightsError(str(e)) from None
    return out_dir


def check_out_dir(out_dir: Union[str, Path], overwrite: bool) -> None:
    """The output folder checked before the work (one line naming it), as a :class:`WeightsError`."""
    try:
        check_new_folder(out_dir, overwrite, "--out")
    except (FileExistsError, OutputPathError) as e:
        raise WeightsError(str(e)) from None


def remap_checkpoint(checkpoint: Dict, model_name: str, source_name: str = "") -> Tuple[torch.nn.Module, List[str]]:
    """The authors' checkpoint dict in ``model_name``'s model (its filter strips prefixes and checks every key and
    ECA kernel), in eval mode, and notes on what the file said of itself."""
    notes = []
    if "arch" in checkpoint:
        notes.append(
            f"the file's 'arch' field says {checkpoint['arch']!r}; ignored (the architecture comes from --model)"
        )
    model = timm.create_model(model_name, pretrained=True, pretrained_cfg_overlay=dict(state_dict=checkpoint)).eval()
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

    Four steps: read (``weights_only=True``), remap (:func:`remap_checkpoint`), save (:func:`write_hub_files`, into
    a folder beside ``out_dir``) and verify (:func:`verify_hub_folder`); the folder is renamed into place only once
    it reloads to the source's logits.

    Args:
        src: The authors' ``.pth.tar`` (read with ``weights_only=True``) or any state-dict file.
        model_name: The eca-models entrypoint the weights belong to (``eca_resnet50_k3557``).
        out_dir: The folder to write.
        overwrite: Replace ``out_dir`` if it exists.
        check_size: Image size of the fixed input used for the logits check.
        log: Where progress lines go.
    """
    src = Path(src)
    if model_name not in list_models():
        raise KeyError(f"unknown model {model_name!r}; choose one of: {', '.join(list_models())}")
    check_out_dir(out_dir, overwrite)
    source_sha = sha256_file(src) if src.is_file() else ""
    model, notes = remap_checkpoint(read_weights_file(src), model_name, src.name)
    for note in notes:
        log(note)

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
        source_file=src.name,
        source_sha256=source_sha,
    )
    metadata = {
        "architecture": model_name,
        "kernel_code": model.kernel_code,
        "source_file": src.name,
        "source_sha256": source_sha,
    }
    if ckpt is not None:
        metadata["checkpoint"] = ckpt.name
    x = _fixed_input(check_size)
    with torch.no_grad():
        expected = model(x)
    try:
        with atomic_folder(out_dir, overwrite) as tmp:
            write_hub_files(model, tmp, card, metadata)
            diff = verify_hub_folder(model_name, tmp, x, expected)
    except FileExistsError as e:
        raise WeightsError(str(e)) from None
    log(f"wrote {out_dir}: {WEIGHTS_FILE}, config.json, README.md")
    log(
        f"reloaded it: logits identical to the source file's on a fixed "
        f"{check_size}x{check_size} input (max abs diff 0)"
    )
    return ConversionReport(Path(out_dir), model_name, model.kernel_code, source_sha, diff, notes)
