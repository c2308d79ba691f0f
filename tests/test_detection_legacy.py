"""mmdetection v1's box conventions, held against v1's formulas written out here (bbox2delta, delta2bbox, the anchor
generator), and switched on for converted weights only."""

import json
import math

import torch
from torchvision.ops import MultiScaleRoIAlign

from eca_models.detection import create_detector, load_detector
from eca_models.detection.legacy import LegacyAnchorGenerator, LegacyBoxCoder, LegacyRoIPool

WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # v1's target_stds (0.1, 0.1, 0.2, 0.2)


def _v1_delta2bbox(rois, deltas, stds=(0.1, 0.1, 0.2, 0.2)):
    dx, dy, dw, dh = (deltas[:, i] * stds[i] for i in range(4))
    clip = abs(math.log(16 / 1000))
    dw, dh = dw.clamp(min=-clip, max=clip), dh.clamp(min=-clip, max=clip)
    px, py = (rois[:, 0] + rois[:, 2]) * 0.5, (rois[:, 1] + rois[:, 3]) * 0.5
    pw, ph = rois[:, 2] - rois[:, 0] + 1.0, rois[:, 3] - rois[:, 1] + 1.0
    gw, gh = pw * dw.exp(), ph * dh.exp()
    gx, gy = torch.addcmul(px, pw, dx), torch.addcmul(py, ph, dy)
    return torch.stack([gx - gw * 0.5 + 0.5, gy - gh * 0.5 + 0.5, gx + gw * 0.5 - 0.5, gy + gh * 0.5 - 0.5], -1)


def _v1_bbox2delta(proposals, gt, stds=(0.1, 0.1, 0.2, 0.2)):
    px, py = (proposals[:, 0] + proposals[:, 2]) * 0.5, (proposals[:, 1] + proposals[:, 3]) * 0.5
    pw, ph = proposals[:, 2] - proposals[:, 0] + 1.0, proposals[:, 3] - proposals[:, 1] + 1.0
    gx, gy = (gt[:, 0] + gt[:, 2]) * 0.5, (gt[:, 1] + gt[:, 3]) * 0.5
    gw, gh = gt[:, 2] - gt[:, 0] + 1.0, gt[:, 3] - gt[:, 1] + 1.0
    deltas = torch.stack([(gx - px) / pw, (gy - py) / ph, torch.log(gw / pw), torch.log(gh / ph)], -1)
    return deltas / torch.tensor(stds)


def _boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 300
    return torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 200], 1)


def test_box_coder_is_v1s():
    coder = LegacyBoxCoder(WEIGHTS, math.log(1000 / 16))
    rois, gt = _boxes(50, 0), _boxes(50, 1)
    deltas = torch.randn(50, 4, generator=torch.Generator().manual_seed(2)) * 3  # some beyond the clip
    torch.testing.assert_close(coder.decode_single(deltas, rois), _v1_delta2bbox(rois, deltas))
    torch.testing.assert_close(coder.encode_single(gt, rois), _v1_bbox2delta(rois, gt))
    # class-specific deltas (N, 4K) decode per class, as torchvision's own coder lays them out
    many = torch.randn(50, 12)
    decoded = coder.decode_single(many, rois).view(50, 3, 4)
    torch.testing.assert_close(decoded[:, 1], _v1_delta2bbox(rois, many[:, 4:8]))


def _v1_base_anchors(base_size, scales, ratios):
    w = h = base_size
    x_ctr, y_ctr = 0.5 * (w - 1), 0.5 * (h - 1)
    h_ratios = torch.sqrt(torch.tensor(ratios))
    w_ratios = 1 / h_ratios
    ws = (w * w_ratios[:, None] * torch.tensor(scales)[None, :]).view(-1)
    hs = (h * h_ratios[:, None] * torch.tensor(scales)[None, :]).view(-1)
    return torch.stack(
        [x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)], -1
    ).round()


def test_anchors_are_v1s():
    # RPN: anchor_scales [8], strides 4-64; RetinaNet: octave_base_scale 4, 3 scales per octave, strides 8-128
    rpn = LegacyAnchorGenerator([(8 * s,) for s in (4, 8, 16, 32, 64)], [(0.5, 1.0, 2.0)] * 5, (4, 8, 16, 32, 64))
    for stride, cell in zip((4, 8, 16, 32, 64), rpn.cell_anchors):
        torch.testing.assert_close(cell, _v1_base_anchors(stride, [8.0], [0.5, 1.0, 2.0]))
    octave = [4 * 2 ** (i / 3) for i in range(3)]
    retina = LegacyAnchorGenerator(
        [tuple(s * o for o in octave) for s in (8, 16, 32, 64, 128)], [(0.5, 1.0, 2.0)] * 5, (8, 16, 32, 64, 128)
    )
    torch.testing.assert_close(retina.cell_anchors[2], _v1_base_anchors(32, octave, [0.5, 1.0, 2.0]))
    # laid out at the nominal strides, even where the padded image is no multiple of the level's stride
    grid = rpn.grid_anchors([[2, 3]] * 5, [[torch.tensor(61), torch.tensor(61)]] * 5)[0]
    assert grid.shape == (2 * 3 * 3, 4)
    cell = rpn.cell_anchors[0]
    torch.testing.assert_close(grid[3], cell[0] + torch.tensor([4.0, 0.0, 4.0, 0.0]))  # (y 0, x 1), first anchor
    torch.testing.assert_close(grid[9 + 2], cell[2] + torch.tensor([0.0, 4.0, 0.0, 4.0]))  # (y 1, x 0), third


def test_roi_pool_extends_the_box_end():
    pool = MultiScaleRoIAlign(["0", "1"], 7, 2)
    features = {"0": torch.randn(1, 4, 32, 32), "1": torch.randn(1, 4, 16, 16)}
    boxes = [torch.tensor([[3.0, 4.0, 60.0, 50.0], [10.0, 10.0, 20.0, 30.0]])]
    grown = [boxes[0] + torch.tensor([0.0, 0.0, 1.0, 1.0])]
    torch.testing.assert_close(LegacyRoIPool(pool)(features, boxes, [(128, 128)]), pool(features, grown, [(128, 128)]))


def test_converted_weights_get_v1s_conventions_and_new_models_do_not(converted, tmp_path):
    folder = converted["maskrcnn"][2]
    assert json.loads((folder / "config.json").read_text())["legacy_coordinates"] is True
    model = load_detector(folder)
    assert isinstance(model.rpn.box_coder, LegacyBoxCoder) and isinstance(model.roi_heads.box_coder, LegacyBoxCoder)
    assert isinstance(model.rpn.anchor_generator, LegacyAnchorGenerator)
    assert isinstance(model.roi_heads.mask_roi_pool, LegacyRoIPool)
    plain = load_detector(folder, legacy_coordinates=False)
    assert not isinstance(plain.rpn.box_coder, LegacyBoxCoder) and not plain.detector_cfg.get("legacy_coordinates")
    retina = load_detector(converted["retinanet"][2])
    assert isinstance(retina.box_coder, LegacyBoxCoder) and isinstance(retina.anchor_generator, LegacyAnchorGenerator)
    with torch.device("meta"):
        fresh = create_detector("retinanet_eca_resnet50_fpn")
    assert not isinstance(fresh.box_coder, LegacyBoxCoder)
