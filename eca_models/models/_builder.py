"""What every ECA model family shares: pretrained cfgs from the manifest, building, weight checks."""

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Type, TypeVar

import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, resolve_pretrained_cfg

from ..layers import format_kernel_code
from ..weights import CLASSIFICATION, WeightsError, list_checkpoints, load_pretrained_weights
from ..weights.loading import unwrap_checkpoint

ModelT = TypeVar("ModelT", bound=torch.nn.Module)

PAPER = dict(
    paper_ids="arXiv:1910.03151",
    paper_name="ECA-Net: Efficient Channel Attention for Deep Convolutional Neural Networks",
    origin_url="https://github.com/BangguWu/ECANet",
    license="mit",
)


def make_default_cfgs(cfg_fn: Callable[..., Dict[str, Any]], family: str) -> Dict[str, Any]:
    """timm default cfgs for every manifest checkpoint of a family, under both of its names.

    ``eca_resnet50_k3557.in1k`` and ``eca_resnet50.in1k`` (the architecture defaults to the
    released kernel code) share one cfg carrying the Hub id and the evaluation protocol.
    """
    cfgs = {}
    for ckpt in list_checkpoints(CLASSIFICATION):
        if re.fullmatch(rf"{family}\d*", ckpt.architecture):
            cfg = cfg_fn(hf_hub_id=ckpt.hf_hub_id, **PAPER)
            cfgs[f"{ckpt.architecture}.{ckpt.tag}"] = cfg
            cfgs[ckpt.name] = cfg
    return generate_default_cfgs(cfgs)


def build_eca_model(model_cls: Type[ModelT], variant: str, pretrained: bool = False, **kwargs: Any) -> ModelT:
    """timm's ``build_model_with_cfg``, with the weights fetched by `eca_models.weights`.

    Our loader reads only safetensors, or PyTorch files with ``weights_only=True``, verifies Hub
    downloads against the manifest, and explains failures in one line. The state dict it returns
    goes to timm as an in-memory source, so timm's classifier and input-channel adaptation apply.
    """
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.pop("pretrained_cfg", None),
            pretrained_cfg_overlay=kwargs.pop("pretrained_cfg_overlay", None),
        )
        cfg = _with_folder_classes(cfg)
        state_dict = load_pretrained_weights(cfg)
        source = cfg.file or ("" if cfg.state_dict is not None else cfg.hf_hub_id or variant)  # the caller's, in memory
        cfg = _match_classifier(cfg, state_dict, kwargs.get("num_classes"), source)
        kwargs["pretrained_cfg"] = dataclasses.replace(cfg, state_dict=state_dict, source="")
    kwargs.setdefault("pretrained_strict", True)
    try:
        model = build_model_with_cfg(model_cls, variant, pretrained, **kwargs)
    except WeightsError as e:
        raise WeightsError(f"{source}: {e}" if pretrained and source and source not in str(e) else str(e)) from None
    model.pretrained_cfg.pop("state_dict", None)  # don't keep a second copy of the weights around
    return model


def _match_classifier(cfg: Any, checkpoint: Dict[str, Any], num_classes: Any, source: str) -> Any:
    """The cfg under which timm loads a file's classifier as it should.

    A file whose classifier has as many classes as asked (``num_classes``) keeps it; one asked for another count
    loses it (timm's fine-tuning start); one of another count than the model's, with no count asked, is refused in
    one line that names the file, its count and the flag to pass, instead of a size-mismatch traceback.
    """
    head = cfg.classifier if isinstance(cfg.classifier, str) else None
    weight = unwrap_checkpoint(checkpoint).get(f"{head}.weight") if head else None
    if not isinstance(weight, torch.Tensor) or weight.dim() < 1 or weight.shape[0] == cfg.num_classes:
        return cfg
    found = int(weight.shape[0])
    if num_classes == found:
        return dataclasses.replace(cfg, num_classes=found)
    if num_classes is not None and num_classes != cfg.num_classes:
        return cfg  # another head than the cfg's: timm drops the file's
    raise WeightsError(
        f"{source} holds a classifier of {found} classes, the model has {cfg.num_classes}: pass "
        f"num_classes={found} to use it as it is, or give it to the model it was trained as"
    )


def _with_folder_classes(cfg: Any) -> Any:
    """A weights folder written by convert or finetune says its classes: use its count and names."""
    config_file = Path(cfg.file) / "config.json" if cfg.file and Path(cfg.file).is_dir() else None
    if config_file is None or not config_file.is_file():
        return cfg
    config = json.loads(config_file.read_text(encoding="utf-8"))
    names = config.get("label_names") or config.get("pretrained_cfg", {}).get("label_names")
    return dataclasses.replace(
        cfg, num_classes=config.get("num_classes", cfg.num_classes), label_names=names or cfg.label_names
    )


