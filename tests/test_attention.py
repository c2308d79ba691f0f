import json
import time

import numpy as np
import pytest
import timm
import torch
from helpers import (
    RefEca,
    one_line_error,
    randomize,
    save_authors_checkpoint,
    write_image,
)

import eca_models
from eca_models.attention import attention_layers
from eca_models.cli import main
from eca_models.data.imagenet import imagenet_wnids
from eca_models.errors import UsageError
from eca_models.models.eca_resnet import EcaBasicBlock, EcaBottleneck


def _last_bn_output(block, x):
    """A block's output before ECA, recomputed from its input with its own layers."""
    if isinstance(block, EcaBottleneck):
        out = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(block.act1(block.bn1(block.conv1(x))))))))
        return block.bn3(block.conv3(out))
    if isinstance(block, EcaBasicBlock):
        return block.bn2(block.conv2(block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))))
    return block.conv[:-1](x)  # MobileNetV2: the conv sequence up to its ECA layer


@pytest.mark.parametrize("name", ["eca_resnet50", "eca_resnet18", "eca_mobilenetv2"])
def test_captured_weights_equal_a_recomputation_from_the_block_input(name):
    model = randomize(timm.create_model(name), seed=2).eval()
    x = torch.randn(2, 3, 64, 64)
    layers = attention_layers(model)
    inputs = {}
    blocks = {n: model.get_submodule(n) for n in layers}
    hooks = [b.register_forward_pre_hook(lambda m, a, n=n: inputs.__setitem__(n, a[0])) for n, b in blocks.items()]
    with torch.no_grad():
        expected_logits = model(x)
    for h in hooks:
        h.remove()
    weights = eca_models.attention_weights(model, x)
    assert list(weights) == list(layers)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected_logits)  # the capture changed nothing
    for block, layer in layers.items():
        ref = RefEca(layer.kernel_size)
        ref.conv.weight = layer.conv.weight
        with torch.no_grad():
            pooled = _last_bn_output(blocks[block], inputs[block]).mean((2, 3))
            recomputed = torch.sigmoid(ref.conv(pooled.unsqueeze(1))).squeeze(1)
        assert weights[block].shape == (2, layer.channels)
        torch.testing.assert_close(weights[block], recomputed, atol=1e-5, rtol=1e-5)


def test_block_names_and_se_models():
    assert list(attention_layers(timm.create_model("eca_resnet18")))[:3] == ["layer1.0", "layer1.1", "layer2.0"]
    assert "features.7" in attention_layers(timm.create_model("eca_mobilenetv2"))
    se = timm.create_model("seresnet18")
    weights = eca_models.attention_weights(se, torch.randn(1, 3, 32, 32))
    assert weights["layer4.1"].shape == (1, 512) and float(weights["layer4.1"].min()) > 0


