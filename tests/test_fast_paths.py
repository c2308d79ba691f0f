"""Every optimised path of the ECA blocks against the layer as the paper states it (values and gradients)."""

import copy

import pytest
import timm
import torch
from helpers import RefEca, randomize
from timm.layers import freeze_batch_norm_2d
from torch._dynamo.backends.common import aot_autograd
from torch._functorch.aot_autograd import make_boxed_func
from torch.func import functional_call, grad, vmap

from eca_models.layers import bn_state, eca_block_end, eca_residual
from eca_models.models.eca_resnet import EcaBottleneck


def _reference(block, x):
    """The same block computed naively: last BN, then ECA as in eca-facts.md, then the residual add."""
    ref_eca = RefEca(block.eca.kernel_size)
    ref_eca.conv.weight = block.eca.conv.weight  # shared, so its gradient lands on the block's parameter
    shortcut = x if block.downsample is None else block.downsample(x)
    if isinstance(block, EcaBottleneck):
        out = block.act1(block.bn1(block.conv1(x)))
        out = block.aa(block.act2(block.drop_block(block.bn2(block.conv2(out)))))
        out = block.bn3(block.conv3(out))
    else:
        out = block.aa(block.act1(block.drop_block(block.bn1(block.conv1(x)))))
        out = block.bn2(block.conv2(out))
    return torch.relu(ref_eca(out) + shortcut)


def _blocks():
    with torch.random.fork_rng():  # timm initialises the convolutions from the global generator
        torch.manual_seed(3)
        r50, r18 = (randomize(timm.create_model(n), seed=3) for n in ("eca_resnet50", "eca_resnet18"))
    return {
        "bottleneck": (r50.layer2[1], 512),
        "bottleneck+downsample": (r50.layer2[0], 256),
        "basic": (r18.layer3[1], 256),
        "basic+downsample": (r18.layer3[0], 128),
    }


BLOCKS = _blocks()


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("channels_last", [False, True])
def test_inference_path_matches_and_leaves_the_input_alone(name, channels_last):
    block, chans = BLOCKS[name]
    block = copy.deepcopy(block).eval()
    x = torch.randn(2, chans, 12, 12)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    before = x.clone()
    with torch.no_grad():
        expected = _reference(block, x)
    with torch.inference_mode():
        out = block(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert torch.equal(x, before), "the block wrote into its input"


@pytest.mark.parametrize("side, early", [(6, True), (5, False)])
def test_bottleneck_inference_pools_before_conv3_on_large_maps(side, early, monkeypatch):
    """conv3 of this block has 128 input channels: pooled first on a 6x6 map (4 * 36 >= 128), not on 5x5."""
    block = copy.deepcopy(BLOCKS["bottleneck"][0]).eval()
    assert block.pool_before_conv3 and block.conv3.in_channels == 128
    pooled = []
    original = eca_residual.pooled_before_conv3
    monkeypatch.setattr(eca_residual, "pooled_before_conv3", lambda *a: pooled.append(original(*a)) or pooled[-1])
    x = torch.randn(2, 512, side, side)
    with torch.inference_mode():
        out = block(x)
    assert len(pooled) == 1 and (pooled[0] is not None) == early
    with torch.no_grad():
        torch.testing.assert_close(out, _reference(block, x), atol=1e-5, rtol=1e-5)


def _last_bn(block):
    return block.bn3 if isinstance(block, EcaBottleneck) else block.bn2


def _away_from_the_kink(g, out1, out2):
    """``g`` with zeros where the block's final ReLU sits within rounding of its kink in either computation.

    There float rounding decides which side of zero the input lands on, so the two paths may rightly take
    different subgradients, and in training the BN backward spreads that one difference over the whole
    batch. Elsewhere the ReLU passes the gradient or stops it in both alike.
    """
    return g * (torch.maximum(out1, out2) > 1e-4)


def _compare(ours, ref, x, tol=1e-5):
    """Values, every gradient and the BN buffers of ``ours`` against the reference computation."""
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out1, out2 = ours(x1), _reference(ref, x2)
    torch.testing.assert_close(out1, out2, atol=tol, rtol=tol)
    g = _away_from_the_kink(torch.randn_like(out1), out1.detach(), out2.detach())
    out1.backward(g)
    out2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=10 * tol, rtol=10 * tol)
    for (n, p1), p2 in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=10 * tol, rtol=10 * tol, msg=n)
    for (n, b1), b2 in zip(ours.named_buffers(), ref.buffers()):
        torch.testing.assert_close(b1, b2, atol=tol, rtol=tol, msg=n)
    return out1


