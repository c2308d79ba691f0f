"""Every model is a full timm citizen: counts, API, feature extraction, scripting, compile, export."""

import pytest
import timm
import torch

from eca_models.complexity import count_params
from eca_models.layers import EcaLayer

EXACT_PARAMS = {
    "eca_resnet18": 11_689_556,
    "eca_resnet34": 21_797_744,
    "eca_resnet50": 25_557_112,
    "eca_resnet101": 44_549_317,
    "eca_resnet152": 60_193_042,
    "eca_mobilenetv2": 3_504_903,
}
RELEASED = {
    "eca_resnet18_k3577": "eca_resnet18",
    "eca_resnet34_k3357": "eca_resnet34",
    "eca_resnet50_k3557": "eca_resnet50",
    "eca_resnet101_k3357": "eca_resnet101",
    "eca_resnet152_k3357": "eca_resnet152",
    "eca_mobilenetv2_k13": "eca_mobilenetv2",
}


@pytest.mark.parametrize("name", [*EXACT_PARAMS, *RELEASED])
def test_exact_parameter_counts(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    assert count_params(model) == EXACT_PARAMS[RELEASED.get(name, name)]


def test_eca_adds_80_parameters_to_resnet50():
    with torch.device("meta"):
        plain = timm.create_model("resnet50")
        eca = timm.create_model("eca_resnet50")
    assert count_params(eca) - count_params(plain) == 80


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50", "eca_mobilenetv2"])
def test_timm_model_api(name, x64):
    model = timm.create_model(name).eval()
    feats = model.forward_features(x64)
    assert feats.shape[1] == model.num_features
    pre = model.forward_head(feats, pre_logits=True)
    assert pre.shape == (2, model.num_features)
    logits = model.forward_head(feats)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(model(x64), logits)
    assert model.get_classifier().out_features == 1000
    model.reset_classifier(7)
    assert model(x64).shape == (2, 7)
    model.reset_classifier(0)
    assert model(x64).shape == (2, model.num_features)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bilinear"


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_in_chans_num_classes_and_drop_rates(name):
    model = timm.create_model(name, in_chans=1, num_classes=3, drop_rate=0.5, drop_path_rate=0.2)
    x = torch.randn(2, 1, 64, 64)
    assert model.eval()(x).shape == (2, 3)
    model.train()
    torch.manual_seed(0)
    a = model(x)
    torch.manual_seed(1)
    b = model(x)
    assert not torch.allclose(a, b), "dropout / drop-path should make training forwards differ"


def test_drop_path_reaches_the_blocks():
    model = timm.create_model("eca_resnet50", drop_path_rate=0.1)
    assert model.layer4[-1].drop_path is not None and model.layer1[0].drop_path is None
    mbv2 = timm.create_model("eca_mobilenetv2", drop_path_rate=0.1)
    assert mbv2.features[17].drop_path.drop_prob == pytest.approx(0.1)


@pytest.mark.parametrize(
    "name,channels,reductions",
    [
        ("eca_resnet18", [64, 64, 128, 256, 512], [2, 4, 8, 16, 32]),
        ("eca_resnet50", [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
        ("eca_mobilenetv2", [16, 24, 32, 96, 320], [2, 4, 8, 16, 32]),
    ],
)
def test_features_only_with_out_indices(name, channels, reductions):
    model = timm.create_model(name, features_only=True, out_indices=(1, 2, 3, 4)).eval()
    assert model.feature_info.channels() == channels[1:]
    assert model.feature_info.reduction() == reductions[1:]
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == channels[1:]
    assert [64 // o.shape[-1] for o in outs] == reductions[1:]


@pytest.mark.parametrize("name", ["eca_resnet50", "eca_mobilenetv2"])
@pytest.mark.parametrize("output_stride", [16, 8])
def test_output_stride_dilates_as_in_timms_own_model(name, output_stride):
    """Denser features (segmentation backbones): the strides and dilations of timm's own ResNet-50 or MobileNetV2
    at the same output stride, and the same parameters as the model at 32 (so pretrained weights load)."""
    plain = {"eca_resnet50": "resnet50", "eca_mobilenetv2": "mobilenetv2_100"}[name]
    ours, theirs = (timm.create_model(n, features_only=True, output_stride=output_stride) for n in (name, plain))
    assert ours.feature_info.reduction() == theirs.feature_info.reduction()
    convs = [(m.stride, m.dilation) for m in ours.modules() if type(m) is torch.nn.Conv2d]
    assert convs == [(m.stride, m.dilation) for m in theirs.modules() if type(m) is torch.nn.Conv2d]
    assert [o.shape for o in ours(torch.randn(1, 3, 64, 64))] == [o.shape for o in theirs(torch.randn(1, 3, 64, 64))]
    full = timm.create_model(name, output_stride=output_stride)
    full.load_state_dict(timm.create_model(name).state_dict())


def test_an_output_stride_out_of_range_is_one_line():
    with pytest.raises(ValueError, match=r"output_stride=4: ECA-MobileNetV2 takes 8, 16 or 32"):
        timm.create_model("eca_mobilenetv2", output_stride=4)


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_forward_intermediates_and_pruning_as_timm_has_them(name, x64):
    """timm's feature API of its CNNs (``forward_intermediates``, ``features_only`` with ``feature_cls='getter'``,
    ``prune_intermediate_layers``): the same taps as plain ``features_only``, the same final features."""
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    with torch.no_grad():
        final, taps = model.forward_intermediates(x64)
        torch.testing.assert_close(final, model.forward_features(x64), rtol=0, atol=0)
        torch.manual_seed(0)  # the same weights: built in the same order
        for tap, expected in zip(taps, timm.create_model(name, features_only=True).eval()(x64), strict=True):
            torch.testing.assert_close(tap, expected, rtol=0, atol=0)
        chosen = model.forward_intermediates(x64, indices=[1, -2], stop_early=True, intermediates_only=True)
        assert [t.shape for t in chosen] == [taps[1].shape, taps[3].shape]
        getter = timm.create_model(name, features_only=True, feature_cls="getter", out_indices=(1, 3)).eval()
        assert [o.shape[1] for o in getter(x64)] == getter.feature_info.channels()
        assert model.prune_intermediate_layers(indices=(0, 2)) == [0, 2]
        assert model(x64).shape == taps[2].shape  # the unpooled features of the last tap kept
    with pytest.raises((AssertionError, ValueError), match="out of range|feature taps are 0 to 4"):  # timm's, ours
        model.forward_intermediates(x64, indices=[5])


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_grad_checkpointing_gives_the_same_gradients(name, x64):
    model = timm.create_model(name, num_classes=4, drop_rate=0.0).train()
    model.apply(lambda m: setattr(m, "momentum", 0.0) if isinstance(m, torch.nn.BatchNorm2d) else None)
    model(x64).sum().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x64).sum().backward()
    for a, p in zip(plain, model.parameters()):
        torch.testing.assert_close(p.grad, a, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_torchscript(name, x64):
    model = timm.create_model(name).eval()
    scripted = torch.jit.script(model)
    torch.testing.assert_close(scripted(x64), model(x64))


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_mobilenetv2"])
def test_torch_export(name, x64):
    model = timm.create_model(name).eval()
    exported = torch.export.export(model, (x64,))
    torch.testing.assert_close(exported.module()(x64), model(x64))


@pytest.mark.slow  # Inductor's first compilation: about 40 s on 2 cores
def test_torch_compile(x64):
    model = timm.create_model("eca_resnet18").eval()
    compiled = torch.compile(model)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x64), model(x64), atol=1e-5, rtol=1e-5)


def test_eca_sits_where_the_paper_puts_it():
    r18 = timm.create_model("eca_resnet18")
    assert r18.layer3[1].eca.channels == 256 and r18.layer3[1].eca.kernel_size == 7
    r50 = timm.create_model("eca_resnet50")
    assert r50.layer4[2].eca.channels == 2048 and r50.layer4[2].eca.kernel_size == 7
    assert sum(isinstance(m, EcaLayer) for m in r50.modules()) == 16
    mbv2 = timm.create_model("eca_mobilenetv2")
    assert isinstance(mbv2.features[1].conv[3], EcaLayer) and isinstance(mbv2.features[2].conv[4], EcaLayer)
    sizes = [m.conv[-1].kernel_size for m in mbv2.features[1:18]]
    assert sizes == [1] * 10 + [3] * 7  # features.1-10 k=1, features.11-17 k=3
