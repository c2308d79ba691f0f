"""Loading the authors' files: the format as it is, and one clear line for every file that doesn't fit."""

import pytest
import timm
import torch
import torchvision
from detection_helpers import write_mmdet_checkpoint
from helpers import Payload, one_line_error, save_authors_checkpoint, write_image

import eca_models
from eca_models import WeightsError
from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint
from eca_models.insertion import state_dict_in_order


def _load(name, path, **kwargs):
    return timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)


@pytest.fixture(scope="module")
def r18_file(tmp_path_factory):
    model = timm.create_model("eca_resnet18_k3577")
    return save_authors_checkpoint(model.state_dict(), tmp_path_factory.mktemp("a") / "eca_resnet18_k3577.pth.tar")


def test_wrong_kernel_code_names_the_files_code(r18_file):
    with pytest.raises(WeightsError) as e:
        _load("eca_resnet18", r18_file, kernel_sizes="k3357")
    msg = str(e.value)
    assert "this checkpoint is k3577; create eca_resnet18_k3577" in msg and "\n" not in msg


def test_wrong_kernel_code_for_mobilenetv2(tmp_path):
    path = save_authors_checkpoint(timm.create_model("eca_mobilenetv2").state_dict(), tmp_path / "m.pth.tar")
    with pytest.raises(WeightsError, match="this checkpoint is k13; create eca_mobilenetv2_k13"):
        _load("eca_mobilenetv2", path, kernel_sizes="k33")


def test_adaptive_file_is_recognised(tmp_path):
    path = save_authors_checkpoint(
        timm.create_model("eca_resnet50", kernel_sizes="adaptive").state_dict(), tmp_path / "a.pth"
    )
    with pytest.raises(WeightsError, match="this checkpoint is k5557"):
        _load("eca_resnet50", path)
    assert _load("eca_resnet50", path, kernel_sizes="adaptive").kernel_code == "adaptive"


def test_file_of_another_architecture_says_what_it_is(r18_file, tmp_path):
    with pytest.raises(WeightsError, match=r"does not fit eca_resnet34: .*looks like eca_resnet18"):
        _load("eca_resnet34", r18_file)
    with pytest.raises(WeightsError, match=r"does not fit eca_mobilenetv2: .*looks like eca_resnet18"):
        _load("eca_mobilenetv2", r18_file)
    detector, _ = write_mmdet_checkpoint(tmp_path / "mask_rcnn.pth", "maskrcnn")
    with pytest.raises(WeightsError, match=r"^mask_rcnn.pth: .* it is an mmdetection detector: convert it as one"):
        convert_checkpoint(detector, "eca_resnet50_k3557", tmp_path / "out", log=lambda _: None)


def test_plain_state_dict_and_num_classes_adaptation(r18_file, tmp_path):
    sd = torch.load(r18_file, weights_only=True)["state_dict"]
    plain = tmp_path / "plain.pth"
    torch.save({k.removeprefix("module."): v for k, v in sd.items()}, plain)
    model = _load("eca_resnet18_k3577", plain, num_classes=5)
    assert model.fc.out_features == 5
    torch.testing.assert_close(model.layer2[0].eca.conv.weight, sd["module.layer2.0.eca.conv.weight"])


def test_a_file_without_batchnorm_step_counters_loads(tmp_path):
    """PyTorch before 0.4.1 saved BatchNorm without ``num_batches_tracked``; BatchNorm fills it in as it loads."""
    torch.manual_seed(0)
    for name in ("eca_resnet18_k3577", "eca_mobilenetv2_k13"):
        source = timm.create_model(name).eval()
        state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
        path = save_authors_checkpoint(state, tmp_path / f"{name}.pth.tar")
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(_load(name, path).eval()(x), source(x), rtol=0, atol=0)
        report = convert_checkpoint(path, name, tmp_path / name, check_size=64, log=lambda _: None)
        assert report.max_abs_diff == 0
    timm_layout = eca_models.add_eca(timm.create_model("mobilenetv2_100"), "k13")  # the documented key map
    timm_layout.load_state_dict(state_dict_in_order(state, timm_layout))
    with pytest.raises(WeightsError, match=r"does not fit eca_resnet34: .*looks like eca_resnet18"):  # still told
        _load("eca_resnet34", tmp_path / "eca_resnet18_k3577.pth.tar")