def test_attention_command_draws_figure_6(tmp_path, capsys):
    wnids = imagenet_wnids()
    data = tmp_path / "val"
    for i, cls in enumerate((1, 2, 3)):
        for j in range(2):
            write_image(data / wnids[cls] / f"{j}.JPEG", seed=10 * i + j)
    ckpt = save_authors_checkpoint(timm.create_model("eca_resnet18").state_dict(), tmp_path / "eca.pth.tar")
    se_ckpt = tmp_path / "se.pth"
    torch.save(timm.create_model("seresnet18").state_dict(), se_ckpt)
    out = tmp_path / "fig" / "attention.png"
    args = ["attention", "--model", "eca_resnet18", "--checkpoint", str(ckpt), "--data", str(data), "--img-size", "64"]
    args += [
        "--classes",
        wnids[1],
        "2",
        "3",
        "--out",
        str(out),
        "--compare",
        "seresnet18",
        "--compare-checkpoint",
        str(se_ckpt),
    ]
    assert main(args) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(out.with_suffix(".npz"))
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["blocks"] == ["layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert meta["rows"][0].startswith(wnids[1] + " (goldfish)") and meta["rows"][-1] == "all images"
    assert arrays["ECA/layer3.1"].shape == (4, 256) and arrays["SE/layer3.1"].shape == (4, 256)
    for key in ("ECA/layer4.1", "SE/layer2.1"):  # two images per class: "all images" is the mean of the class rows
        np.testing.assert_allclose(arrays[key][3], arrays[key][:3].mean(0), atol=1e-6)
        assert np.all((arrays[key] > 0) & (arrays[key] < 1))

    assert (
        main(
            [
                "attention",
                "--model",
                "eca_resnet18",
                "--checkpoint",
                str(ckpt),
                "--data",
                str(data),
                "--blocks",
                "layer9.9",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not an ECA block" in capsys.readouterr().err


def test_attention_on_any_class_folders_labels_the_figure_with_their_names(tmp_path):
    """An ImageNet model on folders that are not WordNet ids (a user's own classes): averaged per folder."""
    data = tmp_path / "mine"
    for i, cls in enumerate(("cats", "dogs", "owls")):
        for j in range(2):
            write_image(data / cls / f"{j}.png", seed=10 * i + j)
    ckpt = save_authors_checkpoint(
        randomize(timm.create_model("eca_resnet18"), seed=1).state_dict(), tmp_path / "e.pth.tar"
    )
    out = tmp_path / "attention.png"
    figure = eca_models.attention_figure(
        "eca_resnet18", data, out, checkpoint=str(ckpt), img_size=64, classes=["owls", "cats"], blocks=["layer4.1"]
    )
    assert figure.figure == out and figure.blocks == ["layer4.1"]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["rows"] == ["owls", "cats", "all images"]
    arrays = np.load(out.with_suffix(".npz"))
    assert arrays["ECA/layer4.1"].shape == (3, 512)
    assert not np.allclose(arrays["ECA/layer4.1"][2], arrays["ECA/layer4.1"][:2].mean(0))  # dogs count in "all"
    for unknown in ("bats", "3"):
        with pytest.raises(UsageError, match=rf"^class '{unknown}' is not one of the model's 3 classes \(cats, dogs, "):
            eca_models.attention_figure("eca_resnet18", data, out, checkpoint=str(ckpt), classes=[unknown])


def test_a_figure_name_that_is_not_png_is_refused_before_the_work(tmp_path, capsys):
    args = ["attention", "--model", "eca_resnet18", "--data", str(tmp_path), "--out", str(tmp_path / "a.txt")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"eca-models attention: error: --out {tmp_path / 'a.txt'}: the figure is a PNG; give a file name ending in .png"
    ]
    assert not (tmp_path / "a.txt").exists()


def test_attention_says_in_one_line_what_it_cannot_do(val, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    out = str(tmp_path / "a.png")
    base = ["attention", "--data", str(val["folder"]), "--out", out, "--img-size", "64"]
    ours = ["--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"])]
    start = time.perf_counter()
    assert main([*base, *ours, "--compare", "seresnet18"]) == 2
    assert "no pretrained weights" in one_line_error(capsys, "attention")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main([*base, *ours, "--compare", "seresnet50"]) == 2
    assert "HF_HUB_OFFLINE" in one_line_error(capsys, "attention")
    assert time.perf_counter() - start < 30  # at once, not after the Hub client's retries
    plain = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), plain)
    assert main([*base, "--model", "resnet18", "--checkpoint", str(plain)]) == 2
    assert "no ECA or SE blocks" in one_line_error(capsys, "attention")


def test_attention_reports_unreadable_images(val, tmp_path, capsys):
    data = tmp_path / "val"
    wnid = imagenet_wnids()[500]
    for i in range(2):
        write_image(data / wnid / f"{i}.png", seed=i)
    (data / wnid / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["attention", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--data", str(data)]
    assert main([*argv, "--img-size", "64", "--blocks", "layer4.1", "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert f"skipping unreadable image {data / wnid / 'broken.png'}" in err and "1 of 3 images" in err