def _path(out) -> str:
    """Name of the autograd node under the block's final ReLU."""
    return out.grad_fn.next_functions[0][0].name()


@pytest.fixture(params=["bn-kernel-sums", "tensor-op-sums"])
def sums(request, monkeypatch):
    """The per-image sums of the backward come from BatchNorm's CPU kernel, or (as on a GPU, and for the
    dtypes that kernel does not take, and for small images) from tensor operations over chunks of the batch:
    both are tested, on images smaller than where the kernel is used by default."""
    if request.param == "tensor-op-sums":
        monkeypatch.setattr(eca_residual, "_bn_kernel_takes", lambda *tensors: False)
    else:
        monkeypatch.setattr(eca_residual, "_KERNEL_MIN_IMAGE", 0)
    return request.param


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_autograd_paths_match_values_gradients_and_running_stats(name, mode, channels_last, sums):
    block, chans = BLOCKS[name]
    ours, ref = copy.deepcopy(block).train(mode == "train"), copy.deepcopy(block).train(mode == "train")
    x = torch.randn(3, chans, 10, 10) * 2 + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    out = _compare(ours, ref, x)
    assert _path(out) == ("_BnEcaAddBackward" if mode == "train" else "_EcaAddBackward")
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["bottleneck", "basic+downsample"])
def test_fused_training_edge_cases(name, sums):
    """A zero-initialised last BN (timm's zero_init_last), cumulative running averages (momentum None),
    activations far from zero mean, float64, and several steps in a row."""
    block, chans = BLOCKS[name]
    ours, ref = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    for b in (ours, ref):
        _last_bn(b).momentum = None
        torch.nn.init.zeros_(_last_bn(b).weight)
    for _ in range(2):
        _compare(ours, ref, torch.randn(2, chans, 6, 6) + 3.0)
    ours64, ref64 = copy.deepcopy(block).double().train(), copy.deepcopy(block).double().train()
    out = _compare(ours64, ref64, torch.randn(2, chans, 5, 7, dtype=torch.float64) - 2.0, tol=1e-10)
    assert _path(out) == "_BnEcaAddBackward"


def test_fused_training_keeps_precision_when_a_channel_mean_dwarfs_its_spread(sums):
    """BN input with mean 5 and spread 0.01: the float32 gradients stay as close to a float64 computation as
    autograd's own float32 ones (a closed form that expanded (z - mean) * k into z * k - mean * k did not)."""
    block, chans = BLOCKS["bottleneck"]
    z = (torch.randn(2, chans, 6, 6) * 0.01 + 5.0).double()  # float32 values, so every dtype sees the same input
    shortcut, g = torch.randn_like(z), torch.randn_like(z)
    grads = {}
    for name, dtype in (("fused", torch.float32), ("autograd", torch.float32), ("truth", torch.float64)):
        b = copy.deepcopy(block).to(dtype).train()
        zz = z.to(dtype).requires_grad_(True)
        if name == "fused":
            out = eca_block_end(zz, shortcut.to(dtype), b.eca.conv.weight, bn_state(b.bn3))
            assert out.grad_fn.name() == "_BnEcaAddBackward"
        else:
            x = b.bn3(zz)
            out = shortcut.to(dtype) + x * b.eca.gate(x)
        out.backward(g.to(dtype))
        grads[name] = [t.double() for t in (zz.grad, b.bn3.weight.grad, b.bn3.bias.grad, b.eca.conv.weight.grad)]
    for fused, reference, truth in zip(grads["fused"], grads["autograd"], grads["truth"]):
        error = float((fused - truth).norm() / truth.norm())
        assert error <= 2 * float((reference - truth).norm() / truth.norm()) + 1e-6, error