def checkpoint_filter(checkpoint: Dict[str, Any], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """Unwrap and check a checkpoint for ``model``.

    Accepts the authors' dict (``{'state_dict': ..., 'arch': ..., ...}``, its ``arch`` ignored), a training
    checkpoint's ``{'model': ...}`` or a plain state dict (`unwrap_checkpoint`), and refuses a file whose ECA
    kernels or layout don't fit the model, naming what the file is.

    Args:
        checkpoint: What was loaded from the file.
        model: The model to load into; its ``eca_kernel_groups()`` says which ECA weights share a
            kernel-code digit.
    """
    state_dict = unwrap_checkpoint(checkpoint) if isinstance(checkpoint, dict) else None
    if state_dict is None or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise WeightsError(
            "the file holds no state dict of tensors (expected a model's state_dict or the authors' checkpoint dict)"
        )
    _check_kernels(state_dict, model, model.eca_kernel_groups())
    _check_keys(state_dict, model)
    return state_dict


def _model_name(model: torch.nn.Module) -> str:
    arch = getattr(model, "pretrained_cfg", {}).get("architecture") or type(model).__name__
    return re.sub(r"_k[\d-]+$", "", arch)


def _check_kernels(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module, groups: Dict[str, List[str]]) -> None:
    own = model.state_dict()
    file_sizes: List[int] = []
    mismatch = False
    for names in groups.values():
        for name in names:
            if name not in state_dict:
                return  # no ECA weight here: _check_keys explains what the file is
            file_sizes.append(state_dict[name].shape[-1])
            mismatch |= state_dict[name].shape != own[name].shape
    if not mismatch:
        return
    sizes_by_group = [{state_dict[n].shape[-1] for n in names} for names in groups.values()]
    arch = _model_name(model)
    if all(len(s) == 1 for s in sizes_by_group):
        code = format_kernel_code([s.pop() for s in sizes_by_group])
        raise WeightsError(
            f"this checkpoint is {code}; create {arch}_{code} or pass kernel_sizes='{code}' "
            f"(the model was built with {getattr(model, 'kernel_code', 'other kernel sizes')})"
        )
    raise WeightsError(
        f"this checkpoint's ECA kernel sizes {file_sizes} follow no per-stage code; "
        f"if they follow the channel count, create {arch} with kernel_sizes='adaptive'"
    )


def _check_keys(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Every key of the file in the model and back, but the classifier's: timm drops it from the file where the
    model has another number of classes, or none (``num_classes=0``), and loads the rest strictly."""
    own = model.state_dict()
    head = getattr(model, "pretrained_cfg", {}).get("classifier") or ""
    heads = {f"{head}.weight", f"{head}.bias"}
    # BatchNorm's step counter: files saved before PyTorch 0.4.1 have none (BatchNorm starts it at 0 when loading a
    # state dict without it), and a frozen BatchNorm (detection trunks) keeps none
    counter = "num_batches_tracked"
    missing = [k for k in own if k not in state_dict and k not in heads and not k.endswith(counter)]
    unexpected = [k for k in state_dict if k not in own and k not in heads and not k.endswith(counter)]
    if not missing and not unexpected:
        first = getattr(model, "pretrained_cfg", {}).get("first_conv") or ""
        adapted = {f"{first}.weight"}  # timm adapts the input conv to in_chans after this filter
        shapes = [
            k for k in own if k in state_dict and k not in heads | adapted and state_dict[k].shape != own[k].shape
        ]
        if shapes:
            k = shapes[0]
            raise WeightsError(
                f"this checkpoint does not fit {_model_name(model)}: {len(shapes)} tensors of another shape "
                f"(e.g. {k} {tuple(state_dict[k].shape)}, the model's {tuple(own[k].shape)})"
            )
        return
    hint = f"{len(missing)} missing (e.g. {missing[0]})" if missing else ""
    if unexpected:
        hint += (", " if hint else "") + f"{len(unexpected)} unexpected (e.g. {unexpected[0]})"
    raise WeightsError(f"this checkpoint does not fit {_model_name(model)}: {hint}; {describe_state_dict(state_dict)}")


def describe_state_dict(state_dict: Dict[str, torch.Tensor]) -> str:
    """A guess at what architecture a state dict belongs to, for error messages."""
    has_eca = any(v.dim() == 3 and tuple(v.shape[:2]) == (1, 1) for v in state_dict.values())  # ECA's (1, 1, k) convs
    if any(k.startswith("features.") for k in state_dict):
        if not has_eca:
            return "it has no ECA layers (a plain MobileNetV2 checkpoint?); load it with timm's or torchvision's models"
        return "it looks like a MobileNetV2 checkpoint (create eca_mobilenetv2)"
    if any(k.startswith("backbone.") for k in state_dict) and any(k.startswith("neck.") for k in state_dict):
        return (
            "it is an mmdetection detector: convert it as one (model=maskrcnn_eca_resnet50_fpn, or its kind and depth)"
        )
    blocks = [len({k.split(".")[1] for k in state_dict if k.startswith(f"layer{i}.")}) for i in range(1, 5)]
    if not any(blocks):
        return "it is not an ECA-ResNet or ECA-MobileNetV2 checkpoint"
    if not has_eca:
        return "it has no ECA layers (a plain ResNet checkpoint?); load it with timm's own resnet models"
    bottleneck = any(".conv3." in k for k in state_dict)
    depth = {
        (2, 2, 2, 2, False): 18,
        (3, 4, 6, 3, False): 34,
        (3, 4, 6, 3, True): 50,
        (3, 4, 23, 3, True): 101,
        (3, 8, 36, 3, True): 152,
    }
    found = depth.get((*blocks, bottleneck))
    layout = f"{'bottleneck' if bottleneck else 'basic'} blocks {'-'.join(map(str, blocks))}"
    return f"it looks like eca_resnet{found} ({layout})" if found else f"it has {layout}"
