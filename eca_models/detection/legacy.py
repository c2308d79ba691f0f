"""mmdetection v1's legacy box conventions, for the weights it trained (the release's converted files).

v1 measured a box's width as ``x2 - x1 + 1``, centred its anchors at ``(stride - 1) / 2``, and its RoIAlign
extended each box's end by one pixel. torchvision does none of these. Where the convention lives in a part of
torchvision's detector that can be swapped (the box coders, the anchor generator, the RoI poolers), this module
swaps in v1's: `use_legacy_coordinates`. Converted folders record it (``legacy_coordinates`` in
``config.json``) and get it when loaded. What stays torchvision's: box clipping to ``[0, W]`` (v1: ``W - 1``), NMS
areas without the +1, mask pasting, and resizing boxes back with a ratio per axis (v1: one scale factor).
"""

import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import Tensor, nn
from torchvision.models.detection._utils import BoxCoder
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.retinanet import RetinaNet
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

__all__ = [
    "LegacyAnchorGenerator",
    "LegacyBoxCoder",
    "LegacyRegionProposalNetwork",
    "LegacyRetinaNet",
    "LegacyRoIHeads",
    "LegacyRoIPool",
    "use_legacy_coordinates",
]


class LegacyBoxCoder(BoxCoder):
    """Box deltas as v1's ``bbox2delta`` / ``delta2bbox``: widths ``x2 - x1 + 1``, decoded corners
    ``centre -/+ (w / 2 - 0.5)``, log-size deltas clipped on both sides."""

    def __init__(self, weights: Tuple[float, float, float, float], bbox_xform_clip: float = math.log(1000.0 / 16)):
        # TorchScript compiles a class's attributes from its own __init__, not its parent's
        self.weights = weights
        self.bbox_xform_clip = bbox_xform_clip

    # encode and decode as torchvision's, written here because TorchScript compiles no inherited method
    def encode(self, reference_boxes: List[Tensor], proposals: List[Tensor]) -> List[Tensor]:
        counts = [len(b) for b in reference_boxes]
        return list(self.encode_single(torch.cat(reference_boxes), torch.cat(proposals)).split(counts, 0))

    def decode(self, rel_codes: Tensor, boxes: List[Tensor]) -> Tensor:
        count = 0
        for b in boxes:
            count += b.size(0)
        if count > 0:
            rel_codes = rel_codes.reshape(count, -1)
        decoded = self.decode_single(rel_codes, torch.cat(boxes))
        return decoded.reshape(count, -1, 4) if count > 0 else decoded

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        wx, wy, ww, wh = self.weights
        pw, ph = proposals[:, 2] - proposals[:, 0] + 1, proposals[:, 3] - proposals[:, 1] + 1
        px, py = (proposals[:, 0] + proposals[:, 2]) * 0.5, (proposals[:, 1] + proposals[:, 3]) * 0.5
        gw, gh = reference_boxes[:, 2] - reference_boxes[:, 0] + 1, reference_boxes[:, 3] - reference_boxes[:, 1] + 1
        gx, gy = (
            (reference_boxes[:, 0] + reference_boxes[:, 2]) * 0.5,
            (reference_boxes[:, 1] + reference_boxes[:, 3]) * 0.5,
        )
        return torch.stack(
            (wx * (gx - px) / pw, wy * (gy - py) / ph, ww * torch.log(gw / pw), wh * torch.log(gh / ph)), dim=1
        )

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        boxes = boxes.to(rel_codes.dtype)
        pw, ph = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
        px, py = (boxes[:, 0] + boxes[:, 2]) * 0.5, (boxes[:, 1] + boxes[:, 3]) * 0.5
        wx, wy, ww, wh = self.weights
        clip = self.bbox_xform_clip
        dx, dy = rel_codes[:, 0::4] / wx, rel_codes[:, 1::4] / wy
        dw = (rel_codes[:, 2::4] / ww).clamp(-clip, clip)
        dh = (rel_codes[:, 3::4] / wh).clamp(-clip, clip)
        gx, gy = px[:, None] + pw[:, None] * dx, py[:, None] + ph[:, None] * dy
        gw, gh = pw[:, None] * dw.exp(), ph[:, None] * dh.exp()
        corners = (gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5)
        return torch.stack(corners, dim=2).flatten(1)


