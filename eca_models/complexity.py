"""Model complexity: exact parameters and multiply-accumulates, the units of the published figures, for
classifiers (one image at 224) and detectors (the release's dummy forward at 1280 x 800, as mmcv counted it:
trunk, FPN and dense head on the whole tensor, then the box head on 1000 proposals and the mask head on 100;
mmcv also counted bias adds, BatchNorm, activations, pooling and upsampling, which adds a little to its figures).
"""

from typing import Tuple

import timm
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_macs", "count_params", "detector_macs", "measure"]

BOX_ROIS, MASK_ROIS = 1000, 100  # the release's dummy forward: proposals through the box head, the mask head


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


def detector_macs(model: nn.Module, input_size: Tuple[int, int] = (1280, 800)) -> int:
    """Multiply-accumulates of the release's dummy forward at ``input_size`` (height, width as mmcv's shape).

    Works on a model built on the meta device (no memory, no weights needed).
    """
    param = next(model.parameters())
    x = torch.zeros(1, 3, *input_size, device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        features = list(model.backbone(x).values())
        if hasattr(model, "rpn"):
            model.rpn.head(features)
            heads = model.roi_heads
            box = torch.zeros(BOX_ROIS, features[0].shape[1], 7, 7, device=x.device, dtype=x.dtype)
            heads.box_predictor(heads.box_head(box))
            if getattr(heads, "mask_head", None) is not None:
                mask = torch.zeros(MASK_ROIS, features[0].shape[1], 14, 14, device=x.device, dtype=x.dtype)
                heads.mask_predictor(heads.mask_head(mask))
        else:
            model.head(features)
    return counter.get_total_flops() // 2
