"""Model folders, for classifiers and detectors alike: ``model.safetensors``, ``config.json`` and ``README.md``,
each written atomically, into a folder made whole beside its target and renamed into place only once it is
complete (and, for a conversion, checked)."""

import contextlib
import copy
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional, Union

import torch
from safetensors.torch import save_file

from ..files import FolderNotEmpty, OutputPathError, atomic_folder, atomic_path, check_new_folder, write_text_atomic
from .loading import WEIGHTS_FILE, WeightsError
from .manifest import DETECTION_TASKS

__all__ = [
    "CONFIG_FILE",
    "check_out_dir",
    "hub_config",
    "new_model_folder",
    "read_model_config",
    "write_hub_files",
    "write_model_files",
]

CONFIG_FILE = "config.json"

# pretrained-cfg entries that say where the source weights were, not what they are
_SOURCE_KEYS = ("architecture", "url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source")
_DATA_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


def check_out_dir(out_dir: Union[str, Path], overwrite: bool) -> None:
    """The output folder checked before the work (one line naming it), as a `WeightsError`."""
    try:
        check_new_folder(out_dir, overwrite, "out")
    except OutputPathError as e:
        raise WeightsError(str(e)) from None


@contextlib.contextmanager
def new_model_folder(out_dir: Union[str, Path], overwrite: bool = False) -> Iterator[Path]:
    """A folder to write into, renamed to ``out_dir`` when the ``with`` block ends without an error; an existing,
    non-empty ``out_dir`` (without ``overwrite``) is a one-line `WeightsError`."""
    try:
        with atomic_folder(out_dir, overwrite) as tmp:
            yield tmp
    except FolderNotEmpty as e:
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


def hub_config(
    model: torch.nn.Module, model_config: Optional[Dict[str, Any]] = None, data_config: Optional[Dict] = None
) -> Dict[str, Any]:
    """timm's Hub ``config.json`` for a classifier, from the model's public attributes: ``architecture``,
    ``num_classes``, ``label_names``, ``model_args`` (what rebuilds it: kernel sizes, input channels, classes,
    pooling) and ``pretrained_cfg`` (the preprocessing the weights expect, without the source's location).

    Written here rather than by timm's private ``save_config_for_hf``, whose arguments change between releases;
    ``timm.create_model('local-dir:...')`` and ``'hf-hub:...'`` read this format in every timm the package allows
    (held by the tests that reload converted and fine-tuned folders).

    Args:
        model: An eca-models classifier (it has ``kernel_code`` and a timm ``pretrained_cfg``).
        model_config: Top-level entries (``label_names``) and ``pretrained_cfg`` overrides (``tag``).
        data_config: The preprocessing the weights expect, when not the model's pretrained cfg's.
    """
    extra = copy.deepcopy(model_config or {})
    source = model.pretrained_cfg
    in_chans = model.get_submodule(source["first_conv"]).in_channels
    cfg = {k: v for k, v in source.items() if v is not None and k not in _SOURCE_KEYS}
    cfg.update(extra.pop("pretrained_cfg", {}))
    cfg.update({k: data_config[k] for k in _DATA_KEYS if data_config and data_config.get(k) is not None})
    cfg["input_size"] = (in_chans, *cfg["input_size"][1:])
    if tuple(cfg["input_size"][1:]) != tuple(source["input_size"][1:]):
        for key in ("pool_size", "test_input_size", "test_crop_pct"):  # the source's sizes no longer apply
            cfg.pop(key, None)
    if model.num_classes != source.get("num_classes"):
        for key in ("label_names", "label_descriptions"):
            cfg.pop(key, None)
    cfg.update(num_classes=model.num_classes, custom_load=False)
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    model_args = {"kernel_sizes": model.kernel_code, "in_chans": in_chans, "num_classes": model.num_classes}
    config = {"architecture": source["architecture"], "num_classes": model.num_classes}
    insertion = getattr(model, "eca_insertion", None)
    if insertion:  # a timm model with add_eca: the with_eca entrypoint rebuilds it
        config["architecture"] = "with_eca"
        model_args.update(base=insertion["base"], where=insertion["where"])
    config["num_features"] = model.num_features
    if isinstance(pool, str) and pool:
        config["global_pool"] = model_args["global_pool"] = pool
    names = extra.pop("label_names", None)
    if names:
        config["label_names"] = list(names)
    config.update(model_args=model_args, pretrained_cfg=cfg, **extra)
    return config


def write_hub_files(
    model: torch.nn.Module,
    folder: Union[str, Path],
    card: str,
    metadata: Dict[str, str],
    model_config: Optional[Dict] = None,
    data_config: Optional[Dict] = None,
) -> None:
    """A classifier's folder: `write_model_files` with timm's ``config.json`` (`hub_config`), so that
    ``timm.create_model('local-dir:...')`` and the Hub load it.

    Args:
        model: The model whose weights and config to save.
        folder: An existing folder.
        card: The model card text.
        metadata: String metadata stored in the safetensors header.
        model_config: Extra timm config entries (``label_names``, ``pretrained_cfg`` overrides).
        data_config: The preprocessing the weights expect, when not the model's pretrained cfg's.
    """
    config = json.dumps(hub_config(model, model_config, data_config), indent=2) + "\n"
    write_model_files(model, folder, card, metadata, lambda path: path.write_text(config, encoding="utf-8"))


def read_model_config(folder: Union[str, Path], detector: bool = False) -> Dict[str, Any]:
    """A model folder's ``config.json``, checked: there, a JSON object (an error names the file and line), and of
    the kind asked for (an error says where a folder of the other kind goes).

    Raises:
        WeightsError: One line naming the folder or file and what is wrong.
    """
    path = Path(folder) / CONFIG_FILE
    again = "write the folder again with `eca-models convert`"
    if not path.is_file():
        raise WeightsError(
            f"{folder} has no {CONFIG_FILE}; pass a folder written by `eca-models convert` or `finetune`"
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise WeightsError(f"{path} is not a UTF-8 text file; {again}") from None
    except json.JSONDecodeError as e:
        raise WeightsError(
            f"{path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}; fix it or {again}"
        ) from None
    if not isinstance(config, dict):
        raise WeightsError(f"{path} holds no JSON object; {again}")
    arch = config.get("architecture", "unknown architecture")
    if detector and config.get("task") not in DETECTION_TASKS:
        raise WeightsError(
            f"{folder} holds the classifier {arch}, not a detector: give it as the trunk (weights_backbone=) or pass "
            "a detector folder"
        )
    if not detector and config.get("task") in DETECTION_TASKS:
        raise WeightsError(
            f"{folder} is a detector ({arch}), not a classifier: give it as model= to predict, validate or finetune "
            "(or as create_detector's checkpoint=); a trunk (weights_backbone=) takes an ImageNet classifier's weights"
        )
    return config
