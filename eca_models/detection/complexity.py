"""A detector's multiply-accumulates as the paper's table counted them: mmcv's counter on a 1280 x 800 input.

mmdetection v1 ran its ``forward_dummy``: trunk, FPN and dense head on the whole 1280 x 800 tensor, then (two-stage
detectors) the box head on 1000 proposals and the mask head on 100. We count the same pieces with
``torch.utils.flop_counter`` (convolutions and matmuls; FLOPs / 2 = MACs); mmcv also counted bias adds, BatchNorm,
activations, pooling and upsampling, which adds a little to its figures.
"""

from typing import Tuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["detector_macs"]

BOX_ROIS, MASK_ROIS = 1000, 100


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
