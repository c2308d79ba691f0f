import importlib.util
import shutil

import pytest
import torch
from conftest import ROOT, run_python

NAMES = ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenetv2"]
NAMES += ["eca_resnet18_k3577", "eca_resnet34_k3357", "eca_resnet50_k3557", "eca_resnet101_k3357"]
NAMES += ["eca_resnet152_k3357", "eca_mobilenetv2_k13"]
DETECTORS = [f"{d}_eca_resnet{n}_fpn" for d in ("fasterrcnn", "maskrcnn", "retinanet") for n in (50, 101)]


def _hubconf():
    spec = importlib.util.spec_from_file_location("hubconf", ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_entrypoints_as_torch_hub_list_and_help_see_them():
    hub = _hubconf()
    assert hub.dependencies == ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]
    listed = sorted(f for f in dir(hub) if callable(getattr(hub, f)) and not f.startswith("_"))  # as torch.hub.list
    assert listed == sorted(NAMES + DETECTORS)
    for name in NAMES + DETECTORS:
        doc = getattr(hub, name).__doc__
        assert doc and "ECA-" in doc and "pretrained" in doc


@pytest.mark.parametrize("name", ["maskrcnn_eca_resnet50_fpn", "retinanet_eca_resnet101_fpn"])
def test_torch_hub_load_detector(name):
    from torchvision.models.detection import MaskRCNN, RetinaNet

    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", categories=[{"id": 7, "name": "kite"}], trust_repo=True)
    assert isinstance(model, MaskRCNN if name.startswith("mask") else RetinaNet)
    assert model.label_map.names == ("kite",) and model.label_map.category_id(model.label_map.label(7)) == 7


@pytest.mark.parametrize("name", NAMES)
def test_torch_hub_load_local(name):
    with torch.device("meta"):
        model = torch.hub.load(str(ROOT), name, source="local", num_classes=3, trust_repo=True)
    assert model.num_classes == 3 and model.kernel_code.startswith("k")


def test_torch_hub_load_from_a_checkout_that_is_not_installed(tmp_path):
    copy = tmp_path / "eca-models"
    copy.mkdir()
    for item in ("eca_models", "weights", "hubconf.py"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, copy / item)
    code = (
        f"import torch; m = torch.hub.load({str(copy)!r}, 'eca_mobilenetv2', source='local', trust_repo=True);"
        "import eca_models.weights as w; print(type(m).__name__, w.__file__)"
    )
    result = run_python(code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "EcaMobileNetV2" in result.stdout and str(copy / "eca_models" / "weights") in result.stdout
    )  # this checkout's
