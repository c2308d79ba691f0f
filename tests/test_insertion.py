"""add_eca: timm's and torchvision's plain models with ECA where the paper puts it are the released layouts
(the authors' files load into them and give the released models' logits), deploy as the package's models do,
and anything else is refused in one line."""

import io
import json

import pytest
import timm
import torch
import torchvision
from helpers import save_authors_checkpoint, write_image
from timm.models import EfficientNet, FeatureListNet
from torchvision.models.feature_extraction import create_feature_extractor

import eca_models
from eca_models.conversion.imagenet import remap_checkpoint
from eca_models.errors import UsageError
from eca_models.insertion import state_dict_in_order
from eca_models.layers import EcaLayer
from eca_models.weights.loading import read_weights_file

# the released classifiers and the plain models of each library they are built from
RELEASED = {
    "eca_resnet18_k3577": ("resnet18", "resnet18", 8),
    "eca_resnet34_k3357": ("resnet34", "resnet34", 16),
    "eca_resnet50_k3557": ("resnet50", "resnet50", 16),
    "eca_resnet101_k3357": ("resnet101", "resnet101", 33),
    "eca_resnet152_k3357": ("resnet152", "resnet152", 50),
    "eca_mobilenetv2_k13": ("mobilenetv2_100", "mobilenet_v2", 17),
}


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "released",
    [pytest.param(n, marks=pytest.mark.slow) if "101" in n or "152" in n else n for n in RELEASED],  # the big two
)
def test_plain_models_with_add_eca_are_the_released_layouts(released, tmp_path, x64):
    """The authors' file (written here in their format) loads into timm's and torchvision's plain model after
    add_eca with the release's kernel code, and both give the released model's logits."""
    torch.manual_seed(3)
    source = timm.create_model(released)
    path = save_authors_checkpoint(source.state_dict(), tmp_path / f"{released}.pth.tar")
    reference, _ = remap_checkpoint(read_weights_file(path), released, path.name)
    code = released.split("_")[-1]
    timm_name, torchvision_name, layers = RELEASED[released]
    for plain in (timm.create_model(timm_name), getattr(torchvision.models, torchvision_name)()):
        model = eca_models.add_eca(plain, code).eval()
        base = timm_name if hasattr(plain, "pretrained_cfg") else None  # torchvision models name no architecture
        assert model.eca_insertion == {"where": "paper", "kernel_code": code, "layers": layers, "base": base}
        assert _params(model) == _params(reference)
        state = reference.state_dict()
        if isinstance(plain, EfficientNet):  # timm's MobileNetV2 names its layers otherwise: the documented key map
            state = state_dict_in_order(state, model)
        model.load_state_dict(state, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(model(x64), reference(x64), rtol=0, atol=0)


def test_another_kernel_code_is_not_the_release(tmp_path):
    model = eca_models.add_eca(torchvision.models.resnet18(), "k3333")
    with pytest.raises(RuntimeError, match="size mismatch"):
        model.load_state_dict(timm.create_model("eca_resnet18_k3577").state_dict())


def test_adaptive_sizes_follow_the_channels_unclamped():
    model = eca_models.add_eca(timm.create_model("resnet18"))
    sizes = [m.kernel_size for m in model.modules() if isinstance(m, EcaLayer)]
    assert model.eca_insertion["kernel_code"] == "adaptive"
    assert sizes == [3, 3, 5, 5, 5, 5, 5, 5]  # 64, 128: k 3 and 5 (paper eq. 12, gamma 2, b 1); 256, 512: 5
    assert [
        m.kernel_size
        for m in eca_models.add_eca(torchvision.models.mobilenet_v2()).modules()
        if isinstance(m, EcaLayer)
    ][0] == 3


def test_squeeze_and_excitation_is_replaced_where_asked_and_refused_otherwise(x64):
    for plain, count in (
        (timm.create_model("seresnet50"), 16),
        (timm.create_model("efficientnet_b0"), 16),
        (torchvision.models.mobilenet_v3_small(), 9),
        (torchvision.models.regnet_y_400mf(), 16),
    ):
        with pytest.raises(
            UsageError, match="squeeze-and-excitation layers .*: pass where='replace-se' to put ECA in their place$"
        ):
            eca_models.add_eca(plain)
        model = eca_models.add_eca(plain, where="replace-se").eval()
        assert model.eca_insertion["layers"] == count
        assert not any(type(m).__name__ in ("SEModule", "SqueezeExcite", "SqueezeExcitation") for m in model.modules())
        with torch.no_grad():
            assert torch.isfinite(model(x64)).all()


def test_regnet_and_byobnet_blocks_take_eca_after_their_last_norm():
    """timm's and torchvision's RegNet blocks and timm's ByobNet blocks: one layer per block, after the branch's last
    normalisation (before the addition), a kernel code's size by stage (the stages' widths)."""
    timm_regnet = eca_models.add_eca(timm.create_model("regnetx_002"), "k3557")  # depths 1, 1, 4, 7
    sizes = [b.conv3.bn.act.kernel_size for b in timm_regnet.modules() if type(b).__name__ == "Bottleneck"]
    assert sizes == [3, 5] + [5] * 4 + [7] * 7 and timm_regnet.eca_insertion["layers"] == 13
    tv_regnet = eca_models.add_eca(torchvision.models.regnet_x_400mf())  # depths 1, 2, 7, 12
    ends = [b.f[-1] for b in tv_regnet.modules() if type(b).__name__ == "ResBottleneckBlock"]
    assert len(ends) == 22 and all(isinstance(e, EcaLayer) for e in ends)
    assert [e.kernel_size for e in ends[:1] + ends[-1:]] == [3, 5]  # 32 and 400 channels, paper eq. 12
    byob = eca_models.add_eca(timm.create_model("gernet_s"))
    assert all(isinstance(b.attn_last, EcaLayer) for b in byob.modules() if hasattr(b, "attn_last"))
    with pytest.raises(UsageError, match="expected 'k' and 4 odd digits"):  # gernet_s's blocks have four widths
        eca_models.add_eca(timm.create_model("gernet_s"), "k355")
    with pytest.raises(UsageError, match="where='replace-se'"):  # RegNetY holds SE already
        eca_models.add_eca(torchvision.models.regnet_y_400mf())


def test_a_network_it_does_not_know_is_one_line():
    for model in (
        torchvision.models.vgg11(),
        torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU()),
    ):
        for kernel_sizes in ("adaptive", "k3557"):  # no block: said so, whatever the kernel code
            with pytest.raises(UsageError) as raised:
                eca_models.add_eca(model, kernel_sizes)
            message = str(raised.value)
            assert "\n" not in message and "found no block it knows" in message and "MobileNetV2" in message
    resnet = torchvision.models.resnet18()
    outside = torch.nn.ModuleDict({"layer1": resnet.layer1, "head": torchvision.models.resnet.BasicBlock(64, 64)})
    with pytest.raises(UsageError, match="block head is not in a stage layer1 ... layer4"):
        eca_models.add_eca(outside, "k3557")
    assert not [m for m in outside.modules() if hasattr(m, "eca")]  # refused before any block changed
    with pytest.raises(UsageError, match="^where='after-bn'"):
        eca_models.add_eca(torchvision.models.resnet18(), where="after-bn")
    with pytest.raises(UsageError, match="invalid kernel code"):
        eca_models.add_eca(torchvision.models.resnet18(), "k35")


