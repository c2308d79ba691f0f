"""Model complexity: exact parameters and multiply-accumulates, the units of the published figures."""

from typing import Tuple

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_params", "count_macs", "measure"]


def count_params(model: torch.nn.Module) -> int:
    """Exact number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: torch.nn.Module, input_size: Tuple[int, int, int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward on one image: torch.utils.flop_counter's FLOPs / 2.

    Counts convolutions and matmuls (the ECA conv1d included); pooling, activations and the
    elementwise multiply are not counted, like the thop figures the paper publishes.
    """
    param = next(model.parameters())
    # a grad-requiring input keeps the models on their plain path: the inference shortcuts (an ECA
    # pool taken before a 1x1 conv) are an implementation detail, not the architecture's cost
    x = torch.zeros(1, *input_size, device=param.device, dtype=param.dtype, requires_grad=True)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    with counter:
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def measure(model_name: str, img_size: int = 224, **kwargs) -> Tuple[int, int]:
    """``(params, MACs)`` of a registered model at ``img_size``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        model = timm.create_model(model_name, **kwargs)
    return count_params(model), count_macs(model, (3, img_size, img_size))
