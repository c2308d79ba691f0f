import pytest
import torch
from helpers import RefEca

from eca_models.layers import EcaLayer, adaptive_kernel_size

# eca-facts.md section 1: the adaptive rule with gamma=2, b=1
ADAPTIVE_TABLE = {16: 3, 24: 3, 32: 3, 64: 3, 96: 3, 128: 5, 160: 5, 256: 5, 320: 5, 512: 5, 1024: 5, 2048: 7}


@pytest.mark.parametrize("channels,k", ADAPTIVE_TABLE.items())
def test_adaptive_kernel_size_matches_the_paper_table(channels, k):
    assert adaptive_kernel_size(channels) == k
    assert EcaLayer(channels).kernel_size == k


def test_adaptive_rule_is_not_clamped_unless_asked():
    assert adaptive_kernel_size(2) == 1  # log2(2)=1 -> t=1
    assert adaptive_kernel_size(2, min_size=3) == 3
    assert adaptive_kernel_size(64, gamma=1, beta=1) == 7  # t = 7
    assert adaptive_kernel_size(64, gamma=3, beta=0) == 3  # t = 2 -> 3


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_layer_equals_the_reference_values_and_gradients(k):
    ours, ref = EcaLayer(24, kernel_size=k), RefEca(k)
    ref.conv.weight.data.copy_(torch.randn_like(ref.conv.weight))
    ours.load_state_dict(ref.state_dict())
    x1 = torch.randn(3, 24, 5, 7, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = ours(x1), ref(x2)
    torch.testing.assert_close(y1, y2, atol=1e-6, rtol=0)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours.conv.weight.grad, ref.conv.weight.grad, atol=1e-5, rtol=1e-5)


def test_layer_has_k_parameters_and_no_bias():
    layer = EcaLayer(2048, kernel_size=7)
    assert [p.numel() for p in layer.parameters()] == [7]
    assert layer.conv.bias is None


def test_k1_scales_each_channel_by_its_own_mean_only():
    layer = EcaLayer(4, kernel_size=1)
    layer.conv.weight.data.fill_(2.0)
    x = torch.randn(1, 4, 3, 3)
    expected = x * torch.sigmoid(2.0 * x.mean((2, 3), keepdim=True))
    torch.testing.assert_close(layer(x), expected)


def test_channels_last_input_gives_the_same_output():
    layer = EcaLayer(32, kernel_size=3)
    x = torch.randn(2, 32, 6, 6)
    torch.testing.assert_close(layer(x.to(memory_format=torch.channels_last)), layer(x))


@pytest.mark.parametrize("k", [0, 2, 4, -1])
def test_even_or_non_positive_kernel_is_refused(k):
    with pytest.raises(ValueError, match=f"^kernel_size={k}: an ECA kernel size is odd and at least 1$"):
        EcaLayer(16, kernel_size=k)