class LegacyAnchorGenerator(AnchorGenerator):
    """v1's anchors: centred at ``(stride - 1) / 2`` of each cell, corners ``centre -/+ (size - 1) / 2`` rounded,
    laid out at the nominal strides (torchvision derives each level's stride from the padded image size)."""

    def __init__(
        self, sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[Sequence[float]], strides: Sequence[int]
    ) -> None:
        super().__init__(tuple(tuple(s) for s in sizes), tuple(tuple(a) for a in aspect_ratios))
        self.strides: List[int] = list(strides)
        self.cell_anchors = [
            self.legacy_cell_anchors(stride, size, ratio) for stride, size, ratio in zip(strides, sizes, aspect_ratios)
        ]

    @staticmethod
    def legacy_cell_anchors(stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
        """One cell's anchors, ratio-major as v1 ordered them (``scale_major=True``)."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        h_ratios = torch.sqrt(torch.as_tensor(aspect_ratios, dtype=torch.float32))
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        ctr = (stride - 1) / 2
        return torch.stack(
            [ctr - 0.5 * (ws - 1), ctr - 0.5 * (hs - 1), ctr + 0.5 * (ws - 1), ctr + 0.5 * (hs - 1)], 1
        ).round()

    def grid_anchors(self, grid_sizes: List[List[int]], strides: List[List[Tensor]]) -> List[Tensor]:
        """torchvision's grid of each level's cell anchors, at the nominal stride (``strides`` is not used); written
        out rather than through ``super()``, which TorchScript cannot compile."""
        anchors = []
        for level, base in enumerate(self.cell_anchors):
            stride, (height, width) = self.strides[level], grid_sizes[level]
            shifts_x = torch.arange(0, width, dtype=torch.int64, device=base.device) * stride
            shifts_y = torch.arange(0, height, dtype=torch.int64, device=base.device) * stride
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
            shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
            anchors.append((shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4))
        return anchors


class LegacyRoIPool(nn.Module):
    """A ``MultiScaleRoIAlign`` fed boxes whose ends are moved one pixel out: v1's RoIAlign box end, and the
    ``(w + 1)(h + 1)`` area its level mapping used."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor], image_shapes: List[Tuple[int, int]]) -> Tensor:
        grown = [b + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=b.dtype, device=b.device) for b in boxes]
        return self.pool(x, grown, image_shapes)


class LegacyRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN, its box coder declared as v1's: TorchScript compiles an attribute by the class its owner
    declares (torchvision declares ``BoxCoder``), so without this a scripted detector would decode as torchvision."""

    __annotations__ = {**RegionProposalNetwork.__annotations__, "box_coder": LegacyBoxCoder}


class LegacyRoIHeads(RoIHeads):
    """torchvision's RoI heads, their box coder declared as v1's (see `LegacyRegionProposalNetwork`)."""

    __annotations__ = {**RoIHeads.__annotations__, "box_coder": LegacyBoxCoder}


class LegacyRetinaNet(RetinaNet):
    """torchvision's RetinaNet, its box coder declared as v1's (see `LegacyRegionProposalNetwork`)."""

    __annotations__ = {**RetinaNet.__annotations__, "box_coder": LegacyBoxCoder}


def _legacy_anchors(generator: AnchorGenerator, strides: Sequence[int]) -> LegacyAnchorGenerator:
    return LegacyAnchorGenerator(generator.sizes, generator.aspect_ratios, strides)


def use_legacy_coordinates(model: nn.Module) -> nn.Module:
    """Swap v1's conventions into a detector built here (in place); ``model.detector_cfg`` records it."""
    if model.detector_cfg.get("legacy_coordinates"):
        return model
    if hasattr(model, "rpn"):
        model.rpn.anchor_generator = _legacy_anchors(model.rpn.anchor_generator, (4, 8, 16, 32, 64))
        model.rpn.box_coder = LegacyBoxCoder(model.rpn.box_coder.weights, model.rpn.box_coder.bbox_xform_clip)
        model.rpn.__class__ = LegacyRegionProposalNetwork
        model.roi_heads.__class__ = LegacyRoIHeads
        heads = model.roi_heads
        heads.box_coder = LegacyBoxCoder(heads.box_coder.weights, heads.box_coder.bbox_xform_clip)
        heads.box_roi_pool = LegacyRoIPool(heads.box_roi_pool)
        if heads.has_mask():
            heads.mask_roi_pool = LegacyRoIPool(heads.mask_roi_pool)
    else:
        model.anchor_generator = _legacy_anchors(model.anchor_generator, (8, 16, 32, 64, 128))
        model.box_coder = LegacyBoxCoder(model.box_coder.weights, model.box_coder.bbox_xform_clip)
        if type(model) is RetinaNet:
            model.__class__ = LegacyRetinaNet
    model.detector_cfg["legacy_coordinates"] = True
    return model
