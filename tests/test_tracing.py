"""Every path a timm or torchvision user deploys through: torch.fx (plain, timm's and torchvision's feature
extractors), torch.jit.trace, the legacy ONNX exporter and torch.export, with eager's values and gradients."""

import copy
import io
import warnings

import pytest
import timm
import torch
from helpers import randomize
from timm.layers import set_layer_config
from torchvision.models.feature_extraction import create_feature_extractor

from eca_models.models.eca_resnet import EcaBasicBlock, EcaBottleneck

# one small model per family and block type; drop_rate 0 so that train-mode outputs are deterministic
NAMES = ["eca_resnet18", "eca_resnet50", "eca_mobilenetv2"]


@pytest.fixture(scope="module")
def models():
    return {name: randomize(timm.create_model(name, drop_rate=0.0), seed=2) for name in NAMES}


def _block_ends(graph_module: torch.fx.GraphModule) -> int:
    return sum(
        node.op == "call_function" and node.target.__name__ == "eca_block_end" for node in graph_module.graph.nodes
    )


def _run(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("name", NAMES)
def test_symbolic_trace_gives_eager_values_and_gradients(models, name, mode, x64):
    eager = copy.deepcopy(models[name]).train(mode == "train")
    traced = torch.fx.symbolic_trace(copy.deepcopy(eager))
    blocks = sum(isinstance(m, (EcaBasicBlock, EcaBottleneck)) for m in eager.modules())
    assert _block_ends(traced) == blocks  # the fused block ends are leaves of the trace, not unrolled
    out_e, dx_e, grads_e = _run(eager, x64)
    out_t, dx_t, grads_t = _run(traced, x64)
    torch.testing.assert_close(out_t, out_e, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx_t, dx_e, atol=1e-4, rtol=1e-4)
    assert grads_t.keys() == grads_e.keys()
    for n in grads_e:
        torch.testing.assert_close(grads_t[n], grads_e[n], atol=1e-4, rtol=1e-4, msg=n)
    buffers_t = dict(traced.named_buffers())
    for n, b_e in eager.named_buffers():
        torch.testing.assert_close(buffers_t[n], b_e, msg=n)  # running statistics updated alike


def _autograd_nodes(out: torch.Tensor) -> list:
    seen, stack, names = set(), [out.grad_fn], []
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        names.append(fn.name())
        stack.extend(f for f, _ in fn.next_functions)
    return names


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50"])
def test_traced_training_takes_the_fused_path(models, name, x64):
    """A trace must not fall back to a slower path than eager: the same autograd function ends each block."""
    eager = copy.deepcopy(models[name]).train()
    traced = torch.fx.symbolic_trace(copy.deepcopy(eager))
    for model in (eager, traced):
        nodes = _autograd_nodes(model(x64.clone().requires_grad_(True)))
        assert nodes.count("_BnEcaAddBackward") == sum(len(v) for v in eager.eca_kernel_groups().values())


@pytest.mark.parametrize("name", NAMES)
def test_feature_extractors_match_eager(name, x64):
    """timm's hook-based features (eager), timm's FX extractor and torchvision's, built with the same weights."""
    built = {}
    for kind, kwargs in (("hooks", dict(features_only=True)), ("fx", dict(features_only=True, feature_cls="fx"))):
        torch.manual_seed(7)
        built[kind] = timm.create_model(name, **kwargs).eval()
    torch.manual_seed(7)
    full = timm.create_model(name).eval()
    nodes = {f["module"]: str(i) for i, f in enumerate(built["hooks"].feature_info.get_dicts())}
    tv = create_feature_extractor(full, return_nodes=nodes)
    with torch.no_grad():
        expected = built["hooks"](x64)
        got_fx, got_tv = built["fx"](x64), tv(x64)
    assert len(got_fx) == len(expected) == len(got_tv) == 5
    for i, b in enumerate(expected):
        torch.testing.assert_close(got_fx[i], b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_tv[str(i)], b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_reset_classifier_without_pooling_leaves_unpooled_features(name, x64):
    model = timm.create_model(name).eval()
    with torch.no_grad():
        features = model.forward_features(x64)
        assert model.forward_head(features, pre_logits=True).shape == (2, model.num_features)
        model.reset_classifier(0)
        assert model(x64).shape == (2, model.num_features)
        model.reset_classifier(0, "")
        torch.testing.assert_close(model(x64), features)
        unpooled = timm.create_model(name, num_classes=0, global_pool="").eval()
        assert unpooled(x64).shape == features.shape and features.ndim == 4


@pytest.mark.parametrize("name", NAMES)
def test_jit_trace_and_legacy_onnx_export_with_grad_mode_on(models, name, x64):
    model = copy.deepcopy(models[name]).eval()
    assert torch.is_grad_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, x64)
        torch.onnx.export(model, (x64,), io.BytesIO(), dynamo=False)
    other = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(traced(other), model(other), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_torch_export_with_grad_mode_on_and_exportable(models, name, x64):
    model = copy.deepcopy(models[name]).eval()
    exported = torch.export.export(model, (x64,))
    torch.testing.assert_close(exported.module()(x64), model(x64), atol=1e-5, rtol=1e-5)
    with set_layer_config(exportable=True):
        plain = timm.create_model(name).eval()
    plain.load_state_dict(model.state_dict())
    assert not any(getattr(m, "fused", False) for m in plain.modules())
    torch.testing.assert_close(plain(x64), model(x64), atol=1e-5, rtol=1e-5)


def test_frozen_batchnorm_blocks_give_the_plain_computation(x64):
    """torchvision's FrozenBatchNorm2d (detection's norm layer; timm passes device and dtype to norm layers) in
    every block: the fast paths give what the plain operations give, values and input gradients."""
    from torchvision.ops import FrozenBatchNorm2d

    def frozen(channels, device=None, dtype=None, **kwargs):
        return FrozenBatchNorm2d(channels)

    for name in ("eca_resnet18", "eca_resnet50"):
        fast = timm.create_model(name, norm_layer=frozen).train()
        for module in fast.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.running_mean.normal_(0, 0.1)
        with set_layer_config(exportable=True):
            plain = timm.create_model(name, norm_layer=frozen).train()
        plain.load_state_dict(fast.state_dict())
        out_f, dx_f, grads_f = _run(fast, x64)
        out_p, dx_p, grads_p = _run(plain, x64)
        torch.testing.assert_close(out_f, out_p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(dx_f, dx_p, atol=1e-4, rtol=1e-4)
        for n in grads_p:
            torch.testing.assert_close(grads_f[n], grads_p[n], atol=1e-4, rtol=1e-4, msg=n)