def test_in_chans_adaptation(r18_file):
    model = _load("eca_resnet18_k3577", r18_file, in_chans=1)
    assert model.conv1.weight.shape[1] == 1


def test_checkpoints_of_timm_training_and_of_compiled_models_load(tmp_path):
    """timm's train.py (its CheckpointSaver) keeps its arguments, an argparse.Namespace, in the file: timm reads it
    with weights_only=True and that class allowed, and so do we (it was refused as pickled code). torchvision's
    references keep the weights under "model", which timm reads too (it was taken as the state dict itself)."""
    import argparse

    from timm.utils import CheckpointSaver

    model = timm.create_model("eca_resnet18", num_classes=10)
    args = argparse.Namespace(model="eca_resnet18", num_classes=10, lr=0.1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    CheckpointSaver(
        model, optimizer, args=args, checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path)
    ).save_checkpoint(0, 1.0)
    loaded = _load("eca_resnet18", tmp_path / "model_best.pth.tar", num_classes=10)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    # torchvision's training references keep the weights under "model", beside the optimizer, scheduler and args
    reference = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3, "args": args}
    torch.save(reference, tmp_path / "checkpoint.pth")
    loaded = _load("eca_resnet18", tmp_path / "checkpoint.pth", num_classes=10)
    torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    # a torch.compile'd model's own state dict, as saved from a DDP run or not: its keys begin "_orig_mod."
    for prefix in ("_orig_mod.", "module._orig_mod."):
        torch.save({prefix + k: v for k, v in model.state_dict().items()}, tmp_path / "compiled.pth")
        loaded = _load("eca_resnet18", tmp_path / "compiled.pth", num_classes=10)
        torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)


def test_file_needing_pickled_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "extra": Payload()}, path)
    with pytest.raises(
        WeightsError, match=r"holds pickled code \((__builtin__|builtins)\.print\) and was not loaded"
    ) as e:
        _load("eca_resnet18", path)
    assert "corrupt" not in str(e.value)
    out = capsys.readouterr()
    assert "pickled code ran" not in out.out and "Warning" not in out.err


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="weights file not found"):
        _load("eca_resnet18", tmp_path / "nope.pth.tar")
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"\x80\x02this is not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable PyTorch file"):
        _load("eca_resnet18", junk)
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(WeightsError, match="folder without model.safetensors"):
        _load("eca_resnet18", folder)


def test_a_plain_resnet_or_mobilenetv2_checkpoint_is_said_to_have_no_eca_layers(tmp_path):
    plain_models = {"eca_resnet18": timm.create_model("resnet18"), "eca_mobilenetv2": torchvision.models.mobilenet_v2()}
    for ours, plain in plain_models.items():
        path = tmp_path / f"{ours}-plain.pth"
        torch.save(plain.state_dict(), path)
        with pytest.raises(WeightsError, match=r"it has no ECA layers \(a plain (ResNet|MobileNetV2) checkpoint\?\)"):
            _load(ours, path)


@pytest.mark.parametrize(
    "content, said",
    [
        (b"", "is empty (0 bytes)"),
        (bytes(range(256)) * 8, "neither a PyTorch nor a safetensors file"),
        (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>", "an HTML page"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(content, said, tmp_path, capsys):
    src = tmp_path / "eca_resnet18_k3577.pth.tar"
    src.write_bytes(content)
    assert main(["convert", str(src), "--model", "eca_resnet18_k3577", "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys, "convert")
    assert said in err and "safetensors file (truncated" not in err and ".safetensors file" in err
    assert not (tmp_path / "o").exists()


def test_a_broken_config_json_is_named_with_its_line(val, tmp_path, capsys):
    folder = tmp_path / "conv"
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", folder, log=lambda _: None, check_size=64)
    (folder / "config.json").write_text('{\n  "architecture": "eca_resnet18",\n  "num_classes": 1000,,\n}\n')
    assert main(["predict", str(write_image(tmp_path / "a.png", 1)), "--model", str(folder)]) == 2
    err = one_line_error(capsys, "predict")
    assert str(folder / "config.json") in err and "line 3" in err
