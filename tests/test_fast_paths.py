"""Every optimised path of the ECA blocks against the layer as the paper states it (values and gradients)."""

import copy

import pytest
import timm
import torch
from helpers import RefEca, randomize

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


def test_bottleneck_inference_pools_before_conv3():
    block = copy.deepcopy(BLOCKS["bottleneck"][0]).eval()
    assert block.pool_before_conv3
    calls = []
    original = block.eca.gate
    block.eca.gate = lambda x: calls.append(1) or original(x)
    with torch.inference_mode():
        block(torch.randn(1, 512, 8, 8))
    assert not calls, "inference should take the gate from the pooled conv3 input"


@pytest.mark.parametrize("name", list(BLOCKS))
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_autograd_paths_match_values_and_gradients(name, mode):
    block, chans = BLOCKS[name]
    ours, ref = copy.deepcopy(block), copy.deepcopy(block)
    ours.train(mode == "train")
    ref.train(mode == "train")
    x = torch.randn(2, chans, 10, 10)
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    out1, out2 = ours(x1), _reference(ref, x2)
    torch.testing.assert_close(out1, out2, atol=1e-5, rtol=1e-5)
    g = torch.randn_like(out1)
    out1.backward(g)
    out2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=1e-4)
    for (n, p1), p2 in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-4, rtol=1e-4, msg=n)


def _run(fn, block, x, amp):
    x = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
        out = fn(block, x)
    out.float().sum().backward()
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
        assert error <= 1.5 * ref_error + 1e-3, (error, ref_error)


def test_whole_model_inference_equals_its_autograd_path():
    model = randomize(timm.create_model("eca_resnet50"), seed=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        fast = model(x)
    slow = model(x.requires_grad_(True)).detach()
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