def test_a_network_holding_eca_or_other_attention_is_refused_unchanged():
    """ECA is added once: timm's ECA-ResNets, a second call, the package's own models are refused (a second layer, or
    one in place of timm's trained EcaModule, is not the paper's network); timm ResNet blocks holding another
    attention layer keep it (the ECA block would drop it), as do timm ByobNet blocks (ECA would sit beside it). Nothing changes before the refusal."""
    twice = eca_models.add_eca(torchvision.models.mobilenet_v2())
    built = {
        "ecaresnet26t": timm.create_model("ecaresnet26t"),
        "eca_resnet33ts": timm.create_model("eca_resnet33ts"),  # timm's ByobNet, ECA in its attn slot
        "eca_resnet18": timm.create_model("eca_resnet18"),
        "twice": twice,
        "cbam": timm.create_model("resnet18", block_args=dict(attn_layer="cbam")),
        "gcresnet33ts": timm.create_model("gcresnet33ts"),  # timm's ByobNet, global context in its attn slot
    }
    before = {name: sorted(type(m).__name__ for m in model.modules()) for name, model in built.items()}
    for name, model in built.items():
        for where in ("paper", "replace-se") if name not in ("cbam", "gcresnet33ts") else ("paper",):
            with pytest.raises(UsageError) as raised:
                eca_models.add_eca(model, where=where)
            message = str(raised.value)
            assert "\n" not in message, message
            if name == "cbam":
                assert message.startswith("8 blocks hold CbamModule attention (layer1.0.se, ...)"), message
            elif name == "gcresnet33ts":
                assert message.startswith("10 blocks hold GlobalContext attention (stages.0.0.attn, ...)"), message
            else:
                assert "ECA layers" in message and "already holds" in message, message
        assert sorted(type(m).__name__ for m in model.modules()) == before[name], name
    assert str(raised.value).endswith("build the model without attn_layer, or place eca_models.layers.EcaLayer by hand")
    assert sum(isinstance(m, EcaLayer) for m in twice.modules()) == 17