@pytest.mark.parametrize("eps", [1e-5, 0.0])
def test_frozen_batch_norms_take_the_fast_path_as_their_own_forward_computes(eps):
    """torchvision's FrozenBatchNorm2d (the detectors' trunks), at any epsilon: the 0 of torchvision's first COCO
    weights included, which F.batch_norm refuses in some torch releases."""
    block, chans = BLOCKS["bottleneck"]
    block = copy.deepcopy(block).eval()
    block.bn3 = freeze_batch_norm_2d(block.bn3)
    block.bn3.eps = eps
    x = torch.randn(2, chans, 6, 6)
    with torch.no_grad():
        expected = _reference(block, x)
        out = block(x)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert bn_state(block.bn3).num_batches_tracked is None  # taken as frozen, the fast path used


def test_fused_training_falls_back_where_the_bn_is_not_a_plain_one():
    """Forward and backward hooks on the BN must fire, and SyncBatchNorm or any BN subclass keeps its own forward."""
    block, chans = BLOCKS["bottleneck"]
    ours, ref = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    seen = []
    ours.bn3.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    out = _compare(ours, ref, torch.randn(2, chans, 6, 6))
    assert seen and _path(out) == "_EcaAddBackward"

    ours, ref = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    grads_seen = []
    ours.bn3.register_full_backward_hook(lambda m, gi, go: grads_seen.append(go[0].shape))
    out = _compare(ours, ref, torch.randn(2, chans, 6, 6))
    assert grads_seen and _path(out) == "_EcaAddBackward"

    class MyBatchNorm(torch.nn.BatchNorm2d):
        pass

    ours, ref = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    custom = MyBatchNorm(ours.bn3.num_features)
    custom.load_state_dict(ours.bn3.state_dict())
    ours.bn3 = custom
    assert _path(_compare(ours, ref, torch.randn(2, chans, 6, 6))) == "_EcaAddBackward"


