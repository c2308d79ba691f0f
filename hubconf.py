"""torch.hub entrypoints for eca-models.

    model = torch.hub.load('ORG/eca-models', 'eca_resnet50', pretrained=True)  # from GitHub
    model = torch.hub.load('path/to/eca-models', 'eca_resnet50_k3557', source='local', num_classes=10)

Every entrypoint takes the same ``pretrained=`` and keyword arguments as ``timm.create_model``.
"""

# what the entrypoints import, pretrained=True included (gdown fetches the authors' files until the Hub has them)
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors", "tqdm", "gdown"]

import os as _os  # noqa: E402
import sys as _sys  # noqa: E402

_ROOT = _os.path.dirname(_os.path.abspath(__file__))

if "eca_models" not in _sys.modules:  # use this checkout's code throughout, installed or not
    _sys.path.insert(0, _ROOT)

import timm as _timm  # noqa: E402

import eca_models as _eca_models  # noqa: E402,F401  (registers the models with timm)


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = (
        _timm.models.model_entrypoint(name).__doc__.strip() + "\n\n"
        "Args:\n"
        "    pretrained: Load the ImageNet-1k weights (from the Hugging Face Hub, or a local file with\n"
        "        pretrained_cfg_overlay=dict(file=...)).\n"
        "    **kwargs: Any timm.create_model argument: num_classes, in_chans, kernel_sizes, drop_rate,\n"
        "        drop_path_rate, features_only, out_indices, ...\n"
    )
    return create


eca_resnet18 = _entrypoint("eca_resnet18")
eca_resnet34 = _entrypoint("eca_resnet34")
eca_resnet50 = _entrypoint("eca_resnet50")
eca_resnet101 = _entrypoint("eca_resnet101")
eca_resnet152 = _entrypoint("eca_resnet152")
eca_mobilenetv2 = _entrypoint("eca_mobilenetv2")
eca_resnet18_k3577 = _entrypoint("eca_resnet18_k3577")
eca_resnet34_k3357 = _entrypoint("eca_resnet34_k3357")
eca_resnet50_k3557 = _entrypoint("eca_resnet50_k3557")
eca_resnet101_k3357 = _entrypoint("eca_resnet101_k3357")
eca_resnet152_k3357 = _entrypoint("eca_resnet152_k3357")
eca_mobilenetv2_k13 = _entrypoint("eca_mobilenetv2_k13")


def _detector_entrypoint(name: str):
    from eca_models import detection as _detection

    def create(pretrained: bool = False, **kwargs):
        return _detection.create_detector(name, pretrained=pretrained, **kwargs)

    create.__name__ = create.__qualname__ = name
    create.__doc__ = (
        _detection.get_builder(name).__doc__.strip().splitlines()[0] + "\n\n"
        "Args:\n"
        "    pretrained: Load the release's COCO weights (from the Hugging Face Hub).\n"
        "    **kwargs: Any create_detector argument: checkpoint, kernel_sizes, num_classes, categories,\n"
        "        weights_backbone, trainable_backbone_layers, and torchvision's (min_size, box_score_thresh, ...).\n"
    )
    return create


fasterrcnn_eca_resnet50_fpn = _detector_entrypoint("fasterrcnn_eca_resnet50_fpn")
fasterrcnn_eca_resnet101_fpn = _detector_entrypoint("fasterrcnn_eca_resnet101_fpn")
maskrcnn_eca_resnet50_fpn = _detector_entrypoint("maskrcnn_eca_resnet50_fpn")
maskrcnn_eca_resnet101_fpn = _detector_entrypoint("maskrcnn_eca_resnet101_fpn")
retinanet_eca_resnet50_fpn = _detector_entrypoint("retinanet_eca_resnet50_fpn")
retinanet_eca_resnet101_fpn = _detector_entrypoint("retinanet_eca_resnet101_fpn")
