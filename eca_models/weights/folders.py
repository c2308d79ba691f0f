"""Model folders, for classifiers and detectors alike: ``model.safetensors``, ``config.json`` and ``README.md``,
each written atomically, into a folder made whole beside its target and renamed into place only once it is
complete (and, for a conversion, checked)."""

import contextlib
from pathlib import Path
from typing import Callable, Dict, Iterator, Optional, Union

import torch
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf

from ..files import OutputPathError, atomic_folder, atomic_path, check_new_folder, write_text_atomic
from .loading import WEIGHTS_FILE, WeightsError

__all__ = ["check_out_dir", "new_model_folder", "write_hub_files", "write_model_files"]


def check_out_dir(out_dir: Union[str, Path], overwrite: bool) -> None:
    """The output folder checked before the work (one line naming it), as a :class:`WeightsError`."""
    try:
        check_new_folder(out_dir, overwrite, "--out")
    except (FileExistsError, OutputPathError) as e:
        raise WeightsError(str(e)) from None


@contextlib.contextmanager
def new_model_folder(out_dir: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """A folder to write into, renamed to ``out_dir`` when the ``with`` block ends without an error; an existing,
    non-empty ``out_dir`` (without ``overwrite``) is a one-line :class:`WeightsError`."""
    try:
        with atomic_folder(out_dir, overwrite) as tmp:
            yield tmp
    except FileExistsError as e:
        raise WeightsError(str(e)) from None


def write_model_files(
    model: torch.nn.Module,
    folder: Union[str, Path],
    card: str,
    metadata: Dict[str, str],
    write_config: Callable[[Path], None],
) -> None:
    """The three files into an existing ``folder``, each atomically: the weights (``metadata`` in the safetensors
    header), the config (``write_config(path)`` writes it), the model card."""
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_FILE) as tmp:  # safetensors would create its file 0600
        save_file(state, str(tmp), metadata={"format": "pt", **metadata})
    with atomic_path(folder / "config.json") as tmp:
        write_config(tmp)
    write_text_atomic(folder / "README.md", card)


def write_hub_files(
    model: torch.nn.Module,
    folder: Union[str, Path],
    card: str,
    metadata: Dict[str, str],
    model_config: Optional[Dict] = None,
    data_config: Optional[Dict] = None,
) -> None:
    """A classifier's folder: :func:`write_model_files` with timm's ``config.json`` (the architecture, its kernel
    sizes, the preprocessing), so that ``timm.create_model('local-dir:...')`` and the Hub load it.

    Args:
        model: The model whose weights and config to save.
        folder: An existing folder.
        card: The model card text.
        metadata: String metadata stored in the safetensors header.
        model_config: Extra timm config entries (``label_names``, ``pretrained_cfg`` overrides).
        data_config: The preprocessing the weights expect, when not the model's pretrained cfg's.
    """

    def write_config(path: Path) -> None:
        model_args = {"kernel_sizes": model.kernel_code}
        save_config_for_hf(model, str(path), model_config=model_config, model_args=model_args, data_config=data_config)

    write_model_files(model, folder, card, metadata, write_config)