def test_frozen_convolutions_with_trainable_bn_and_eca():
    block, chans = BLOCKS["basic+downsample"]
    ours, ref = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    for b in (ours, ref):
        for n, p in b.named_parameters():
            p.requires_grad_("bn" in n or "eca" in n or "downsample.1" in n)
    x = torch.randn(2, chans, 6, 6)
    out1, out2 = ours(x), _reference(ref, x)
    torch.testing.assert_close(out1, out2, atol=1e-5, rtol=1e-5)
    g = _away_from_the_kink(torch.ones_like(out1), out1.detach(), out2.detach())
    out1.backward(g)
    out2.backward(g)
    for (n, p1), p2 in zip(ours.named_parameters(), ref.parameters()):
        if p1.requires_grad:
            torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-4, msg=n)


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("name", ["bottleneck", "basic+downsample"])
def test_double_backward_matches_the_reference(name, mode):
    """Gradient penalties: the gradient taken with create_graph=True is itself differentiated, by
    torch.autograd.grad with explicit inputs (which skips nodes that raise) and by backward."""
    block, chans = BLOCKS[name]
    x0 = torch.randn(2, chans, 6, 6)
    results = []
    for fn in (lambda b, t: b(t), _reference):
        b = copy.deepcopy(block).train(mode == "train")
        x = x0.clone().requires_grad_(True)
        out = fn(b, x)
        (g,) = torch.autograd.grad((out * out).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad((g * x0).sum(), x, retain_graph=True)
        (g * g).sum().backward()
        results.append((g.detach(), gg, b.eca.conv.weight.grad))
    for mine, ref in zip(*results):
        torch.testing.assert_close(mine, ref, atol=1e-4, rtol=1e-4)


def _run(fn, block, x, amp):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = fn(block, x)
    # a loss whose gradient vanishes at the final ReLU's kink: in bfloat16 rounding moves many outputs across
    # it, and with a gradient of 1 there each move would weigh as much as the precision being compared
    (out.float().square().sum() / 2).backward()
    return out.detach().float(), x.grad, block.eca.conv.weight.grad


@pytest.mark.parametrize("name", ["bottleneck", "basic+downsample"])
def test_training_under_autocast_is_as_accurate_as_the_reference(name):
    """bfloat16 rounds the two paths differently: each is held against fp32, ours no worse than the reference."""
    block, chans = BLOCKS[name]
    x = torch.randn(2, chans, 10, 10)
    exact = _run(_reference, copy.deepcopy(block).train(), x, amp=False)
    ref = _run(_reference, copy.deepcopy(block).train(), x, amp=True)
    ours = _run(lambda b, t: b(t), copy.deepcopy(block).train(), x, amp=True)
    assert ours[2].dtype == torch.float32 and ours[1].dtype == torch.float32
    for mine, theirs, truth in zip(ours, ref, exact):
        error = float((mine - truth).norm() / truth.norm())
        ref_error = float((theirs - truth).norm() / truth.norm())
        assert error <= 1.5 * ref_error + 2**-9, (error, ref_error)  # 2**-9: half a bfloat16 rounding step


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50"])
def test_an_empty_batch_trains_as_in_the_plain_resnet(name):
    """timm's ResNet takes a batch of zero images in training; the fused BN path must not refuse it."""
    model = timm.create_model(name).train().to(memory_format=torch.channels_last)
    out = model(torch.randn(0, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    out.sum().backward()
    assert out.shape == (0, 1000) and float(model.fc.weight.grad.abs().sum()) == 0.0


def test_compiled_training_uses_whole_batch_operations_and_matches_eager():
    """Under torch.compile the fused path hands the compiler whole-batch tensor operations, not BatchNorm's
    kernel once per image (lowered image by image, that made a compiled ResNet-50 training step three times
    slower): the compiled graphs hold no BatchNorm backward beyond those of the block's two unfused BNs, and
    give eager's values and gradients."""
    block, chans = BLOCKS["bottleneck"]
    eager, compiled = copy.deepcopy(block).train(), copy.deepcopy(block).train()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.randn(4, chans, 16, 16) * 2 + 0.5  # 131K values per image: eager takes BN's kernel per image
    targets = []

    def keep(graph, _inputs):
        targets.extend(str(node.target) for node in graph.graph.nodes)
        return make_boxed_func(graph.forward)

    torch._dynamo.reset()
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out1, out2 = eager(x1), torch.compile(compiled, backend=aot_autograd(fw_compiler=keep, bw_compiler=keep))(x2)
    torch.testing.assert_close(out2, out1, atol=1e-5, rtol=1e-5)
    g = _away_from_the_kink(torch.randn_like(out1), out1.detach(), out2.detach())
    out1.backward(g)
    out2.backward(g)
    torch._dynamo.reset()
    assert sum("native_batch_norm_backward" in t for t in targets) == 2
    torch.testing.assert_close(x2.grad, x1.grad, atol=1e-4, rtol=1e-4)
    for (n, p1), p2 in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, atol=1e-4, rtol=1e-4, msg=n)
    for (n, b1), b2 in zip(eager.named_buffers(), compiled.buffers()):
        torch.testing.assert_close(b2, b1, atol=1e-5, rtol=1e-5, msg=n)


def test_whole_model_inference_equals_its_autograd_path():
    model = randomize(timm.create_model("eca_resnet50"), seed=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fast = model(x)
    slow = model(x.requires_grad_(True)).detach()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["eca_resnet18", "eca_resnet50"])
def test_torch_func_transforms_run_as_on_timms_resnet_with_autograds_values(name):
    """Per-sample gradients (vmap over grad) and a batch mapped image by image, as torch.func runs timm's own
    ResNet: the same values as ordinary autograd and the batched forward."""
    model = randomize(timm.create_model(name), seed=5).eval()
    x = torch.randn(2, 3, 32, 32)
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def loss(p, image):
        return functional_call(model, (p, buffers), (image[None],)).logsumexp(1).sum()

    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    eca = next(k for k in params if k.endswith("eca.conv.weight"))
    for i in range(len(x)):
        model.zero_grad()
        model(x[i : i + 1]).logsumexp(1).sum().backward()
        for k in ("fc.weight", eca, "layer4.1.conv1.weight"):
            torch.testing.assert_close(per_sample[k][i], model.get_parameter(k).grad, atol=1e-5, rtol=1e-4, msg=k)
    with torch.no_grad():
        torch.testing.assert_close(vmap(lambda t: model(t[None])[0])(x), model(x), atol=1e-5, rtol=1e-5)