@pytest.mark.parametrize(
    "build",
    [
        lambda: eca_models.add_eca(torchvision.models.resnet18(), "k3577"),
        lambda: eca_models.add_eca(timm.create_model("mobilenetv2_100"), "k13"),
        lambda: eca_models.add_eca(torchvision.models.mobilenet_v3_small(), where="replace-se"),
        lambda: eca_models.add_eca(timm.create_model("regnetx_002"), "k3557"),
        pytest.param(lambda: eca_models.add_eca(torchvision.models.regnet_x_400mf()), marks=pytest.mark.slow),
        pytest.param(lambda: eca_models.add_eca(timm.create_model("gernet_s")), marks=pytest.mark.slow),
    ],
    ids=["residual", "inverted-residual", "replace-se", "timm-regnet", "torchvision-regnet", "timm-byobnet"],
)
def test_models_with_add_eca_deploy_as_the_packages_own(build, x64):
    """torch.fx, timm's and torchvision's feature extractors, torch.export, TorchScript and ONNX Runtime give eager's
    values."""
    import onnxruntime

    torch.manual_seed(5)
    model = build().eval()
    with torch.no_grad():
        expected = model(x64)
        close = dict(rtol=1e-4, atol=1e-4)
        if hasattr(model, "feature_info"):  # timm's: its feature wrapper over the model as built, at its last level
            features = FeatureListNet(model, tuple(range(len(model.feature_info))), flatten_sequential=True)
            deepest = create_feature_extractor(model, {model.feature_info[-1]["module"]: "f"})(x64)["f"]
            torch.testing.assert_close(features(x64)[-1], deepest, **close)
        torch.testing.assert_close(torch.fx.symbolic_trace(model)(x64), expected, **close)
        last = [n for n, _ in model.named_children()][-1]
        torch.testing.assert_close(create_feature_extractor(model, {last: "out"})(x64)["out"], expected, **close)
        torch.testing.assert_close(torch.export.export(model, (x64,)).module()(x64), expected, **close)
        torch.testing.assert_close(torch.jit.script(model)(x64), expected, **close)
        buffer = io.BytesIO()
        torch.onnx.export(model, (x64,), buffer, dynamo=False, input_names=["x"])
        session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"x": x64.numpy()})[0])
        torch.testing.assert_close(got, expected, **close)


@pytest.mark.slow
def test_models_with_add_eca_compile(x64):
    model = eca_models.add_eca(torchvision.models.resnet18(), "k3577").eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(x64), model(x64), rtol=1e-4, atol=1e-4)


def test_a_timm_model_fine_tuned_with_add_eca_reloads_everywhere_to_the_same_outputs(tmp_path, monkeypatch, capsys):
    """The run folder names the with_eca architecture; eca_models.load, timm's local-dir and a rebuild by hand from
    its weights file agree exactly; predict and export take the folder."""
    from safetensors.torch import load_file

    from eca_models.cli import main

    data = tmp_path / "data"
    for split, count in (("train", 4), ("val", 2)):
        for c, name in enumerate("ab"):
            for i in range(count):
                write_image(data / split / name / f"{i}.png", seed=10 * c + i + (5 if split == "val" else 0), size=40)
    run = tmp_path / "run"
    argv = ["finetune", "--model", "resnet18", "--add-eca", "k3577", "--data", str(data), "--output", str(run)]
    assert (
        main([*argv, "--no-pretrained", "--epochs", "1", "--img-size", "32", "--batch-size", "4", "--workers", "0"])
        == 0
    )
    config = json.loads((run / "config.json").read_text())
    assert config["architecture"] == "with_eca" and config["model_args"]["base"] == "resnet18"
    assert json.loads((run / "args.json").read_text())["add_eca"] == "k3577"
    x = torch.randn(2, 3, 32, 32)
    by_hand = eca_models.add_eca(timm.create_model("resnet18", num_classes=2), "k3577").eval()
    by_hand.load_state_dict(load_file(run / "model.safetensors"))
    with torch.no_grad():
        expected = by_hand(x)
        torch.testing.assert_close(eca_models.load(run)(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(
            timm.create_model(f"local-dir:{run}", pretrained=True).eval()(x), expected, rtol=0, atol=0
        )
    assert eca_models.predict(data / "val", run, top_k=1).results[0]["top"][0]["class"] in ("a", "b")
    check = eca_models.export.export(run, "onnx", tmp_path / "m.onnx", img_size=32)
    assert check.passed
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # timm's own weights: not cached here, said in one line
    capsys.readouterr()
    other = [*argv[:-2], "--output", str(tmp_path / "other"), "--epochs", "1", "--batch-size", "4", "--workers", "0"]
    assert main(other) == 2
    assert "no pretrained weights for resnet18 here" in capsys.readouterr().err


def test_a_hybrid_byobnet_takes_eca_in_its_convolutional_blocks_only():
    """timm's self-attention ByobNets: the bottleneck blocks take ECA, the self-attention blocks stay (the guide's
    5 of lambda_resnet26t's 8)."""
    model = eca_models.add_eca(timm.create_model("lambda_resnet26t"))
    blocks = [m for m in model.modules() if type(m).__name__ in ("BottleneckBlock", "SelfAttnBlock")]
    assert len(blocks) == 8 and model.eca_insertion["layers"] == 5
    assert all(isinstance(b.attn_last, EcaLayer) for b in blocks if type(b).__name__ == "BottleneckBlock")
    assert not any(isinstance(m, EcaLayer) for b in blocks if type(b).__name__ == "SelfAttnBlock" for m in b.modules())
