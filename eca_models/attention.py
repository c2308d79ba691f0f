"""What ECA learns: the channel weights of every attention layer, by block, for a batch of images.

The weights are read with forward hooks on each ECA layer's 1D convolution (and, for the side-by-
side view of the paper's Figure 6, on each timm SE module's second FC), so the model computes
exactly what it computes without them.
"""

import re
from contextlib import contextmanager
from typing import Dict, Iterator, List

import torch
from timm.layers import SEModule

from .layers import EcaLayer

__all__ = ["attention_layers", "attention_weights", "capture_attention"]


def _block_name(layer_name: str) -> str:
    """``layer2.1.eca`` -> ``layer2.1``; ``features.7.conv.4`` -> ``features.7``; ``layer3.0.se`` -> ``layer3.0``."""
    name = re.sub(r"\.(eca|se)$", "", layer_name)
    return re.sub(r"\.conv\.\d+$", "", name)


def attention_layers(model: torch.nn.Module) -> Dict[str, torch.nn.Module]:
    """The channel-attention layers of ``model`` (ECA, or timm's SE), keyed by block name, in order."""
    return {_block_name(n): m for n, m in model.named_modules() if isinstance(m, (EcaLayer, SEModule))}


@contextmanager
def capture_attention(model: torch.nn.Module) -> Iterator[Dict[str, List[torch.Tensor]]]:
    """Record the channel weights of every forward inside the ``with`` block.

    Yields a dict that fills as the model runs: block name -> list of (N, C) tensors, one per
    forward, detached and in float32. The hooks are removed on exit.
    """
    captured: Dict[str, List[torch.Tensor]] = {}
    handles = []
    for block, layer in attention_layers(model).items():
        source = layer.conv if isinstance(layer, EcaLayer) else layer.fc2

        def hook(_module, _inputs, output, block=block):
            captured.setdefault(block, []).append(output.detach().float().sigmoid().flatten(1))

        handles.append(source.register_forward_hook(hook))
    try:
        yield captured
    finally:
        for handle in handles:
            handle.remove()


def attention_weights(model: torch.nn.Module, images: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Channel weights of every attention layer for ``images``: block name -> (N, C) tensor.

    The model runs in eval mode (restored afterwards), without gradients.

    Args:
        model: Any eca-models model (fine-tuned ones included), or a timm SE-ResNet.
        images: A batch, already transformed for the model.
    """
    was_training = model.training
    model.eval()
    try:
        with capture_attention(model) as captured, torch.no_grad():
            model(images)
    finally:
        model.train(was_training)
    return {block: torch.cat(parts) for block, parts in captured.items()}
