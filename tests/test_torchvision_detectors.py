"""torchvision's own detectors with ECA added to their trunk: built by `create_detector(..., add_eca=)`, started
from torchvision's weights (read from torch's cache as tensors only), fine-tuned by the command and reloaded from the
run folder to the same outputs."""

import json
import os

import pytest
import torch
from safetensors.torch import load_file
from torchvision.models import get_model, get_model_weights

from eca_models.cli import main
from eca_models.detection import create_detector, load_detector
from eca_models.detection.model_card import render_detector_card
from eca_models.detection.weights import detector_config, write_detector_files
from eca_models.errors import UsageError
from eca_models.layers import EcaLayer
from eca_models.models.eca_resnet import EcaTorchvisionBottleneck
from eca_models.weights import WeightsError

SMALL = ["--min-size", "96", "--max-size", "128", "--workers", "0"]
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def _images():
    g = torch.Generator().manual_seed(3)
    return [torch.rand(3, 96, 128, generator=g), torch.rand(3, 80, 100, generator=g)]


def _tensors(model):
    return sum(v.numel() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked"))


def _same_outputs(a, b, images):
    with torch.no_grad():
        for x, y in zip(a(images), b(images)):
            assert x.keys() == y.keys()
            for key in x:
                assert torch.equal(x[key], y[key]), key


def test_add_eca_puts_the_papers_layers_into_the_trunk():
    model = create_detector("fasterrcnn_resnet50_fpn", add_eca="k3557", categories=CATEGORIES, min_size=96)
    plain = get_model("fasterrcnn_resnet50_fpn", weights=None, weights_backbone=None, num_classes=3)
    blocks = [m for m in model.backbone.body.modules() if isinstance(m, EcaTorchvisionBottleneck)]
    assert len(blocks) == 16
    assert [b.eca.conv.kernel_size[0] for b in blocks] == [3] * 3 + [5] * 4 + [5] * 6 + [7] * 3
    eca_params = sum(p.numel() for m in model.modules() if isinstance(m, EcaLayer) for p in m.parameters())
    assert eca_params == 3 * 3 + 4 * 5 + 6 * 5 + 3 * 7
    assert _tensors(model) == _tensors(plain) + eca_params  # the trunk's norms frozen: buffers, as torchvision's
    config = detector_config(model)
    assert (config["architecture"], config["kernel_code"], config["kernel_sizes"]) == (
        "fasterrcnn_resnet50_fpn",
        "k3557",
        [3, 5, 5, 7],
    )
    assert model.label_map.category_ids == (3, 18) and model.label_map.background
    # trainable_backbone_layers=3 freezes the stem and layer1, but not the ECA layers just put there (they are new)
    frozen = {n for n, p in model.backbone.body.named_parameters() if not p.requires_grad}
    assert {n.split(".")[0] for n in frozen} == {"conv1", "layer1"} and not [n for n in frozen if ".eca." in n]


def test_wrong_pairings_get_one_line():
    with pytest.raises(Exception, match="has ECA already"):
        create_detector("fasterrcnn_eca_resnet50_fpn", add_eca="k3557")
    with pytest.raises(Exception, match="give its ECA kernel sizes as add_eca="):
        create_detector("retinanet_resnet50_fpn", kernel_sizes="k3557")
    with pytest.raises(Exception, match="squeeze-and-excitation"):  # MobileNetV3's blocks hold SE
        create_detector("fasterrcnn_mobilenet_v3_large_fpn", add_eca="k3")
    for stages in (-1, 6, "3"):  # refused before torchvision builds anything, as for the release's detectors
        for name, eca in (("fasterrcnn_resnet50_fpn", "k3557"), ("fasterrcnn_eca_resnet50_fpn", None)):
            with pytest.raises(UsageError, match=r"trainable_backbone_layers=.+: expected a whole number of 0 to 5"):
                create_detector(name, add_eca=eca, trainable_backbone_layers=stages)
    with pytest.raises(UsageError, match="weights_backbone='IMAGENET': .* has torchvision's IMAGENET1K_V1, "):
        create_detector("maskrcnn_resnet50_fpn", add_eca="k3557", weights_backbone="IMAGENET")
    with pytest.raises(WeightsError, match="checkpoint .*missing does not exist"):
        create_detector("maskrcnn_resnet50_fpn", add_eca="k3557", checkpoint="missing")


def _torchvision_cache_file(name: str) -> str:
    url = get_model_weights(name).DEFAULT.url
    folder = torch.hub.get_dir() + "/checkpoints"
    os.makedirs(folder, exist_ok=True)
    return f"{folder}/{url.rsplit('/', 1)[-1]}"


class _Payload:
    def __reduce__(self):
        return (print, ("unpickled code ran",))


@pytest.mark.slow
def test_torchvision_weights_are_read_as_tensors_only(tmp_path):
    """torchvision's COCO weights (a file in torch's cache, as torchvision downloads it) start the detector exactly
    as torchvision's own builder does; a file holding pickled code is refused in one line."""
    name = "retinanet_resnet50_fpn"
    path = _torchvision_cache_file(name)
    torch.save(get_model(name, weights=None, weights_backbone=None).state_dict(), path)
    ours = create_detector(name, pretrained=True, min_size=96, max_size=128)
    theirs = get_model(name, weights="DEFAULT", min_size=96, max_size=128).eval()
    _same_outputs(ours, theirs, _images())  # the same weights, the same frozen norms (eps 0 for these weights)
    assert len(ours.label_map.names) == 90 and ours.label_map.category_ids[17] == 18
    with_eca = create_detector(name, pretrained=True, add_eca="k3557", categories=CATEGORIES)
    conv = "backbone.body.layer4.2.conv3.weight"
    assert torch.equal(with_eca.state_dict()[conv], theirs.state_dict()[conv])
    assert with_eca.head.classification_head.cls_logits.out_channels == 9 * 2  # the dataset's classes
    folder = tmp_path / "folder"
    folder.mkdir()
    write_detector_files(with_eca, folder, render_detector_card(with_eca), {})
    assert json.loads((folder / "config.json").read_text())["norm_eps"] == 0.0
    _same_outputs(load_detector(folder), with_eca, _images())  # the folder keeps the weights' epsilon
    three = load_detector(folder, num_classes=3)  # the folder's weights, a new head (was: num_classes ignored)
    assert three.head.classification_head.cls_logits.out_channels == 9 * 3 and len(three.label_map.names) == 3
    assert torch.equal(three.state_dict()[conv], with_eca.state_dict()[conv])
    torch.save({"x": _Payload()}, path)
    with pytest.raises(WeightsError, match="hold more than tensors") as e:
        create_detector(name, pretrained=True)
    assert "\n" not in str(e.value)


def test_finetune_with_add_eca_reloads_to_the_same_outputs(coco_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["finetune", "--model", "retinanet_resnet50_fpn", "--add-eca", "k3557", "--no-pretrained",
            "--data", str(coco_root), "--output", str(run), "--epochs", "1", "-b", "2", "--warmup-iters", "1", *SMALL]  # fmt: skip
    assert main(args) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["architecture"], config["kernel_code"]) == ("retinanet_resnet50_fpn", "k3557")
    reloaded = load_detector(run)
    assert reloaded.backbone.body.kernel_code == "k3557"
    trained = create_detector(
        "retinanet_resnet50_fpn", add_eca="k3557", categories=CATEGORIES, min_size=96, max_size=128
    )
    trained.load_state_dict(load_file(run / "model.safetensors"))
    state = torch.load(run / "last.pth", weights_only=True)["model"]
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items())  # the one epoch is the best
    _same_outputs(reloaded, trained, _images())
    capsys.readouterr()
    image = sorted((coco_root / "val2017").glob("*.jpg"))[0]
    assert main(["predict", str(image), "--model", str(run), *SMALL[:4], "--json", "--score-thr", "0"]) == 0
    assert {d["label"] for r in json.loads(capsys.readouterr().out) for d in r["detections"]} <= {"car", "dog"}
    with pytest.raises(WeightsError, match="trained with ECA kernel code k3557, not k5"):
        create_detector("retinanet_resnet50_fpn", checkpoint=run, add_eca="k5")


def test_unreachable_torchvision_weights_get_one_line(coco_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # torch.hub's download, refused at once
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    args = ["finetune", "--model", "fasterrcnn_resnet50_fpn", "--add-eca", "k3557", "--data", str(coco_root),
            "--output", str(tmp_path / "r"), *SMALL]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no COCO weights for fasterrcnn_resnet50_fpn here" in err[0], err
    assert "could not be downloaded" in err[0] and "--no-pretrained" in err[0]
    assert main([*args, "--no-pretrained", "--weights-backbone", "DEFAULT"]) == 2  # the trunk's ImageNet weights
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "could not be downloaded" in err[0] and "leave --weights-backbone out" in err[0], err
    assert not (tmp_path / "r").exists()
